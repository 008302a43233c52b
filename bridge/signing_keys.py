"""The OIDC issuer's signing keys (ES256, P-256): made on first use, sealed at rest, rotated.

The newest key signs ID tokens and logout tokens until `signs_until`; a key stays in the JWKS
until `not_after`, a day past its last signature (longer than any ID token lives), so a relying
party that cached the JWKS keeps verifying across a rotation. Two processes making the first key
at once both succeed: two keys are published and the newer signs.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge import sealing
from bridge.models import OidcKey, utcnow
from bridge.store import Store

ALG = "ES256"
SIGNS_FOR = datetime.timedelta(days=90)
PUBLISHED_AFTER = datetime.timedelta(days=1)


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private_pem: bytes


def _new(db: Session, secret_key: str, now: datetime.datetime) -> OidcKey:
    key = ECKey.generate_key("P-256")
    pem = key.as_pem(private=True)
    row = OidcKey(
        kid=key.thumbprint(),
        alg=ALG,
        public_jwk={
            **key.as_dict(private=False),
            "use": "sig",
            "alg": ALG,
            "kid": key.thumbprint(),
        },
        key_sealed=sealing.seal(secret_key, pem),
        created=now,
        signs_until=now + SIGNS_FOR,
        not_after=now + SIGNS_FOR + PUBLISHED_AFTER,
    )
    db.add(row)
    db.flush()
    return row


def current(store: Store, secret_key: str) -> SigningKey:
    """The key that signs now, making one when none is valid."""
    now = utcnow()
    with store.read() as db:
        row = _signing(db, now)
    if row is None:

        def work(db: Session) -> OidcKey:
            return _signing(db, now) or _new(db, secret_key, now)

        row = store.write(work)
    return SigningKey(row.kid, row.alg, sealing.unseal(secret_key, row.key_sealed))


def _signing(db: Session, now: datetime.datetime) -> OidcKey | None:
    return db.scalar(
        select(OidcKey)
        .where(OidcKey.signs_until > now)
        .order_by(OidcKey.created.desc(), OidcKey.id.desc())
        .limit(1)
    )


def rotate(store: Store, secret_key: str) -> str:
    """A new key signs from now on; the previous one stays published until its not_after."""

    def work(db: Session) -> str:
        now = utcnow()
        for old in db.scalars(select(OidcKey).where(OidcKey.signs_until > now)):
            old.signs_until = now
            old.not_after = now + PUBLISHED_AFTER
        return _new(db, secret_key, now).kid

    return store.write(work)


def jwks(db: Session) -> dict[str, Any]:
    """The JWK Set relying parties verify with: every key not yet past not_after."""
    rows = db.scalars(
        select(OidcKey).where(OidcKey.not_after > utcnow()).order_by(OidcKey.created.desc())
    )
    return {"keys": [row.public_jwk for row in rows]}


def sign(key: SigningKey, claims: dict[str, Any], *, typ: str | None = None) -> str:
    """A compact JWS of `claims` with this key (kid in the header)."""
    header: dict[str, Any] = {"alg": key.alg, "kid": key.kid}
    if typ:
        header["typ"] = typ
    return jwt.encode(header, claims, ECKey.import_key(key.private_pem), algorithms=[key.alg])
