"""An account's SP key pairs: made on first use, kept sealed in the store, rotated with overlap.

The newest key that is not retired signs AuthnRequests and decrypts assertions; every key not
retired is published in the metadata (and tried for decryption), so an IdP that still encrypts
to the previous certificate keeps working until that key is retired.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from bridge import audit, certs, sealing
from bridge.models import SpKey, utcnow
from bridge.store import Store

VALID_FOR = datetime.timedelta(days=3 * 365)


@dataclass(frozen=True)
class KeyPair:
    id: int
    cert_pem: str
    key_pem: str

    @property
    def cert_b64(self) -> str:
        """The certificate as python3-saml and metadata want it: one line of base64 DER."""
        return "".join(line for line in self.cert_pem.splitlines() if "-----" not in line)


def active(store: Store, account_id: int, slug: str, secret_key: str) -> list[KeyPair]:
    """The account's keys, newest first, making the first one when there is none."""
    with store.read() as db:
        rows = db.execute(_ACTIVE, {"account_id": account_id}).all()
    if not rows:
        store.write(lambda db: _ensure(db, account_id, slug, secret_key))
        with store.read() as db:
            rows = db.execute(_ACTIVE, {"account_id": account_id}).all()
    return unsealed(rows, secret_key)


def unsealed(rows: Iterable[Any], secret_key: str) -> list[KeyPair]:
    """Key pairs from rows of ACTIVE_COLUMNS (a caller may read them with other things)."""
    return [_pair(r.key_id, r.cert_pem, r.key_sealed, secret_key) for r in rows]


# What a key pair is made of, and the order `active` gives them in (newest first).
# Core columns of the table (no ORM statement: saml.views reads them with the account).
SP_KEYS: Table = SpKey.__table__  # type: ignore[assignment]
ACTIVE_COLUMNS = (SP_KEYS.c.id.label("key_id"), SP_KEYS.c.cert_pem, SP_KEYS.c.key_sealed)
ACTIVE_ORDER = (SP_KEYS.c.created.desc(), SP_KEYS.c.id.desc())
_ACTIVE = (  # built once
    select(*ACTIVE_COLUMNS)
    .where(SP_KEYS.c.account_id == bindparam("account_id"), SP_KEYS.c.retired.is_(None))
    .order_by(*ACTIVE_ORDER)
)


@lru_cache(maxsize=256)
def _pair(key_id: int, cert_pem: str, key_sealed: str, secret_key: str) -> KeyPair:
    """A stored key pair, unsealed once per process (a row's key never changes: rotation adds a
    row); the same object every time, so the SAML settings built on it are found cached."""
    return KeyPair(key_id, cert_pem, sealing.unseal(secret_key, key_sealed).decode())


def rotate(store: Store, account_id: int, slug: str, secret_key: str, *, actor: str) -> int:
    """Add a new key pair that signs from now on; the old ones stay published until retired."""

    def work(db: Session) -> int:
        row = _new(db, account_id, slug, secret_key)
        audit.record(
            db,
            account_id,
            actor=actor,
            action="sp_key.rotate",
            target_type="sp_key",
            target_id=str(row.id),
            after={"not_after": row.not_after.isoformat()},
        )
        return row.id

    return store.write(work)


def retire(store: Store, account_id: int, key_id: int, *, actor: str) -> None:
    """Stop publishing and using a key (after the IdPs have the new certificate)."""

    def work(db: Session) -> None:
        row = db.scalar(select(SpKey).where(SpKey.account_id == account_id, SpKey.id == key_id))
        if row is None or row.retired is not None:
            return
        if len(_rows(db, account_id)) < 2:
            from bridge.errors import Conflict

            raise Conflict("cannot retire the only key; rotate first")
        row.retired = utcnow()
        audit.record(
            db,
            account_id,
            actor=actor,
            action="sp_key.retire",
            target_type="sp_key",
            target_id=str(key_id),
        )

    store.write(work)


def _rows(db: Session, account_id: int) -> list[SpKey]:
    return list(
        db.scalars(
            select(SpKey)
            .where(SpKey.account_id == account_id, SpKey.retired.is_(None))
            .order_by(SpKey.created.desc(), SpKey.id.desc())
        )
    )


def _ensure(db: Session, account_id: int, slug: str, secret_key: str) -> None:
    if not _rows(db, account_id):  # another process may have made it meanwhile
        _new(db, account_id, slug, secret_key)


def _new(db: Session, account_id: int, slug: str, secret_key: str) -> SpKey:
    key_pem, cert_pem = certs.self_signed(f"identity-bridge {slug}", VALID_FOR)
    row = SpKey(
        account_id=account_id,
        cert_pem=cert_pem.decode(),
        key_sealed=sealing.seal(secret_key, key_pem),
        not_after=utcnow() + VALID_FOR,
    )
    db.add(row)
    db.flush()
    return row
