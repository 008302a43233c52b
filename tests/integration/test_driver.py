"""bridge.driver: on SQLite, statements built once go straight to the driver, with the values
SQLAlchemy would send and read, and its errors; through SQLAlchemy when anything listens to
the engine's statements, and on PostgreSQL."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Connection, event, insert, select
from sqlalchemy.exc import IntegrityError

from bridge import accounts, driver, policy, provisioning
from bridge.models import Environment, utcnow
from saml import views as saml_views
from tests.integration.test_scim_users import create

ENVIRONMENTS = Environment.__table__


@pytest.fixture
def engine(app):
    return app.extensions["bridge.store"].engine


@pytest.fixture
def sqlite_only(store):
    if store.dialect != "sqlite":
        pytest.skip("SQLite's: on PostgreSQL every statement goes through SQLAlchemy")


@contextmanager
def sqlalchemy_refused(monkeypatch) -> Iterator[None]:
    """Connection.execute fails: whatever runs inside went straight to the driver."""

    def refused(*_args, **_kwargs):
        raise AssertionError("sent through SQLAlchemy")

    with monkeypatch.context() as patched:
        patched.setattr(Connection, "execute", refused)
        yield


def _reads(account, token):
    return [
        (accounts.BY_HASH, {"digest": accounts.hash_token(token)}),
        (provisioning._ACCOUNT, {"account_id": account.id}),
        (policy._WITH_ACCOUNT, {"account_id": account.id}),
        (saml_views._ACCOUNT_STATE, {"slug": account.slug}),
        (saml_views._ACCOUNT_STATE_PENDING, {"slug": account.slug, "request_id": "none"}),
        (provisioning._ACCOUNT, {"account_id": -1}),  # no row
    ]


def test_rows_read_straight_are_sqlalchemys(sqlite_only, store, scim, monkeypatch):
    """The same values of the same types, by index, by attribute and as `_mapping`, for each
    statement read so (datetimes, JSON, booleans, NULLs among them)."""
    create(scim, "read@example.com")
    counts = []
    for statement, params in _reads(scim.account, scim.token):
        with store.engine.connect() as conn:
            expected = list(conn.execute(statement, params))
            with sqlalchemy_refused(monkeypatch):
                got = driver.rows(conn, statement, params)
        counts.append(len(got))
        assert [tuple(r) for r in got] == [tuple(r) for r in expected], statement
        for mine, theirs in zip(got, expected, strict=True):
            assert [type(v) for v in mine] == [type(v) for v in theirs]
            assert mine._mapping == dict(theirs._mapping)
            for key in theirs._mapping:
                assert getattr(mine, key) == getattr(theirs, key)
    assert counts[:2] == [1, 1] and counts[-1] == 0  # rows compared, and none


def test_a_create_writes_straight_what_sqlalchemy_writes(sqlite_only, engine, scim):
    """A SCIM create on SQLite sends its INSERTs and the audit chain's UPDATE straight to the
    driver; with a listener on the engine, through SQLAlchemy. Both store every column alike
    (a datetime's text, a UUID's, JSON's, a boolean's), apart from what names each user."""
    seen: list[str] = []

    def listener(_conn, _cursor, statement, *_args):
        seen.append(statement.split()[0])

    body = {
        "name": {"givenName": "Same", "familyName": "Shape"},
        "emails": [{"value": "x@example.com", "type": "work", "primary": True}],
        "active": True,
    }
    straight = create(scim, "straight@example.com", externalId="ext-1", **body)
    event.listen(engine, "before_cursor_execute", listener)
    try:
        through = create(scim, "through@example.com", externalId="ext-2", **body)
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert "INSERT" in seen and "UPDATE" in seen, seen
    raw = sqlite3.connect(engine.url.database)
    try:
        for table, key in (
            ("users", "id"),
            ("user_emails", "user_id"),
            ("role_assignments", "user_id"),
            ("environment_access", "user_id"),
        ):
            rows = {}
            for made in (straight, through):
                sql = f"SELECT * FROM {table} WHERE {key} = ?"  # noqa: S608 (the tables above)
                cur = raw.execute(sql, (uuid.UUID(made["id"]).hex,))
                names = [d[0] for d in cur.description]
                found = cur.fetchall()
                assert found, (table, made["id"])
                rows[made["id"]] = [dict(zip(names, row, strict=True)) for row in found]
            a, b = rows.values()
            assert len(a) == len(b), table
            for mine, theirs in zip(a, b, strict=True):
                _same_form(mine, theirs, table)
        events = raw.execute(
            "SELECT target_id, at, before, after FROM audit_events WHERE target_id IN (?, ?)",
            (straight["id"], through["id"]),
        ).fetchall()
        assert len(events) == 2
        (_, at_a, before_a, after_a), (_, at_b, before_b, after_b) = events
        assert DATETIME.fullmatch(at_a) and DATETIME.fullmatch(at_b)
        assert before_a == before_b  # a JSON null, as SQLAlchemy stores None in a JSON column
        assert sorted(json.loads(after_a)) == sorted(json.loads(after_b))
    finally:
        raw.close()


DATETIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")  # SQLAlchemy's on SQLite
NAMING = {"id", "user_id", "user_name", "user_name_key", "external_id"}  # differ by user


def _same_form(mine, theirs, table):
    """Each column stored alike: the same value, or for what names the user or a time the
    same form."""
    assert mine.keys() == theirs.keys(), table
    for key, value in mine.items():
        other = theirs[key]
        assert type(value) is type(other), (table, key, value, other)
        if key in ("id", "user_id") and isinstance(value, str):  # a UUID's (an id may count)
            assert re.fullmatch("[0-9a-f]{32}", value) and re.fullmatch("[0-9a-f]{32}", other)
        elif isinstance(value, str) and DATETIME.fullmatch(value):
            assert DATETIME.fullmatch(other), (table, key, other)
        elif key not in NAMING:
            assert value == other, (table, key, value, other)


def test_a_refused_write_raises_as_sqlalchemy_does_and_writes_nothing(
    sqlite_only, store, account, monkeypatch
):
    """A unique key's refusal straight from the driver is SQLAlchemy's IntegrityError (what
    bridge.store retries on), its transaction rolled back with nothing written."""
    row = {"account_id": account.id, "name": "twice", "is_default": False}
    statement = insert(ENVIRONMENTS)

    def work(db):
        conn = db.connection()
        with sqlalchemy_refused(monkeypatch):
            driver.execute(conn, statement, [{**row, "created": utcnow()}])
            driver.execute(conn, statement, [{**row, "created": utcnow()}])

    with pytest.raises(IntegrityError) as refused, store.sessions() as db, db.begin():
        work(db)
    assert isinstance(refused.value.orig, sqlite3.IntegrityError)
    assert "UNIQUE" in str(refused.value.orig)
    with store.sessions() as db:
        assert db.scalars(select(Environment).where(Environment.name == "twice")).all() == []


def test_a_statement_that_needs_sqlalchemy_goes_through_it(store, account, monkeypatch):
    """A Python default to fill (no `created` given): SQLAlchemy's execution fills it, on both
    databases."""
    sent = []
    execute = Connection.execute

    def spy(conn, statement, *args, **kwargs):
        sent.append(statement)
        return execute(conn, statement, *args, **kwargs)

    monkeypatch.setattr(Connection, "execute", spy)
    with store.sessions() as db, db.begin():
        count = driver.execute(
            db.connection(),
            insert(ENVIRONMENTS).execution_options(preserve_rowcount=True),
            [{"account_id": account.id, "name": "defaulted", "is_default": False}],
        )
        assert count == 1
    monkeypatch.undo()
    assert len(sent) == 1
    with store.sessions() as db:
        env = db.scalars(select(Environment).where(Environment.name == "defaulted")).one()
        assert env.created is not None
        db.delete(env)
        db.commit()


def test_postgresql_reads_through_sqlalchemy(store, account):
    if store.dialect == "sqlite":
        pytest.skip("PostgreSQL's")
    with store.engine.connect() as conn:
        rows = driver.rows(conn, provisioning._ACCOUNT, {"account_id": account.id})
    assert type(rows[0]).__module__.startswith("sqlalchemy")
    assert rows[0].slug == account.slug and isinstance(rows[0]._mapping["id"], int)
