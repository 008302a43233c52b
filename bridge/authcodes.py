"""Authorization codes and access tokens of the OIDC provider (only their hashes are stored).

A code lives 60 seconds and is claimed once, atomically (an UPDATE that only one of two
concurrent token requests can win). A second use of a code is an attack or a bug either way:
every token issued from it is revoked (RFC 6749 §4.1.2, RFC 9700 §4.5). Tokens carry the login
session they came from, so ending that session (sign-out, deactivation) revokes them.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from bridge import audit
from bridge.models import OidcClient, OidcCode, OidcToken, User, utcnow
from bridge.store import Store

log = logging.getLogger(__name__)
CODE_LIFETIME = timedelta(seconds=60)
TOKEN_LIFETIME = timedelta(hours=1)


def digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class Code:
    """A claimed code: what the token endpoint needs to issue tokens."""

    code_hash: str
    client_pk: int
    user_id: uuid.UUID
    session_id: int | None
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: datetime


def save_code(
    store: Store,
    raw: str,
    *,
    client_pk: int,
    user_id: uuid.UUID,
    session_id: int | None,
    redirect_uri: str,
    scope: str,
    nonce: str | None,
    code_challenge: str | None,
    code_challenge_method: str | None,
    auth_time: datetime,
) -> None:
    """Store a new code (hashed) for the token endpoint to redeem once."""
    row = OidcCode(
        code_hash=digest(raw),
        client_pk=client_pk,
        user_id=user_id,
        session_id=session_id,
        redirect_uri=redirect_uri,
        scope=scope,
        nonce=nonce,
        code_challenge=code_challenge,
        code_challenge_method=code_challenge_method,
        auth_time=auth_time,
        expires=utcnow() + CODE_LIFETIME,
    )
    store.write(lambda db: db.add(row))


def claim_code(store: Store, raw: str, client_pk: int) -> Code | None:
    """The code, used up now; None when unknown, another client's, expired or already used
    (then whatever it issued is revoked)."""
    code_hash = digest(raw)

    def work(db: Session) -> Code | None:
        now = utcnow()
        won = db.execute(
            update(OidcCode)
            .where(
                OidcCode.code_hash == code_hash,
                OidcCode.client_pk == client_pk,
                OidcCode.used.is_(None),
                OidcCode.expires > now,
            )
            .values(used=now)
        ).rowcount  # type: ignore[attr-defined]
        row = db.get(OidcCode, code_hash)
        if won == 1 and row is not None:
            return Code(
                row.code_hash,
                row.client_pk,
                row.user_id,
                row.session_id,
                row.redirect_uri,
                row.scope,
                row.nonce,
                row.code_challenge,
                row.code_challenge_method,
                row.auth_time,
            )
        if row is not None and row.client_pk == client_pk and row.used is not None:
            revoked = _revoke_where(db, OidcToken.code_hash == code_hash, now)
            log.warning("authorization code replayed: %d token(s) revoked", revoked)
            _audit_revoked(db, row.client_pk, row.user_id, revoked, "code_replayed")
        return None

    return store.write(work)


def issue_token(store: Store, raw: str, code: Code, *, expires_in: int) -> None:
    """Store an access token (hashed) issued from `code`."""
    row = OidcToken(
        token_hash=digest(raw),
        client_pk=code.client_pk,
        user_id=code.user_id,
        session_id=code.session_id,
        code_hash=code.code_hash,
        scope=code.scope,
        expires=utcnow() + timedelta(seconds=expires_in),
    )

    def work(db: Session) -> None:
        db.add(row)
        db.flush()
        client = db.get_one(OidcClient, code.client_pk)
        audit.record(
            db,
            client.account_id,
            actor=f"oidc:{client.client_id}",
            action="token.issued",
            target_type="user",
            target_id=str(code.user_id),
            after={"client": client.client_id, "scope": code.scope, "token": row.id},
        )

    store.write(work)


@dataclass(frozen=True)
class TokenInfo:
    client_pk: int
    user_id: uuid.UUID
    scope: str
    expires: datetime
    revoked: bool


def find_token(db: Session, raw: str) -> TokenInfo | None:
    """The access token `raw` names, live or not (None when unknown)."""
    row = db.scalar(select(OidcToken).where(OidcToken.token_hash == digest(raw)))
    if row is None:
        return None
    user = db.get(User, row.user_id)
    revoked = row.revoked is not None or user is None or user.active is False
    return TokenInfo(row.client_pk, row.user_id, row.scope, row.expires, revoked)


def revoke_for_user(db: Session, user_id: uuid.UUID) -> int:
    """Revoke every live token of a user, inside the caller's transaction."""
    return _revoke_where(db, OidcToken.user_id == user_id, utcnow())


def revoke_for_session(db: Session, session_id: int) -> int:
    """Revoke the tokens a login session led to (sign-out), inside the caller's transaction."""
    return _revoke_where(db, OidcToken.session_id == session_id, utcnow())


def purge(store: Store, keep: timedelta = timedelta(days=1)) -> int:
    """Delete codes and tokens expired for more than `keep` (run by the delivery workers)."""

    def work(db: Session) -> int:
        before = utcnow() - keep
        codes = db.execute(delete(OidcCode).where(OidcCode.expires < before)).rowcount  # type: ignore[attr-defined]
        tokens = db.execute(delete(OidcToken).where(OidcToken.expires < before)).rowcount  # type: ignore[attr-defined]
        return int(codes) + int(tokens)

    return store.write(work)


def _revoke_where(db: Session, condition: object, now: datetime) -> int:
    result = db.execute(
        update(OidcToken)
        .where(condition, OidcToken.revoked.is_(None))  # type: ignore[arg-type]
        .values(revoked=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _audit_revoked(
    db: Session, client_pk: int, user_id: uuid.UUID, count: int, reason: str
) -> None:
    client = db.get_one(OidcClient, client_pk)
    audit.record(
        db,
        client.account_id,
        actor=f"oidc:{client.client_id}",
        action="token.revoked",
        target_type="user",
        target_id=str(user_id),
        after={"client": client.client_id, "tokens": count, "reason": reason},
    )
