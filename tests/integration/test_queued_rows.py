"""Rows a write holds back (bridge.values.insert_rows(later=True)) and statements it queues
(values.queue_statement): written with the audit event that follows them (on PostgreSQL in the
event's statement), or as the transaction commits when no event follows, and never after a
rollback. Both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from bridge import audit, values
from bridge.errors import InvalidInput
from bridge.models import AuditEvent, LoginAttempt
from tests.integration.test_statement_counts import counting

ATTEMPTS = LoginAttempt.__table__


def row(account, reason: str, name_id: str = "queued@example.com") -> dict:
    return {"account_id": account.id, "ok": False, "reason": reason, "name_id": name_id}


def counted(db, account, column, value) -> int:
    """Rows of the account whose `column` (of LoginAttempt or AuditEvent) holds `value`."""
    table = column.class_
    return db.scalar(
        select(func.count())
        .select_from(table)
        .where(table.account_id == account.id, column == value)
    )


def written(store, account, reason: str) -> int:
    """The account's login-log lines with `reason`, read after the write."""
    with store.read() as db:
        return counted(db, account, LoginAttempt.reason, reason)


def test_rows_queued_with_no_event_after_them_are_written_as_it_commits(store, account):
    def work(db):
        values.insert_rows(db, ATTEMPTS, [row(account, "q_commit")], later=True)
        values.insert_rows(db, ATTEMPTS, [row(account, "q_commit")])  # joins the queue
        return counted(db, account, LoginAttempt.reason, "q_commit")

    assert store.write(work) == 0  # not yet sent while the work ran
    assert written(store, account, "q_commit") == 2


def test_rows_queued_before_an_event_are_written_with_it(store, account):
    """Queued rows of two shapes (a column given in one and not the other) and the event: one
    statement on PostgreSQL; a read after the event sees the rows, and nothing is left for
    the commit."""

    def work(db):
        values.insert_rows(db, ATTEMPTS, [row(account, "q_event")], later=True)
        values.insert_rows(
            db,
            ATTEMPTS,
            [row(account, "q_event"), {**row(account, "q_event"), "detail": "second shape"}],
        )
        with counting(store) as sql:
            audit.record(
                db, account.id, actor="t", action="test.queued", target_type="t", target_id="1"
            )
        statements = sql.count()
        assert values.QUEUED not in db.info
        return statements, counted(db, account, LoginAttempt.reason, "q_event")

    statements, seen = store.write(work)
    assert seen == 3
    # PostgreSQL: the head under its lock, then the rows and the event in one statement;
    # SQLite: the head (nothing read it before here), an INSERT per call and shape (three),
    # the event and the head it moves
    assert statements == (2 if store.dialect == "postgresql" else 1 + 3 + 2), statements
    assert written(store, account, "q_event") == 3
    with store.read() as db:
        assert counted(db, account, AuditEvent.action, "test.queued") == 1
    with store.read() as db:
        details = set(
            db.scalars(select(LoginAttempt.detail).where(LoginAttempt.reason == "q_event"))
        )
    assert details == {None, "second shape"}


def test_a_failed_write_and_a_rolled_back_session_write_none_of_their_queued_rows(store, account):
    def failing(db):
        values.insert_rows(db, ATTEMPTS, [row(account, "q_failed")], later=True)
        raise InvalidInput("refused after queueing")

    with pytest.raises(InvalidInput, match="refused after queueing"):
        store.write(failing)
    assert written(store, account, "q_failed") == 0

    with store.sessions() as db:  # one session, two transactions: the first rolled back
        with db.begin():
            values.insert_rows(db, ATTEMPTS, [row(account, "q_rolled_back")], later=True)
            db.rollback()
        with db.begin():
            values.insert_rows(db, ATTEMPTS, [row(account, "q_kept")])
    assert written(store, account, "q_rolled_back") == 0
    assert written(store, account, "q_kept") == 1


def test_a_queued_row_is_checked_before_it_is_queued(store, account):
    """A value its column cannot hold is refused at once, naming the column, and nothing of
    the write lands."""

    def work(db):
        values.insert_rows(db, ATTEMPTS, [row(account, "q_ok")], later=True)
        values.insert_rows(db, ATTEMPTS, [row(account, "q_bad", name_id="x" * 1025)])

    with pytest.raises(InvalidInput, match=r"login_attempts\.name_id is 1025 characters long"):
        store.write(work)
    assert written(store, account, "q_ok") == written(store, account, "q_bad") == 0


def test_a_queued_row_naming_no_column_is_refused_not_dropped(store, account):
    """A key the table has no column for fails the write, as an INSERT of it would; it is not
    left out of the queued row unseen."""

    def work(db):
        values.insert_rows(db, ATTEMPTS, [{**row(account, "q_typo"), "detial": "x"}], later=True)

    with pytest.raises(ValueError, match="login_attempts has no column detial"):
        store.write(work)
    assert written(store, account, "q_typo") == 0


def test_a_session_not_made_by_the_store_writes_at_once(store, account):
    """Only the store's sessions write queued rows as they commit (their sessionmaker's
    listeners): in any other session `later` does not hold the rows back, so its commit keeps
    them, and nothing is left queued."""
    with Session(store.engine) as db:
        values.insert_rows(db, ATTEMPTS, [row(account, "q_plain")], later=True)
        assert values.QUEUED not in db.info
        assert counted(db, account, LoginAttempt.reason, "q_plain") == 1  # sent already
        db.commit()
    assert written(store, account, "q_plain") == 1


# A queued statement: an UPDATE of the rows queued before it in an earlier statement (a login's
# remembered digest, bridge.provisioning.remember_login), its bind names its own.
RENAME = (
    update(ATTEMPTS)
    .where(ATTEMPTS.c.account_id == bindparam("q_account"), ATTEMPTS.c.reason == bindparam("q_was"))
    .values(reason=bindparam("q_now"))
)


def test_a_queued_statement_runs_in_order_with_the_rows_and_the_event(store, account):
    """Queued after rows an earlier statement wrote, it changes them when the event is
    written: on PostgreSQL inside the event's statement (one round trip for the rows queued
    with it, the statement and the event), on SQLite just before the event's INSERT. Not
    before: a read between sees the rows unchanged."""

    def work(db):
        values.insert_rows(db, ATTEMPTS, [row(account, "q_before")])  # written at once
        values.queue_statement(
            db, RENAME, {"q_account": account.id, "q_was": "q_before", "q_now": "q_after"}
        )
        values.insert_rows(db, ATTEMPTS, [row(account, "q_with")], later=True)
        unchanged = counted(db, account, LoginAttempt.reason, "q_before")
        with counting(store) as sql:
            audit.record(
                db, account.id, actor="t", action="test.queued", target_type="t", target_id="2"
            )
        return unchanged, sql.count()

    unchanged, statements = store.write(work)
    assert unchanged == 1
    # PostgreSQL: the head, then the UPDATE, the row and the event in one statement; SQLite:
    # the head, the UPDATE, the row's INSERT, the event and the head it moves
    assert statements == (2 if store.dialect == "postgresql" else 1 + 2 + 2), statements
    assert written(store, account, "q_before") == 0
    assert written(store, account, "q_after") == written(store, account, "q_with") == 1


def test_a_queued_statement_with_no_event_after_it_runs_as_it_commits(store, account):
    def work(db):
        values.insert_rows(db, ATTEMPTS, [row(account, "q_late")])
        params = {"q_account": account.id, "q_was": "q_late", "q_now": "q_late_done"}
        values.queue_statement(db, RENAME, params)
        return counted(db, account, LoginAttempt.reason, "q_late")

    assert store.write(work) == 1  # not yet run while the work ran
    assert written(store, account, "q_late") == 0
    assert written(store, account, "q_late_done") == 1


def test_queued_statements_sharing_a_bind_name_are_refused_not_given_one_value(store, account):
    """On PostgreSQL two statements of one combined statement with a parameter of the same
    name would both get one value: refused, and nothing of the write lands. (SQLite runs each
    statement on its own: each gets its own values.)"""

    def work(db):
        values.insert_rows(db, ATTEMPTS, [row(account, "q_one"), row(account, "q_two")])
        values.queue_statement(
            db, RENAME, {"q_account": account.id, "q_was": "q_one", "q_now": "q_one_done"}
        )
        values.queue_statement(
            db, RENAME, {"q_account": account.id, "q_was": "q_two", "q_now": "q_two_done"}
        )
        audit.record(
            db, account.id, actor="t", action="test.queued", target_type="t", target_id="3"
        )

    if store.dialect != "postgresql":
        store.write(work)
        assert written(store, account, "q_one_done") == written(store, account, "q_two_done") == 1
        return
    with pytest.raises(ValueError, match=r"share parameter names: \['q_account', 'q_now'"):
        store.write(work)
    assert written(store, account, "q_one") == written(store, account, "q_one_done") == 0


def test_a_queued_statement_in_a_session_not_made_by_the_store_runs_at_once(store, account):
    with Session(store.engine) as db:
        values.insert_rows(db, ATTEMPTS, [row(account, "q_plain_stmt")])
        params = {"q_account": account.id, "q_was": "q_plain_stmt", "q_now": "q_plain_done"}
        values.queue_statement(db, RENAME, params)
        assert values.QUEUED not in db.info
        assert counted(db, account, LoginAttempt.reason, "q_plain_done") == 1  # ran already
        db.commit()
    assert written(store, account, "q_plain_done") == 1
