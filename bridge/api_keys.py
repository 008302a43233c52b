"""Management API keys: issued (shown once), listed, revoked, and checked on every API request.

A key is `ibk_` + 256 random bits; only its SHA-256 is stored (a random key needs no slow hash).
The key decides the account. Scopes are ranked: `read` reads; `write` also changes users, groups
and manual access; `admin` also changes IdPs, SCIM tokens, API keys and policy. `last_used` is
written at most once a minute per key, so reads do not turn into writes.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bridge import audit
from bridge.accounts import LAST_USED_EVERY, get_account, hash_token
from bridge.errors import Conflict, InvalidInput, NotFound, Unauthorized
from bridge.models import Account, ApiKey, utcnow
from bridge.store import Store

KEY_PREFIX = "ibk_"  # a marker that helps secret scanners find leaked keys
SCOPES = ("read", "write", "admin")
MAX_EXPIRY_DAYS = 3650


def allows(scope: str, needed: str) -> bool:
    """Whether a key of `scope` may do what needs `needed` (scopes are ranked)."""
    return SCOPES.index(scope) >= SCOPES.index(needed)


@dataclass(frozen=True)
class IssuedKey:
    id: int
    raw: str
    expires: datetime | None


def issue(
    store: Store,
    slug: str,
    *,
    scope: str,
    label: str = "",
    expires_days: int | None = None,
    actor: str,
) -> IssuedKey:
    """A new API key for the account; the raw value is returned once, only its hash is kept."""
    if scope not in SCOPES:
        raise InvalidInput(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    if expires_days is not None and not 1 <= expires_days <= MAX_EXPIRY_DAYS:
        raise InvalidInput(f"expiry must be between 1 and {MAX_EXPIRY_DAYS} days")
    if len(label) > 200:
        raise InvalidInput("a label is at most 200 characters")
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    prefix = raw[: len(KEY_PREFIX) + 6]

    def work(db: Session) -> IssuedKey:
        account = get_account(db, slug)
        expires = None if expires_days is None else utcnow() + timedelta(days=expires_days)
        key = ApiKey(
            account_id=account.id,
            label=label,
            scope=scope,
            prefix=prefix,
            key_hash=hash_token(raw),
            created_by=actor,
            expires=expires,
        )
        db.add(key)
        db.flush()
        audit.record(
            db,
            account.id,
            actor=actor,
            action="api_key.issue",
            target_type="api_key",
            target_id=str(key.id),
            after={
                "label": label,
                "prefix": prefix,
                "scope": scope,
                "expires": expires and expires.isoformat(),
            },
        )
        return IssuedKey(key.id, raw, expires)

    return store.write(work)


def list_keys(db: Session, account_id: int) -> list[ApiKey]:
    return list(
        db.scalars(select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.id))
    )


def revoke(store: Store, account_id: int, key_id: int, *, actor: str) -> ApiKey:
    """Revoke a key at once; a revoked key authenticates nothing."""

    def work(db: Session) -> ApiKey:
        key = db.scalar(select(ApiKey).where(ApiKey.account_id == account_id, ApiKey.id == key_id))
        if key is None:
            raise NotFound(f"no API key {key_id}")
        if key.revoked is not None:
            raise Conflict(f"API key {key_id} was already revoked")
        key.revoked = utcnow()
        audit.record(
            db,
            account_id,
            actor=actor,
            action="api_key.revoke",
            target_type="api_key",
            target_id=str(key_id),
            before={"revoked": None},
            after={"revoked": key.revoked.isoformat()},
        )
        return key

    return store.write(work)


def authenticate(store: Store, raw: str) -> tuple[Account, ApiKey]:
    """The account and key a bearer value belongs to, or Unauthorized (unknown, revoked,
    expired). Records when the key was last used."""
    digest = hash_token(raw)
    with store.read() as db:
        row = db.execute(
            select(ApiKey, Account)
            .join(Account, Account.id == ApiKey.account_id)
            .where(ApiKey.key_hash == digest)
        ).first()
        if row is not None:  # values, not live rows: the last-used write below expires those
            db.expunge(row.ApiKey)
            db.expunge(row.Account)
    if row is None or not hmac.compare_digest(row.ApiKey.key_hash, digest):
        raise Unauthorized("unknown API key")
    key, account = row.ApiKey, row.Account
    now = utcnow()
    if key.revoked is not None:
        raise Unauthorized("this API key was revoked")
    if key.expires is not None and key.expires <= now:
        raise Unauthorized("this API key has expired")
    if key.last_used is None or now - key.last_used > LAST_USED_EVERY:
        store.write(
            lambda db: db.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used=now))
        )
    return account, key


def describe(key: ApiKey) -> dict[str, object]:
    """A key as plain data (never its value)."""
    return {
        "id": key.id,
        "label": key.label,
        "scope": key.scope,
        "prefix": key.prefix,
        "created": key.created.isoformat(timespec="seconds"),
        "created_by": key.created_by,
        "expires": key.expires and key.expires.isoformat(timespec="seconds"),
        "last_used": key.last_used and key.last_used.isoformat(timespec="seconds"),
        "revoked": key.revoked and key.revoked.isoformat(timespec="seconds"),
    }
