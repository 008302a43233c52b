"""Store.append: rows queued and written in batches by a thread of the process, straight through
the driver (the SCIM request log's); stored exactly as SQLAlchemy's own execution stores them,
refused up front when they cannot be converted, never lost to a neighbour's bad row, written at
exit; on either database."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, insert, select

from bridge import store as store_module
from bridge.models import ScimRequest
from bridge.store import Store

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


def _stored(store: Store, account_id: int) -> list[tuple]:
    with store.read() as db:
        rows = db.scalars(
            select(ScimRequest).where(ScimRequest.account_id == account_id).order_by(ScimRequest.id)
        )
        return [tuple(getattr(r, c.name) for c in TABLE.columns if c.name != "id") for r in rows]


def _missing_account(store: Store, account) -> int:
    with store.read() as db:
        return (db.scalar(select(func.max(ScimRequest.account_id))) or 0) + account.id + 1000


def test_an_appended_row_reads_back_as_sqlalchemy_would_have_stored_it(store, account):
    row = _row(account.id)
    store.append(TABLE, row)
    store.flush()
    store.write(lambda db: db.execute(insert(TABLE), row))  # SQLAlchemy's own way, same row
    through_driver, through_sqlalchemy = _stored(store, account.id)
    assert through_driver == through_sqlalchemy
    assert through_driver[2] == row["at"]  # a UTC time, to the microsecond, zone kept
    assert through_driver[3:] == tuple(row[k] for k in list(row)[3:])


def test_queued_rows_are_written_by_the_thread_in_one_batch(store, account, monkeypatch):
    """No flush: the process's thread writes them, APPEND_DELAY after the first, in one
    transaction (rows queued 20 ms apart here, within a delay made 0.5 s)."""
    monkeypatch.setattr(store_module, "APPEND_DELAY", 0.5)
    batches: list[int] = []
    real = Store._insert_rows

    def counted(self, rows):
        if self is store:  # not the app's own store, writing what earlier tests queued
            batches.append(len(rows))
        return real(self, rows)

    monkeypatch.setattr(Store, "_insert_rows", counted)
    for status in (200, 201, 204):
        store.append(TABLE, _row(account.id, status=status, body=None))
        time.sleep(0.02)
    deadline = time.monotonic() + 10
    while len(_stored(store, account.id)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r[5] for r in _stored(store, account.id)] == [200, 201, 204]
    assert batches == [3]


def test_a_row_short_of_a_column_is_refused_before_it_is_queued(store, account):
    row = _row(account.id)
    del row["duration_ms"]
    with pytest.raises(ValueError, match="duration_ms"):
        store.append(TABLE, row)
    store.flush()
    assert _stored(store, account.id) == []


def test_a_row_the_database_refuses_costs_only_itself(store, account, caplog):
    """A row whose account does not exist breaks the foreign key, and with it the batch's
    transaction: the batch is written again row by row, the bad row is logged and dropped, its
    neighbours are kept, and no transaction is left open on a pooled connection."""
    missing = _missing_account(store, account)
    store.append(TABLE, _row(account.id, status=200, body=None))
    store.append(TABLE, _row(missing))
    store.append(TABLE, _row(account.id, status=201, body=None))
    with caplog.at_level(logging.ERROR, logger="bridge.store"):
        store.flush()
    assert "1 of 3 appended rows not written" in caplog.text
    assert "foreign key" in caplog.text.lower()
    assert [r[5] for r in _stored(store, account.id)] == [200, 201]
    for _ in range(3):  # every pooled connection, were the failed one handed out again
        store.append(TABLE, _row(account.id, status=202, body=None))
        store.flush()
    assert [r[5] for r in _stored(store, account.id)] == [200, 201, 202, 202, 202]
    with store.read() as db:
        assert db.scalar(select(func.count()).where(ScimRequest.account_id == missing)) == 0
    caplog.clear()
    store.append(TABLE, _row(missing))  # alone: a reader's flush is not failed by it either
    with caplog.at_level(logging.ERROR, logger="bridge.store"):
        store.flush()
    assert "1 of 1 appended rows not written" in caplog.text


def test_past_the_limit_new_rows_are_dropped_and_said_so(store, account, monkeypatch, caplog):
    monkeypatch.setattr(store_module, "MAX_APPENDS", 2)
    monkeypatch.setattr(store_module, "APPEND_DELAY", 5.0)  # the thread stays out of it
    with caplog.at_level(logging.ERROR, logger="bridge.store"):
        for status in (200, 201, 202):
            store.append(TABLE, _row(account.id, status=status, body=None))
    assert "1 rows dropped: 2 wait to be written" in caplog.text
    store.flush()
    assert [r[5] for r in _stored(store, account.id)] == [200, 201]


def test_dispose_and_the_process_exit_write_what_is_queued(database_url, store, account):
    """A store disposed, and a process that ends with rows queued (a gunicorn worker stopped,
    a CLI command), write them before they go."""
    other = Store(database_url)
    other.append(TABLE, _row(account.id, status=200, body=None))
    other.dispose()
    assert [r[5] for r in _stored(store, account.id)] == [200]
    script = (
        "import sys; from datetime import UTC, datetime\n"
        "from bridge.store import Store\nfrom bridge.models import ScimRequest\n"
        "s = Store(sys.argv[1])\n"
        "row = dict(account_id=int(sys.argv[2]), token_id=None, at=datetime.now(UTC),"
        " method='GET', path='/exit', status=299, scim_type=None, duration_ms=1, detail=None,"
        " body=None)\n"
        "s.append(ScimRequest.__table__, row)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, database_url, str(account.id)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert [r[5] for r in _stored(store, account.id)] == [200, 299]
