"""An account at a glance: IdP certificates, SCIM use, refused logins, policy and audit health.

Read-only; composes the other services (idps, accounts, logins, policy, audit) so every screen
that shows an account's health reports the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bridge import accounts, audit, idps, logins, scim_log
from bridge.models import IdentityProvider, utcnow
from bridge.policy import policy_for
from bridge.store import Store

DAY = timedelta(hours=24)
# Verifying walks every event: the overview does it for chains up to this long, and otherwise
# leaves it to the audit page's button.
VERIFY_ON_SIGHT = 5000


@dataclass(frozen=True)
class IdpHealth:
    name: str
    entity_id: str
    expiries: list[datetime]
    expiring: bool


@dataclass(frozen=True)
class AuditHealth:
    events: int
    verified: bool
    intact: bool | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Overview:
    idps: list[IdpHealth]
    active_tokens: int
    last_scim_use: datetime | None
    last_scim_token: str | None
    failed_logins: dict[str, int]
    ok_logins: int
    policy_source: str
    policy_loaded: bool
    policy_error: str | None
    audit: AuditHealth
    since: datetime = field(default_factory=lambda: utcnow() - DAY)
    last_scim_request: dict[str, Any] | None = None


def of(store: Store, slug: str) -> Overview:
    """The account's overview, now."""
    with store.read() as db:
        account_id = accounts.get_account(db, slug).id
    # first: it ends the request's read transaction (bridge.scim_log.search), so that what
    # follows is read in one
    last_request = next(iter(scim_log.search(store, account_id, limit=1)), None)
    now = utcnow()
    since = now - DAY
    with store.read() as db:
        account = accounts.get_account(db, slug)
        idp_health = [_idp_health(idp, now) for idp in idps.list_for(db, account.id)]
        live = [t for t in accounts.list_tokens(db, slug) if t.revoked is None]
        used = [t for t in live if t.last_used is not None]
        last = max(used, key=lambda t: t.last_used or now) if used else None
        choice = policy_for(db, account, store.policies)
        events = account.audit_seq
        if events <= VERIFY_ON_SIGHT:
            count, broken = audit.verify(db, account.id)
            chain = AuditHealth(
                count, True, broken is None, None if broken is None else _says(broken)
            )
        else:
            chain = AuditHealth(events, False)
        return Overview(
            idps=idp_health,
            active_tokens=len(live),
            last_scim_use=last.last_used if last else None,
            last_scim_token=(last.label or last.prefix) if last else None,
            failed_logins=logins.failures_since(db, account.id, since),
            ok_logins=logins.successes_since(db, account.id, since),
            policy_source=choice.source,
            policy_loaded=choice.policy is not None,
            policy_error=choice.error,
            audit=chain,
            since=since,
            last_scim_request=last_request,
        )


def _idp_health(idp: IdentityProvider, now: datetime) -> IdpHealth:
    expiries = idps.certificate_expiries(idp)
    soon = bool(expiries) and expiries[0] - now < idps.EXPIRY_WARNING
    return IdpHealth(idp.name, idp.entity_id, expiries, soon)


def _says(broken: audit.Break) -> str:
    return f"event {broken.seq}: {broken.reason}"
