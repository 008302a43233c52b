"""IdP signing certificates that expire soon become `idp.certificate_expiring` audit events (and
so events and webhooks), once per certificate per threshold.

Thresholds are 30, 7 and 1 days before expiry and 0 (expired). A check announces the tightest
threshold a certificate has crossed, unless that one (or a tighter one) was announced before; the
IdP row keeps what was announced (`expiry_notices`, by the certificate's SHA-256). The IdP row is
locked (FOR UPDATE on PostgreSQL; SQLite's write lock serialises writers) before it is read, so
two workers checking at once write one event. `idbridge worker` checks every few minutes;
`idbridge idps check-expiry` checks once (cron, or by hand).
"""

from __future__ import annotations

import functools
import hashlib
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge import audit, idps
from bridge.models import IdentityProvider, utcnow
from bridge.store import Store

THRESHOLDS = (30, 7, 1, 0)  # days before expiry; 0: has expired


def _threshold(ends: datetime, now: datetime) -> int | None:
    """The tightest threshold a certificate ending at `ends` has crossed by `now`, if any."""
    left = ends - now
    crossed = [t for t in THRESHOLDS if left <= timedelta(days=t)]
    return min(crossed) if crossed else None


def _due(
    certificates: dict[str, Any], notices: dict[str, Any] | None, now: datetime
) -> list[tuple[str, int, str, datetime]]:
    """(fingerprint, threshold, subject, not_after) of each certificate to announce now."""
    found = []
    for b64 in certificates.get("signing", []):
        cert = idps.parse_certificate(b64)
        threshold = _threshold(cert.not_valid_after_utc, now)
        if threshold is None:
            continue
        fingerprint = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
        announced = (notices or {}).get(fingerprint)
        if announced is None or threshold < announced:
            found.append(
                (fingerprint, threshold, cert.subject.rfc4514_string(), cert.not_valid_after_utc)
            )
    return found


def check(store: Store, now: datetime | None = None) -> int:
    """Announce what is due for every enabled IdP of every account; returns how many events."""
    now = now or utcnow()
    with store.read() as db:  # the columns needed, not every IdP's metadata document
        rows = db.execute(
            select(
                IdentityProvider.id,
                IdentityProvider.certificates,
                IdentityProvider.expiry_notices,
            ).where(IdentityProvider.disabled.is_(False))
        ).all()
    candidates = [row.id for row in rows if _due(row.certificates, row.expiry_notices, now)]
    written = 0
    for idp_id in candidates:
        written += store.write(functools.partial(_announce, idp_id=idp_id, now=now))
    return written


def _announce(db: Session, idp_id: int, now: datetime) -> int:
    stmt = select(IdentityProvider).where(IdentityProvider.id == idp_id)
    if db.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    idp = db.scalar(stmt)
    if idp is None or idp.disabled:
        return 0
    due = _due(idp.certificates, idp.expiry_notices, now)
    present = {
        hashlib.sha256(idps.parse_certificate(b64).public_bytes(Encoding.DER)).hexdigest()
        for b64 in idp.certificates.get("signing", [])
    }
    notices = {k: v for k, v in (idp.expiry_notices or {}).items() if k in present}
    for fingerprint, threshold, subject, ends in due:
        notices[fingerprint] = threshold
        audit.record(
            db,
            idp.account_id,
            actor="bridge:expiry",
            action="idp.certificate_expiring",
            target_type="idp",
            target_id=idp.name,
            after={
                "name": idp.name,
                "entity_id": idp.entity_id,
                "certificate": {
                    "subject": subject,
                    "sha256": fingerprint,
                    "not_after": ends.isoformat(timespec="seconds"),
                },
                "threshold_days": threshold,
                "days_left": max(0, (ends - now).days),
            },
        )
    idp.expiry_notices = notices  # a new dict: the JSON column sees the change
    return len(due)
