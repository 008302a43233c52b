"""Retention of the logs that grow with traffic: finished deliveries (webhooks and back-channel
logout tokens, with their attempt log) and SAML login attempts.

A delivery is finished when it was delivered or given up; it goes `BRIDGE_DELIVERY_LOG_DAYS`
(default 30) after its last attempt was due (`next_attempt`, which a manual redeliver moves to
now, so a delivery sent again by hand is kept as long as a new one). A pending delivery is never
deleted. Login attempts go `BRIDGE_LOGIN_LOG_DAYS` (default 90) after they happened; the audit
log keeps every login (`login.succeed` / `login.fail`) and is never pruned. Rows are deleted in
batches of BATCH, one transaction each, so a large backlog never holds locks for long; two
workers pruning at once delete disjoint or already-deleted rows (a DELETE of a gone row is a
no-op). The worker prunes in its five-minute sweep; `idbridge webhooks prune` prunes now.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session

from bridge.models import Account, Delivery, LoginAttempt, utcnow
from bridge.store import Store

BATCH = 1000
FINISHED = ("delivered", "failed")


@dataclass(frozen=True)
class Retention:
    deliveries: timedelta = timedelta(days=30)
    logins: timedelta = timedelta(days=90)


@dataclass(frozen=True)
class Pruned:
    deliveries: int
    login_attempts: int


def prune(store: Store, keep: Retention, now: datetime | None = None) -> Pruned:
    """Delete finished deliveries and login attempts older than `keep`; how many of each."""
    now = now or utcnow()
    old_deliveries, old_logins = now - keep.deliveries, now - keep.logins
    with store.read() as db:  # index probes first: a sweep with nothing to do writes nothing
        any_delivery = db.scalar(_finished_before(old_deliveries).limit(1)) is not None
        accounts = [
            a
            for a in db.scalars(select(Account.id)).all()
            if db.scalar(_logins_before(a, old_logins).limit(1)) is not None
        ]
    deliveries = (
        _in_batches(store, functools.partial(_old_deliveries, before=old_deliveries))
        if any_delivery
        else 0
    )
    logins = sum(
        _in_batches(store, functools.partial(_old_logins, account_id=a, before=old_logins))
        for a in accounts
    )
    return Pruned(deliveries, logins)


def _finished_before(before: datetime) -> Select[int]:
    return select(Delivery.id).where(Delivery.state.in_(FINISHED), Delivery.next_attempt < before)


def _logins_before(account_id: int, before: datetime) -> Select[int]:
    return select(LoginAttempt.id).where(
        LoginAttempt.account_id == account_id, LoginAttempt.at < before
    )


def _in_batches(store: Store, batch: Callable[[Session], int]) -> int:
    total = 0
    while True:
        done = store.write(batch)
        total += done
        if done < BATCH:
            return total


def _old_deliveries(db: Session, before: datetime) -> int:
    ids = db.scalars(_finished_before(before).limit(BATCH)).all()
    if ids:  # the attempt log goes with them (ON DELETE CASCADE)
        db.execute(delete(Delivery).where(Delivery.id.in_(ids), Delivery.state.in_(FINISHED)))
    return len(ids)


def _old_logins(db: Session, account_id: int, before: datetime) -> int:
    ids = db.scalars(_logins_before(account_id, before).limit(BATCH)).all()
    if ids:
        db.execute(delete(LoginAttempt).where(LoginAttempt.id.in_(ids)))
    return len(ids)
