"""The audit log: append-only, each event chained to its account's previous one by a hash.

An event's hash covers its canonical content and the previous event's hash; the account row keeps
the chain's head (sequence number and hash). Editing an event breaks its hash, deleting one breaks
the sequence or the next event's link, deleting the newest breaks the head. Appending locks the
account row (FOR NO KEY UPDATE on PostgreSQL; SQLite's write lock does the same), so
concurrent writers of one account queue briefly at the end of their transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ScalarResult, Table, bindparam, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.orm.util import identity_key

from bridge import driver, metrics, tracing, values
from bridge.models import Account, AuditEvent, utcnow
from bridge.policy import DECIDED_HOLDS, decided_params
from bridge.store import WRITE

HEADS = "bridge.audit_heads"  # db.info: (transaction, {account id: (seq, hash)}) it appended


def _canonical(event: Mapping[str, Any]) -> bytes:
    body = {
        "account": event["account_id"],
        "seq": event["seq"],
        "at": event["at"].isoformat(timespec="microseconds"),
        "actor": event["actor"],
        "action": event["action"],
        "target": [event["target_type"], event["target_id"]],
        "before": event["before"],
        "after": event["after"],
        "prev": event["prev_hash"],
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def event_hash(event: AuditEvent) -> str:
    """SHA-256 over the event's canonical JSON, which includes the previous event's hash."""
    return _digest({key: getattr(event, key) for key in _HASHED})


def _digest(row: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical(row)).hexdigest()


_HASHED = (  # the columns an event's hash covers
    "account_id",
    "seq",
    "at",
    "actor",
    "action",
    "target_type",
    "target_id",
    "before",
    "after",
    "prev_hash",
)
# Built once, and run on the session's connection: an event is one row, which a Core INSERT
# writes for a fraction of what a unit-of-work flush of an object costs (values checked as a
# flush would check them: bridge.values).
EVENTS: Table = AuditEvent.__table__  # type: ignore[assignment]
ACCOUNTS: Table = Account.__table__  # type: ignore[assignment]
_INSERT = insert(EVENTS)
_HEAD = (
    select(ACCOUNTS.c.audit_seq, ACCOUNTS.c.audit_head)
    .where(ACCOUNTS.c.id == bindparam("account_id"))
    .with_for_update(key_share=True)
)
_MOVE = (
    update(ACCOUNTS)
    .where(ACCOUNTS.c.id == bindparam("account"))
    .values(audit_seq=bindparam("seq"), audit_head=bindparam("hash"))
)
# On PostgreSQL the event and the head it becomes go in one statement (a data-modifying CTE:
# one round trip where _INSERT and _MOVE take two); SQLite has no INSERT inside WITH.
_APPENDED = (
    insert(EVENTS)
    .values({name: bindparam(name) for name in (*_HASHED, "hash")})
    .returning(EVENTS.c.account_id, EVENTS.c.seq, EVENTS.c.hash)
    .cte("appended")
)
_APPEND = (
    update(ACCOUNTS)
    .values(audit_seq=_APPENDED.c.seq, audit_head=_APPENDED.c.hash)
    .where(ACCOUNTS.c.id == _APPENDED.c.account_id, DECIDED_HOLDS)  # _decided
    .execution_options(preserve_rowcount=True)
)


def read_head(db: Session, account_id: int, seq: int, head: str) -> None:
    """The account's chain head (`seq`, `head`) as the caller read it in this transaction: on
    SQLite, in a write transaction (its BEGIN IMMEDIATE took the database's write lock, which
    no other writer can take before this one commits), it is the head an append here builds
    on, so `record` does not read it again. Elsewhere it is read under its row lock at the
    first append, as ever (on PostgreSQL a row read earlier is not locked by the read)."""
    if db.get_bind().dialect.name != "sqlite" or db.in_nested_transaction():
        return
    if not db.connection().get_execution_options().get(WRITE):
        return
    txn = db.get_transaction()
    known = db.info.get(HEADS)
    if known is None or known[0] is not txn:
        heads: dict[int, tuple[int, str]] = {}
        known = db.info[HEADS] = (txn, heads)
    known[1].setdefault(account_id, (seq, head))


@tracing.step("audit.append")
def record(
    db: Session,
    account_id: int,
    *,
    actor: str,
    action: str,
    target_type: str,
    target_id: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Append an event to the account's chain, inside the caller's transaction."""
    db.flush()  # the caller's changes first, so the head lock is held as briefly as possible
    # FOR NO KEY UPDATE: rows this transaction inserted that reference the account (users,
    # groups) hold a KEY SHARE lock on it, which FOR UPDATE would wait on in two concurrent
    # transactions at once (a deadlock); FOR NO KEY UPDATE does not conflict with it.
    # The head once per transaction: after the first append this transaction holds its lock,
    # so the head is what this transaction last wrote.
    txn = db.get_transaction()
    nested = db.in_nested_transaction()  # a savepoint may roll back what it appended
    known = db.info.get(HEADS)
    conn = db.connection()
    if known is not None and known[0] is txn and account_id in known[1] and not nested:
        seq, prev = known[1][account_id]
    else:
        seq, prev = conn.execute(_HEAD, {"account_id": account_id}).one()
    event = {
        "account_id": account_id,
        "seq": seq + 1,
        "at": utcnow(),
        "actor": actor,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "before": before,
        "after": after,
        "prev_hash": prev,
    }
    event["hash"] = _digest(event)
    values.check_values(EVENTS, event)
    if conn.dialect.name == "postgresql":  # with the rows queued before it (bridge.values)
        params = {**event, **decided_params(db, account_id)}
        _decided(account_id, values.write_queued(db, _APPEND, params))
    else:
        values.write_queued(db, _INSERT, event)
        driver.execute(
            conn, _MOVE, [{"account": account_id, "seq": event["seq"], "hash": event["hash"]}]
        )
    if known is None or known[0] is not txn:
        heads: dict[int, tuple[int, str]] = {}
        known = db.info[HEADS] = (txn, heads)
    if nested:  # the savepoint may be rolled back: the next append reads the head again
        known[1].pop(account_id, None)
    else:
        known[1][account_id] = (event["seq"], event["hash"])
    # as an ORM UPDATE would: the account this session holds, if any, shows the new head
    held = db.identity_map.get(identity_key(Account, account_id))
    if held is not None:
        set_committed_value(held, "audit_seq", event["seq"])
        set_committed_value(held, "audit_head", event["hash"])
    metrics.on_commit(db, metrics.child(metrics.AUDIT_APPENDS, action).inc)


def _decided(account_id: int, appended: int | None) -> None:
    """PostgreSQL: StaleDataError (the write runs again) when what this transaction decided
    from (bridge.policy.DECIDED_FROM: the active policy version, the environments, the default
    role, read before this transaction held the account's row lock) is not what the account
    holds now: the append's statement then moved no head (policy.DECIDED_HOLDS; its inserted
    event goes with the rolled-back transaction). That statement runs after the head's read
    took the account's row lock (a statement before it), so it sees every change another
    transaction appended an event for."""
    if appended != 1:
        raise StaleDataError(f"account {account_id}'s policy or environments changed meanwhile")


@dataclass(frozen=True)
class Break:
    """The first place an account's chain does not hold, in words a person can act on."""

    seq: int
    reason: str


def verify(db: Session, account_id: int) -> tuple[int, Break | None]:
    """Walk the account's chain in order; return how many events held and the first break."""
    account = db.get_one(Account, account_id)
    with _events(db, account_id) as events:
        return _walk(account, events)


def _walk(account: Account, events: Iterable[AuditEvent]) -> tuple[int, Break | None]:
    expected_seq, prev = 1, ""
    for event in events:
        if event.seq != expected_seq:
            return expected_seq - 1, Break(expected_seq, f"event {expected_seq} is missing")
        if event.prev_hash != prev:
            return expected_seq - 1, Break(event.seq, "its link to the previous event is broken")
        if event_hash(event) != event.hash:
            return expected_seq - 1, Break(
                event.seq, "its content was changed after it was written"
            )
        prev = event.hash
        expected_seq += 1
    count = expected_seq - 1
    if count != account.audit_seq or prev != account.audit_head:
        return count, Break(
            count + 1, f"events after {count} are missing (head is {account.audit_seq})"
        )
    return count, None


def _events(db: Session, account_id: int) -> ScalarResult[AuditEvent]:
    """The account's events in order, streamed (closing the result releases the cursor)."""
    stmt = (
        select(AuditEvent)
        .where(AuditEvent.account_id == account_id)
        .order_by(AuditEvent.seq)
        .execution_options(yield_per=500)
    )
    return db.scalars(stmt)


def tail(db: Session, account_id: int, limit: int = 20) -> list[AuditEvent]:
    """The account's newest events, oldest first."""
    stmt = (
        select(AuditEvent)
        .where(AuditEvent.account_id == account_id)
        .order_by(AuditEvent.seq.desc())
        .limit(limit)
    )
    return list(reversed(db.scalars(stmt).all()))


def page(
    db: Session,
    account_id: int,
    *,
    before: int | None = None,
    action: str | None = None,
    actor: str | None = None,
    target: str | None = None,
    limit: int = 50,
) -> list[AuditEvent]:
    """The account's events newest first, `before` a sequence number; `action` matches a prefix
    (`idp.` is every IdP event), `actor` and `target` (`type:id`) match exactly."""
    stmt = select(AuditEvent).where(AuditEvent.account_id == account_id)
    if before is not None:
        stmt = stmt.where(AuditEvent.seq < before)
    if action:
        stmt = stmt.where(AuditEvent.action.startswith(action, autoescape=True))
    if actor:
        stmt = stmt.where(AuditEvent.actor == actor)
    if target:
        kind, _, ident = target.partition(":")
        stmt = stmt.where(AuditEvent.target_type == kind, AuditEvent.target_id == ident)
    return list(db.scalars(stmt.order_by(AuditEvent.seq.desc()).limit(limit)))


def describe(event: AuditEvent) -> dict[str, Any]:
    """An event as plain JSON-able data."""
    return {
        "seq": event.seq,
        "at": _iso(event.at),
        "actor": event.actor,
        "action": event.action,
        "target": f"{event.target_type}:{event.target_id}",
        "before": event.before,
        "after": event.after,
        "hash": event.hash,
    }


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="seconds")


def events(
    db: Session,
    account_id: int,
    *,
    before: int | None = None,
    after: int | None = None,
    target: tuple[str, str] | None = None,
    action: str | None = None,
    limit: int = 50,
) -> list[AuditEvent]:
    """A page of the account's events: newest first (below `before`), or oldest first after
    `after` (to follow the log); narrowed to a target and an action (`user.` for a prefix)."""
    stmt = select(AuditEvent).where(AuditEvent.account_id == account_id)
    if target is not None:
        stmt = stmt.where(AuditEvent.target_type == target[0], AuditEvent.target_id == target[1])
    if action:
        stmt = stmt.where(
            AuditEvent.action.startswith(action, autoescape=True)
            if action.endswith(".")
            else AuditEvent.action == action
        )
    if after is not None:
        stmt = stmt.where(AuditEvent.seq > after).order_by(AuditEvent.seq)
    else:
        if before is not None:
            stmt = stmt.where(AuditEvent.seq < before)
        stmt = stmt.order_by(AuditEvent.seq.desc())
    return list(db.scalars(stmt.limit(limit)))
