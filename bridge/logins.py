"""The sign-in log: every SAML login, and for a refused one its typed reason."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Table, func, select
from sqlalchemy.orm import Session

from bridge import audit, metrics, values
from bridge.models import Account, IdentityProvider, LoginAttempt, utcnow
from bridge.store import Store


def record(
    store: Store,
    account_id: int,
    *,
    ok: bool,
    reason: str,
    idp_id: int | None = None,
    name_id: str | None = None,
    user_id: uuid.UUID | None = None,
    detail: str | None = None,
) -> None:
    """A login-log line in a transaction of its own (refusals: nothing else is written)."""
    store.write(
        lambda db: record_in(
            db,
            account_id,
            ok=ok,
            reason=reason,
            idp_id=idp_id,
            name_id=name_id,
            user_id=user_id,
            detail=detail,
        )
    )


def record_in(
    db: Session,
    account_id: int,
    *,
    ok: bool,
    reason: str,
    idp_id: int | None = None,
    idp_name: str | None = None,
    name_id: str | None = None,
    user_id: uuid.UUID | None = None,
    detail: str | None = None,
) -> None:
    """A login-log line, inside the caller's transaction, and its audit event (so the event
    feed has `login.succeeded` / `login.failed` with the typed reason); counted in metrics when
    it commits."""
    kind = _kind(db, idp_id)
    account = _slug(db, account_id) if metrics.per_account() else ""
    labels = metrics.child(metrics.LOGINS, kind, "ok" if ok else "refused", reason, account)
    metrics.on_commit(db, labels.inc)
    _insert(
        db,
        {
            "account_id": account_id,
            "ok": ok,
            "reason": reason,
            "idp_id": idp_id,
            "name_id": (name_id or "")[:1024] or None,
            "user_id": user_id,
            "detail": (detail or "")[:1024] or None,
        },
    )
    if idp_name is None and idp_id is not None:
        idp = db.get(IdentityProvider, idp_id)
        idp_name = idp.name if idp is not None else None
    audit.record(
        db,
        account_id,
        actor=f"saml:{idp_name}" if idp_name is not None else "saml",
        action="login.succeed" if ok else "login.fail",
        target_type="user" if user_id is not None else "login",
        target_id=str(user_id) if user_id is not None else "-",
        after={"reason": reason, "idp": idp_name},
    )


def record_test_in(
    db: Session, account_id: int, *, idp_id: int, name_id: str | None, detail: str
) -> None:
    """A test login's line (bridge.test_logins): validated, but nobody signed in, so it has no
    user, counts as no sign-in, and sends no `login.*` event (its audit event is its own)."""
    _insert(
        db,
        {
            "account_id": account_id,
            "ok": True,
            "reason": TEST_LOGIN,
            "idp_id": idp_id,
            "name_id": (name_id or "")[:1024] or None,
            "user_id": None,
            "detail": detail[:1024],
        },
    )


_TABLE: Table = LoginAttempt.__table__  # type: ignore[assignment]


def _insert(db: Session, row: dict[str, Any]) -> None:
    """One login-log line without the ORM's unit of work (nothing reads it back in the request):
    the values are checked as a flush checks them (bridge.values)."""
    row["at"] = utcnow()
    # after what the caller added (the user it names); queued for the login's audit event,
    # or else the commit (bridge.values)
    values.insert_rows(db, _TABLE, [row], later=True)


TEST_LOGIN = "test_login"


def recent(
    db: Session,
    account_id: int,
    *,
    failed: bool = False,
    reason: str | None = None,
    before: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """The newest login-log lines first, times as ISO text (the CLI and the console print them);
    `before` (a line's id) pages back through older ones."""
    rows = search(db, account_id, failed=failed, reason=reason, before_id=before, limit=limit)
    return [{**row, "at": row["at"].isoformat(timespec="seconds")} for row in rows]


_KINDS: dict[int, str] = {}  # an IdP's id never changes, nor (in practice) its vendor


def _kind(db: Session, idp_id: int | None) -> str:
    if idp_id is None:
        return "unknown"
    if idp_id not in _KINDS:
        idp = db.get(IdentityProvider, idp_id)
        _KINDS[idp_id] = metrics.idp_kind(idp.entity_id, idp.sso_url) if idp else "unknown"
    return _KINDS[idp_id]


def _slug(db: Session, account_id: int) -> str:
    account = db.get(Account, account_id)
    return account.slug if account is not None else ""


def failures_since(db: Session, account_id: int, since: datetime) -> dict[str, int]:
    """Refused logins since `since`, counted by typed reason (most frequent first)."""
    rows = db.execute(
        select(LoginAttempt.reason, func.count())
        .where(
            LoginAttempt.account_id == account_id,
            LoginAttempt.ok.is_(False),
            LoginAttempt.at >= since,
        )
        .group_by(LoginAttempt.reason)
    ).all()
    return dict(sorted(((r, int(n)) for r, n in rows), key=lambda item: (-item[1], item[0])))


def successes_since(db: Session, account_id: int, since: datetime) -> int:
    return int(
        db.scalar(
            select(func.count()).where(
                LoginAttempt.account_id == account_id,
                LoginAttempt.ok.is_(True),
                LoginAttempt.reason != TEST_LOGIN,
                LoginAttempt.at >= since,
            )
        )
        or 0
    )


def search(
    db: Session,
    account_id: int,
    *,
    failed: bool = False,
    reason: str | None = None,
    idp: str | None = None,
    user_id: uuid.UUID | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Login-log lines, newest first, filtered; `before_id` pages back."""
    stmt = (
        select(LoginAttempt, IdentityProvider.name)
        .outerjoin(IdentityProvider, IdentityProvider.id == LoginAttempt.idp_id)
        .where(LoginAttempt.account_id == account_id)
        .order_by(LoginAttempt.id.desc())
        .limit(limit)
    )
    if failed:
        stmt = stmt.where(LoginAttempt.ok.is_(False))
    if reason:
        stmt = stmt.where(LoginAttempt.reason == reason)
    if idp is not None:
        stmt = stmt.where(IdentityProvider.name == idp)
    if user_id is not None:
        stmt = stmt.where(LoginAttempt.user_id == user_id)
    if since is not None:
        stmt = stmt.where(LoginAttempt.at >= since)
    if until is not None:
        stmt = stmt.where(LoginAttempt.at < until)
    if before_id is not None:
        stmt = stmt.where(LoginAttempt.id < before_id)
    return [
        {
            "id": a.id,
            "at": a.at,
            "ok": a.ok,
            "reason": a.reason,
            "idp": name,
            "name_id": a.name_id,
            "user_id": a.user_id and str(a.user_id),
            "detail": a.detail,
        }
        for a, name in db.execute(stmt)
    ]
