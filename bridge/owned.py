"""Rows an account owns and an admin changes by key (OIDC clients, webhook endpoints): found
through the account's slug, locked FOR UPDATE for the caller's change (a concurrent change of the
same row waits, then sees it), and removed with their audit event in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge import audit
from bridge.accounts import get_account
from bridge.errors import NotFound
from bridge.models import Account
from bridge.store import Store

T = TypeVar("T")


def locked(
    db: Session, slug: str, model: type[T], key: Any, value: object, what: str
) -> tuple[Account, T]:
    """The account and its row whose `key` column is `value`, locked; NotFound naming `what`."""
    account = get_account(db, slug)
    stmt: Any = select(model).where(model.account_id == account.id, key == value)  # type: ignore[attr-defined]
    row: T | None = db.scalar(stmt.with_for_update())
    if row is None:
        raise NotFound(f"account {slug!r} has no {what}")
    return account, row


def remove(
    store: Store,
    slug: str,
    model: type[T],
    key: Any,
    value: object,
    *,
    what: str,
    action: str,
    describe: Callable[[T], dict[str, Any]],
    actor: str,
) -> None:
    """Delete the row (its dependants go by ON DELETE CASCADE) and audit `action` with the row
    as it was; the audit target is the model's table name's singular and the key."""

    def work(db: Session) -> None:
        account, row = locked(db, slug, model, key, value, what)
        before = describe(row)
        db.delete(row)
        audit.record(
            db,
            account.id,
            actor=actor,
            action=action,
            target_type=action.partition(".")[0],
            target_id=str(value),
            before=before,
        )

    store.write(work)
