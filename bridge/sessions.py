"""Server-side login sessions: what the product trusts after a SAML login.

A session keeps the IdP's whole NameID and SessionIndex so single logout can name it back, and
ends with its user (deactivation, deletion) or its IdP (removal, disabling). Each change is one
UPDATE inside the caller's transaction or one of its own.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session

from bridge import audit, authcodes, values
from bridge.errors import NotFound
from bridge.models import LoginSession, User, utcnow
from bridge.store import Store

# The cookie the SAML adapter sets after a login (saml/views.py); the OIDC adapter reads it to
# know who is signed in. Its value is the session secret, signed with BRIDGE_SECRET_KEY.
COOKIE = "bridge_session"
COOKIE_SALT = "bridge-session"


def cookie_secret(secret_key: str, raw: str | None) -> str | None:
    """The session secret inside a session cookie's value (None when absent or forged)."""
    if not raw:
        return None
    try:
        return str(URLSafeSerializer(secret_key, salt=COOKIE_SALT).loads(raw))
    except BadSignature:
        return None


@dataclass(frozen=True)
class NameId:
    """A SAML NameID as the IdP sent it: value, Format and qualifiers (SAML Core 2.2.3)."""

    value: str
    format: str | None = None
    name_qualifier: str | None = None
    sp_name_qualifier: str | None = None
    sp_provided_id: str | None = None


def name_id_of(login: LoginSession) -> NameId | None:
    """The NameID a session was opened with (None for sessions without an IdP)."""
    if login.name_id is None:
        return None
    return NameId(
        login.name_id,
        login.name_id_format,
        login.name_qualifier,
        login.sp_name_qualifier,
        login.sp_provided_id,
    )


def end_for_idp(db: Session, idp_id: int) -> list[dict[str, str]]:
    """End every live session opened through an IdP (removal, disabling) and the product
    sessions built on them; returns each as {sid, user} for the audit event (back-channel
    logout reads them from there)."""
    ended = db.execute(
        update(LoginSession)
        .where(LoginSession.idp_id == idp_id, LoginSession.ended.is_(None))
        .values(ended=utcnow())
        .returning(LoginSession.id, LoginSession.user_id)
    ).all()
    for session_id, _ in ended:
        authcodes.revoke_for_session(db, session_id)
    return [{"sid": str(i), "user": str(u)} for i, u in ended]


def end_for_user(db: Session, user_id: uuid.UUID) -> int:
    """End every live session of a user (deactivation, deletion); return how many."""
    result = db.execute(
        update(LoginSession)
        .where(LoginSession.user_id == user_id, LoginSession.ended.is_(None))
        .values(ended=utcnow())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def start_in(
    db: Session,
    secret: str,
    account_id: int,
    user_id: uuid.UUID,
    *,
    minutes: int,
    idp_id: int | None = None,
    name_id: NameId | None = None,
    session_index: str | None = None,
    authenticated: datetime | None = None,
) -> None:
    """A new session for `secret`, inside the caller's transaction; `authenticated`: when the
    IdP says the person authenticated (kept no later than now: an IdP's clock may run ahead)."""
    now = utcnow()
    row = {
        "secret_hash": secret_hash(secret),
        "account_id": account_id,
        "user_id": user_id,
        "idp_id": idp_id,
        "name_id": name_id.value if name_id else None,
        "name_id_format": name_id.format if name_id else None,
        "name_qualifier": name_id.name_qualifier if name_id else None,
        "sp_name_qualifier": name_id.sp_name_qualifier if name_id else None,
        "sp_provided_id": name_id.sp_provided_id if name_id else None,
        "session_index": session_index,
        "created": now,
        "authenticated": None if authenticated is None else min(authenticated, now),
        "expires": now + timedelta(minutes=minutes),
    }
    # Without the ORM's unit of work (nothing reads the row back in the request), after what
    # the caller added (the user); queued for the login's audit event (one statement with it
    # on PostgreSQL: bridge.values)
    values.insert_rows(db, _SESSIONS, [row], later=True)


_SESSIONS: Table = LoginSession.__table__  # type: ignore[assignment]


def authenticated_at(login: LoginSession) -> datetime:
    """When the person of a session authenticated: at the IdP if it said so, else at its start."""
    return login.authenticated or login.created


def current(db: Session, secret: str) -> tuple[LoginSession, User] | None:
    """The live session of a cookie secret and its user; None when ended, expired, suspended."""
    row = db.execute(
        select(LoginSession, User)
        .join(User, User.id == LoginSession.user_id)
        .where(LoginSession.secret_hash == secret_hash(secret))
    ).first()
    if row is None:
        return None
    login, user = row
    if login.ended is not None or login.expires <= utcnow() or user.active is False:
        return None
    return login, user


def end(store: Store, secret: str) -> LoginSession | None:
    """End the session of a cookie secret; returns it (for single logout) if it was live."""

    def work(db: Session) -> LoginSession | None:
        login = db.scalar(
            select(LoginSession).where(
                LoginSession.secret_hash == secret_hash(secret), LoginSession.ended.is_(None)
            )
        )
        if login is not None:
            login.ended = utcnow()
            authcodes.revoke_for_session(db, login.id)
            # Audited so the event feed (and back-channel logout) hears of the sign-out.
            audit.record(
                db,
                login.account_id,
                actor=f"user:{login.user_id}",
                action="session.end",
                target_type="user",
                target_id=str(login.user_id),
                after={"sid": str(login.id)},
            )
        return login

    return store.write(work)


def end_for_name_id(
    store: Store, account_id: int, idp_id: int, name_id: str, session_index: str | None
) -> int:
    """End the sessions an IdP's LogoutRequest names; returns how many."""

    def work(db: Session) -> int:
        stmt = update(LoginSession).where(
            LoginSession.account_id == account_id,
            LoginSession.idp_id == idp_id,
            LoginSession.name_id == name_id,
            LoginSession.ended.is_(None),
        )
        if session_index:
            stmt = stmt.where(LoginSession.session_index == session_index)
        return int(db.execute(stmt.values(ended=utcnow())).rowcount)  # type: ignore[attr-defined]

    return store.write(work)


def live_for_user(db: Session, user_id: uuid.UUID) -> list[LoginSession]:
    """The user's sessions that are still live, newest first."""
    return list(
        db.scalars(
            select(LoginSession)
            .where(
                LoginSession.user_id == user_id,
                LoginSession.ended.is_(None),
                LoginSession.expires > utcnow(),
            )
            .order_by(LoginSession.created.desc(), LoginSession.id.desc())
        )
    )


def end_by_admin(
    store: Store, account_id: int, user_id: uuid.UUID, session_id: int | None, *, actor: str
) -> int:
    """An admin ends one of a user's sessions (`session_id`) or all of them; each ending is
    audited as `session.end` (so the event feed and back-channel logout hear of it, as with a
    sign-out) with the admin as actor."""

    def work(db: Session) -> int:
        stmt = select(LoginSession).where(
            LoginSession.account_id == account_id,
            LoginSession.user_id == user_id,
            LoginSession.ended.is_(None),
        )
        if session_id is not None:
            stmt = stmt.where(LoginSession.id == session_id)
        live = db.scalars(stmt.with_for_update()).all()
        if not live:
            raise NotFound("no live session of this user to end")
        for login in live:
            login.ended = utcnow()
            authcodes.revoke_for_session(db, login.id)
            audit.record(
                db,
                account_id,
                actor=actor,
                action="session.end",
                target_type="user",
                target_id=str(user_id),
                after={"sid": str(login.id)},
            )
        return len(live)

    return store.write(work)


def csrf_token(secret: str) -> str:
    """The session's token for state-changing forms (sign-out): derived from the cookie's secret,
    so a page elsewhere cannot know it and nothing more is stored."""
    return hmac.new(secret.encode(), b"bridge-csrf", hashlib.sha256).hexdigest()


def csrf_ok(secret: str | None, given: str | None) -> bool:
    """Whether `given` is the CSRF token of `secret` (compared in constant time); no secret or
    no token is never valid. The console binds forms before sign-in (a one-time link's button)
    to the link's token the same way."""
    if not secret or not given:
        return False
    return hmac.compare_digest(csrf_token(secret), given.encode("ascii", "replace").decode())


def await_logout(store: Store, session_id: int, request_id: str) -> None:
    """Remember the LogoutRequest sent for an ended session, so its answer finds the IdP."""

    def work(db: Session) -> None:
        db.execute(
            update(LoginSession)
            .where(LoginSession.id == session_id)
            .values(logout_request_id=request_id)
        )

    store.write(work)


def idp_awaiting(db: Session, account_id: int, request_id: str) -> int | None:
    """The IdP a LogoutRequest of ours went to (by its ID), if we sent it for this account."""
    return db.scalar(
        select(LoginSession.idp_id).where(
            LoginSession.account_id == account_id, LoginSession.logout_request_id == request_id
        )
    )
