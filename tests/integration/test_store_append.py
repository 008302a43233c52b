"""Store.append: one row straight through the driver (the SCIM request log's), stored exactly as
SQLAlchemy's own execution stores it, refused whole when it cannot be, on either database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import DBAPIError

from bridge.models import ScimRequest

TABLE = ScimRequest.__table__


def _row(account_id: int, **changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "account_id": account_id,
        "token_id": None,
        "at": datetime(2026, 12, 2, 15, 4, 5, 123456, tzinfo=UTC),
        "method": "PATCH",
        "path": '/scim/v2/Users/ü?filter=userName eq "a\'b"',
        "status": 400,
        "scim_type": "invalidValue",
        "duration_ms": 7,
        "detail": None,
        "body": '{"emails": ["x\\u0000y"], "note": "' + "é" * 3000 + '"}',
    }
    row.update(changes)
    return row


def _stored(store, account_id: int) -> list[tuple]:
    with store.read() as db:
        rows = db.scalars(
            select(ScimRequest).where(ScimRequest.account_id == account_id).order_by(ScimRequest.id)
        )
        return [tuple(getattr(r, c.name) for c in TABLE.columns if c.name != "id") for r in rows]


def test_an_appended_row_reads_back_as_sqlalchemy_would_have_stored_it(store, account):
    row = _row(account.id)
    store.append(TABLE, row)
    store.write(lambda db: db.execute(insert(TABLE), row))  # SQLAlchemy's own way, same row
    through_driver, through_sqlalchemy = _stored(store, account.id)
    assert through_driver == through_sqlalchemy
    assert through_driver[2] == row["at"]  # a UTC time, to the microsecond, zone kept
    assert through_driver[3:] == tuple(row[k] for k in list(row)[3:])


def test_a_row_short_of_a_column_is_refused_before_anything_is_sent(store, account):
    row = _row(account.id)
    del row["duration_ms"]
    with pytest.raises(ValueError, match="duration_ms"):
        store.append(TABLE, row)
    assert _stored(store, account.id) == []


def test_a_row_the_database_refuses_leaves_nothing_and_the_next_one_lands(store, account):
    """A row whose account does not exist breaks the foreign key: the driver's error reaches
    the caller, no transaction is left open on the pooled connection, the next row is kept."""
    with store.read() as db:
        missing = (db.scalar(select(func.max(ScimRequest.account_id))) or 0) + account.id + 1000
    with pytest.raises(Exception) as refused:
        store.append(TABLE, _row(missing))
    assert not isinstance(refused.value, (ValueError, DBAPIError))  # the driver's own error
    assert "foreign key" in str(refused.value).lower()
    for _ in range(3):  # every pooled connection, were the failed one handed out again
        store.append(TABLE, _row(account.id, status=200, body=None))
    assert [r[5] for r in _stored(store, account.id)] == [200, 200, 200]
    with store.read() as db:
        assert db.scalar(select(func.count()).where(ScimRequest.account_id == missing)) == 0
