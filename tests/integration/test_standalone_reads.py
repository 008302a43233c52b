"""SCIM requests and SAML logins read without a transaction (bridge.store,
`scope(snapshot=False)`): their reads each stand alone (a SCIM request's token, then one
resource, or both in one statement; a login's account with its pending request), so no BEGIN
and no ROLLBACK are sent for them: on PostgreSQL none for any of their reads (two round trips
per request), on SQLite none for their Core reads (`Store.connection`; its transactions cost no
round trip, but a BEGIN and a ROLLBACK are two driver calls through SQLAlchemy). Their writes
keep their transactions, and a request that needs one snapshot for its reads keeps it (SCIM
`/.search`, whose groups' members stream through a server-side cursor, which only lives in a
transaction).

Told from the driver's own view of its connection after each statement: IDLE (no transaction
open) or INTRANS (inside one): psycopg's transaction status, sqlite3's `in_transaction`."""

from __future__ import annotations

import gc
import select as select_module
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from sqlalchemy import event, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from bridge import create_app
from bridge import store as store_module
from bridge.models import Account
from tests.forked import in_a_fork
from tests.integration.test_scim_users import create
from tests.integration.test_statement_counts import Logins


@pytest.fixture
def pg_store(store):
    """The store, on PostgreSQL only: what these tests check is the driver's autocommit (on
    SQLite only Core reads go without a transaction) and a kept connection's server."""
    if store.dialect != "postgresql":
        pytest.skip("PostgreSQL's: the driver's autocommit sessions, a server that hangs up")
    return store


@pytest.fixture
def engine(app):
    return app.extensions["bridge.store"].engine


@contextmanager
def states(engine) -> Iterator[list[str]]:
    """psycopg's transaction status after each statement on the engine, with its verb (INSERT
    for a statement that inserts in a data-modifying CTE: a new user's rows go with the audit
    event's, bridge.values)."""
    seen: list[str] = []

    def after(conn, cursor, statement, parameters, context, executemany):
        dbapi = conn.connection.dbapi_connection
        if hasattr(dbapi, "info"):  # psycopg
            status = dbapi.info.transaction_status.name
        else:  # sqlite3
            status = "INTRANS" if dbapi.in_transaction else "IDLE"
        verb = "INSERT" if "INSERT INTO" in statement else statement.split()[0]
        seen.append(f"{verb} {status}")

    event.listen(engine, "after_cursor_execute", after)
    try:
        yield seen
    finally:
        event.remove(engine, "after_cursor_execute", after)


def test_a_scim_read_sends_no_transaction(scim, engine):
    """GET by id and a filter (each the token with the user or the page, one statement): each
    read on its own."""
    made = create(scim, "alone@example.com")
    with states(engine) as seen:
        assert scim.get(f"Users/{made['id']}").status_code == 200
        found = scim.get("Users", query_string={"filter": 'userName eq "alone@example.com"'})
        assert found.status_code == 200 and found.json["totalResults"] == 1
    assert len(seen) == 2 and all(s.endswith(" IDLE") for s in seen), seen


def test_a_scim_write_keeps_its_transaction(scim, engine):
    """A create: the token read alone, the user written in one transaction as ever."""
    assert scim.get("Users", query_string={"count": 0}).status_code == 200  # the token's use,
    # the log's purge (a write each, at most once a minute) are behind us
    with states(engine) as seen:
        assert scim.post("Users", json={"userName": "written@example.com"}).status_code == 201
    assert seen[0] == "SELECT IDLE", seen
    assert seen[1:] and all(s.endswith("INTRANS") for s in seen[1:]), seen
    assert any(s.startswith("INSERT") for s in seen), seen


def test_a_search_across_resources_keeps_one_snapshot(scim, engine):
    """`/.search` reads users, groups and members (a server-side cursor) in one transaction."""
    member = create(scim, "member@example.com")
    group = scim.post(
        "Groups", json={"displayName": "Searched", "members": [{"value": member["id"]}]}
    )
    assert group.status_code == 201
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": 'displayName eq "Searched"',
    }
    with states(engine) as seen:
        resp = scim.post(".search", json=body)
    assert resp.status_code == 200, resp.json
    groups = [r for r in resp.json["Resources"] if r.get("displayName") == "Searched"]
    assert [m["value"] for m in groups[0]["members"]] == [member["id"]]
    assert seen[1:] and all(s.endswith("INTRANS") for s in seen[1:]), seen


def test_a_saml_login_reads_alone_and_writes_in_one_transaction(client, store, account, engine):
    """SP-initiated: /login reads the account alone and writes the pending request in one
    transaction; the ACS reads the account with that request alone (one statement), then writes
    the login (the request used up, the user, the session, the log) in one."""
    logins = Logins(client, store, account)
    assert logins.post("warm@example.com").status_code == 302  # the SP key is made
    with states(engine) as started:
        request_id = logins.start()
    with states(engine) as seen:
        resp = logins.post("ann@example.com", in_response_to=request_id)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    for steps, reads in ((started, 1), (seen, 1)):
        assert [s.split()[1] for s in steps[:reads]] == ["IDLE"] * reads, steps
        writes = steps[reads:]
        assert writes and all(s.endswith(" INTRANS") for s in writes), steps
        assert any(s.startswith("INSERT") for s in writes), steps
    with states(engine) as seen:
        assert client.get(f"/saml/{account.slug}/metadata").status_code == 200
    assert seen == ["SELECT IDLE"]


def test_a_read_after_a_write_still_stands_alone(pg_store, account):
    """A standalone request that writes and then reads again (its session takes another
    connection after the write ended its read): that read goes without a transaction too.
    (On SQLite a standalone request's sessions keep their read transactions: only its Core
    reads, `Store.connection`, go without.)"""
    with states(pg_store.engine) as seen, pg_store.scope(snapshot=False):
        with pg_store.read() as db:
            db.execute(select(Account.id).where(Account.id == account.id)).one()
        pg_store.write(lambda db: db.execute(select(Account.id).with_for_update()).all())
        with pg_store.read() as db:
            db.execute(select(Account.slug).where(Account.id == account.id)).one()
    assert seen == ["SELECT IDLE", "SELECT INTRANS", "SELECT IDLE"], seen


class Refused(Exception):
    pass


def test_a_connection_that_read_alone_writes_in_a_transaction(pg_store, account):
    """The pool hands the connection a standalone read used (autocommit in the driver) back in
    a transaction: the next write on it is all or nothing. The pool is last in, first out, so
    the write below takes that very connection (asserted)."""
    used = []
    with pg_store.scope(snapshot=False), pg_store.read() as db:
        conn = db.connection().connection.dbapi_connection
        used.append(conn)
        assert conn.autocommit is True
        db.execute(select(Account.id)).all()
    assert used[0].autocommit is False  # put back as it was returned

    def work(db):
        used.append(db.connection().connection.dbapi_connection)
        db.execute(update(Account).where(Account.id == account.id).values(name="Half written"))
        raise Refused  # after a statement that would have committed on its own in autocommit

    with pytest.raises(Refused):
        pg_store.write(work)
    assert used[1] is used[0]
    with pg_store.read() as db:
        assert db.scalar(select(Account.name).where(Account.id == account.id)) == "Test account"


def test_a_connection_the_driver_cannot_switch_back_is_discarded(pg_store, account, monkeypatch):
    """A connection the driver refuses to take out of autocommit as it is returned is not
    handed out again (the pool discards it): the next checkout is another, in a transaction."""
    with pg_store.scope(snapshot=False), pg_store.read() as db:
        refusing = db.connection().connection.dbapi_connection
        db.execute(select(Account.id)).all()
        switch = type(refusing).autocommit

        def refuse(conn, value):
            if conn is refusing and not value:
                raise psycopg.OperationalError("refused")
            switch.fset(conn, value)

        monkeypatch.setattr(type(refusing), "autocommit", property(switch.fget, refuse))
    assert refusing.closed
    monkeypatch.undo()
    with pg_store.read() as db:
        conn = db.connection().connection.dbapi_connection
        assert conn is not refusing and conn.autocommit is False
        assert db.scalar(select(Account.name).where(Account.id == account.id)) == "Test account"


def test_core_reads_stand_alone_without_a_transaction(store, account):
    """`Store.connection` in a request whose reads stand alone: no session, no transaction (on
    PostgreSQL the driver's autocommit, on SQLite no BEGIN), on a connection of its own, its
    thread's (kept checked out: the next tests); in a request with one snapshot, the read
    session's own connection (its transaction)."""
    pool = store.engine.pool
    postgresql = store.dialect == "postgresql"
    with states(store.engine) as seen, store.scope(snapshot=False):
        with store.connection() as conn:
            assert conn.execute(select(Account.slug).where(Account.id == account.id)).one()
            if postgresql:  # as its transaction began (none: in autocommit)
                assert conn.connection.dbapi_connection.autocommit is True
            assert pool.checkedout() == 1
        assert pool.checkedout() == 1  # kept for this thread's next stand-alone read
        with store.read() as db:  # a session after it: another connection
            db.execute(select(Account.id)).all()
            assert pool.checkedout() == 2
    # the session's read: on SQLite in a read transaction (test_a_read_after_a_write...)
    assert seen == ["SELECT IDLE", "SELECT IDLE" if postgresql else "SELECT INTRANS"]
    with states(store.engine) as seen, store.scope(), store.read() as db:
        db.execute(select(Account.id)).all()
        with store.connection() as conn:
            assert conn is db.connection()
            conn.execute(select(Account.slug)).all()
    assert seen == ["SELECT INTRANS"] * 2


def _alone(store, account):
    """A stand-alone read in a request's scope: the connection it used."""
    with store.scope(snapshot=False), store.connection() as conn:
        assert conn.execute(select(Account.slug).where(Account.id == account.id)).scalar()
        return conn


def test_a_thread_keeps_its_connection_for_reads_that_stand_alone(store, account):
    """Each thread keeps one connection, checked out, for its stand-alone reads (no checkout
    and return per request); another thread has its own, given back to the pool when that
    thread ends."""
    pool = store.engine.pool
    first = _alone(store, account)
    assert _alone(store, account) is first and pool.checkedout() == 1
    with states(store.engine) as seen:
        _alone(store, account)
    assert seen == ["SELECT IDLE"]  # still no transaction
    theirs = []
    thread = threading.Thread(target=lambda: theirs.append(_alone(store, account)))
    thread.start()
    thread.join()
    gc.collect()
    assert theirs[0] is not first and theirs[0].closed
    assert pool.checkedout() == 1 and _alone(store, account) is first


def test_a_kept_sqlite_connection_sees_each_commit(store, account):
    """SQLite: the kept connection's reads hold no snapshot between them (no BEGIN, and each
    statement's cursor is done), so a write committed on another connection in between is seen
    by the next read."""
    kept = _alone(store, account)
    store.write(
        lambda db: db.execute(
            update(Account).where(Account.id == account.id).values(name="Renamed meanwhile")
        )
    )
    with store.scope(snapshot=False), store.connection() as conn:
        assert conn is kept
        assert conn.execute(select(Account.name).where(Account.id == account.id)).scalar_one() == (
            "Renamed meanwhile"
        )


def test_past_the_limit_a_thread_takes_a_connection_per_read(store, account, monkeypatch):
    """At most HELD_LIMIT threads keep one (the pool's overflow stays for sessions and writes):
    past it a thread's read takes one from the pool and gives it back; once a keeper gives its
    own back, the next thread to read keeps one again."""
    monkeypatch.setattr(store_module, "HELD_LIMIT", 1)
    pool = store.engine.pool
    kept = _alone(store, account)
    seen = []

    def other_thread():
        conn = _alone(store, account)
        seen.append((conn.closed, pool.checkedout()))

    for _ in range(2):
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert seen == [(True, 1), (True, 1)]  # given back at once: only the keeper's is out
    with pytest.raises(DBAPIError), store.scope(snapshot=False), store.connection() as conn:
        conn.execute(text(REFUSED))  # the keeper's, given back after an error
    assert kept.closed and pool.checkedout() == 0
    keeper = threading.Thread(target=other_thread)
    keeper.start()
    keeper.join()  # it kept one while it lived (gone with it)
    assert seen[-1] == (False, 1)


def test_a_kept_connection_is_replaced_when_the_server_hangs_up(pg_store, account):
    """A backend terminated while idle (a restart, an administrator): the thread's next read
    takes another connection and succeeds (no error for the request that finds it so)."""
    kept = _alone(pg_store, account)
    pid = kept.connection.dbapi_connection.info.backend_pid
    with pg_store.engine.connect() as admin:
        assert admin.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    deadline = time.monotonic() + 5  # the goodbye reaches the socket
    while not _readable(kept) and time.monotonic() < deadline:
        time.sleep(0.01)
    again = _alone(pg_store, account)
    assert again is not kept
    assert again.connection.dbapi_connection.info.backend_pid != pid


def _readable(conn):
    fileno = conn.connection.dbapi_connection.fileno()
    return bool(select_module.select([fileno], [], [], 0)[0])


REFUSED = "SELECT * FROM no_such_table"  # an error on both databases


def test_a_kept_connection_is_given_back_after_an_error(store, account):
    """A statement refused on it (or any error while it is used): it goes back to the pool (its
    reset clears whatever was left) and the next read takes another."""
    kept = _alone(store, account)
    with pytest.raises(DBAPIError), store.scope(snapshot=False), store.connection() as conn:
        assert conn is kept
        conn.execute(text(REFUSED))
    assert kept.closed and store.engine.pool.checkedout() == 0
    assert _alone(store, account) is not kept


def test_a_forked_process_leaves_its_parents_kept_connection_alone(pg_store, account):
    """A process forked from one with a kept connection (gunicorn's preload_app, a plan's
    workers) takes its own, and neither uses nor closes its parent's (the same socket)."""
    kept = _alone(pg_store, account)
    parent_backend = kept.connection.dbapi_connection.info.backend_pid
    child_backend = in_a_fork(
        lambda: str(_alone(pg_store, account).connection.dbapi_connection.info.backend_pid)
    )
    assert child_backend and int(child_backend) != parent_backend
    assert _alone(pg_store, account) is kept  # still good: nothing was sent or closed on it


def test_disposing_the_store_gives_the_kept_connections_back(store, account):
    kept = _alone(store, account)
    store.dispose()
    assert kept.closed
    assert _alone(store, account) is not kept  # a new pool's


def test_the_engine_dispatches_no_statement_events(settings, store, account):
    """The app's engine, as the app makes it, has no Connection event listener: with one,
    SQLAlchemy runs its event dispatch at every step of every statement (8-10 % of a SCIM
    request's instructions on SQLite, where SQLite's BEGIN was sent by a `begin` listener; it is
    now bridge.store's _SQLiteConnection). Its transactions still begin as they must: a write
    with BEGIN IMMEDIATE (the database's write lock, taken at once), a session's read with
    BEGIN (one snapshot), a stand-alone Core read with none (the tests above)."""
    made = create_app(settings)  # not the tests' app: a listener once added (states) stays
    try:
        assert made.extensions["bridge.store"].engine._has_events is False
    finally:
        made.extensions["bridge.store"].dispose()
    if store.dialect != "sqlite":
        return
    seen = []

    def work(db):
        dbapi = db.connection().connection.dbapi_connection
        seen.append(dbapi.in_transaction)
        other = sqlite3.connect(make_url(store.url).database, timeout=0)
        try:  # the lock is held before any statement of the work: another writer is refused
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        finally:
            other.close()

    store.write(work)
    with store.read() as db:
        db.execute(select(Account.id)).all()
        seen.append(db.connection().connection.dbapi_connection.in_transaction)
    assert seen == [True, True]
