"""Self-serve set-up links: a one-time, expiring page for a customer's IT admin who has no
account in our product yet (`idbridge console setup-link`).

A link names the steps it may do, `sso` (connect an IdP from its metadata) and `scim` (get one
SCIM token, shown once), and can do nothing else. Each step is done once: it is claimed in the
same transaction that does it (the link's row locked), so two tabs cannot both do it; when
every step is done the link is used up. Only the token's SHA-256 is kept; every use is audited
with the link as actor (`setup-link:<id>`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge import accounts, audit, idps
from bridge.accounts import get_account
from bridge.admins import link_hash, new_link, usable_link
from bridge.errors import Conflict, InvalidInput
from bridge.models import IdentityProvider, OneTimeLink, utcnow
from bridge.store import Store

SETUP = "setup"
STEPS = ("sso", "scim")
PREFIX = "ibu_"
MAX_HOURS = 24 * 14


@dataclass(frozen=True)
class IssuedSetup:
    raw: str
    steps: list[str]
    expires: datetime


@dataclass(frozen=True)
class SetupState:
    """What a link may still do."""

    link_id: int
    steps: list[str]
    expires: datetime

    @property
    def actor(self) -> str:
        return f"setup-link:{self.link_id}"


def issue(store: Store, slug: str, steps: list[str], *, hours: int, actor: str) -> IssuedSetup:
    """A set-up link for the named steps (both when none is named), valid `hours`."""
    wanted = [s for s in STEPS if s in (steps or STEPS)]
    unknown = set(steps) - set(STEPS)
    if unknown:
        raise InvalidInput(f"unknown set-up steps {sorted(unknown)}; use {', '.join(STEPS)}")
    if not 1 <= hours <= MAX_HOURS:
        raise InvalidInput(f"a set-up link lasts 1 to {MAX_HOURS} hours")
    raw = PREFIX + secrets.token_urlsafe(32)

    def work(db: Session) -> IssuedSetup:
        account = get_account(db, slug)
        link = new_link(
            db, account.id, SETUP, raw, timedelta(hours=hours), actor=actor, scopes=wanted
        )
        audit.record(
            db,
            account.id,
            actor=actor,
            action="console.setup_link_issue",
            target_type="setup_link",
            target_id=str(link.id),
            after={"steps": wanted, "expires": link.expires.isoformat(timespec="seconds")},
        )
        return IssuedSetup(raw, wanted, link.expires)

    return store.write(work)


def state(store: Store, slug: str, raw: str) -> SetupState:
    """What the link may still do (NotFound or Conflict when it cannot be used)."""
    with store.read() as db:
        link = usable_link(db, get_account(db, slug), raw, SETUP)
        return SetupState(link.id, list(link.scopes), link.expires)


def require(store: Store, slug: str, raw: str, step: str) -> None:
    """Refuse at once a step the link may not do (before fetching anything for it)."""
    if step not in state(store, slug, raw).steps:
        raise Conflict(f"this link may not do {step!r} (again)")


def progress(store: Store, slug: str, raw: str) -> SetupState:
    """What is left right after a step this request did (the last step uses the link up)."""
    with store.read() as db:
        account = get_account(db, slug)
        link = db.scalars(
            select(OneTimeLink).where(
                OneTimeLink.token_hash == link_hash(raw),
                OneTimeLink.account_id == account.id,
                OneTimeLink.purpose == SETUP,
            )
        ).one()
        return SetupState(link.id, list(link.scopes), link.expires)


def _claim(db: Session, slug: str, raw: str, step: str) -> OneTimeLink:
    account = get_account(db, slug)
    found = usable_link(db, account, raw, SETUP)
    link = db.scalars(select(OneTimeLink).where(OneTimeLink.id == found.id).with_for_update()).one()
    if step not in link.scopes:
        raise Conflict(f"this link may not do {step!r} (again)")
    link.scopes = [s for s in link.scopes if s != step]
    if not link.scopes:
        link.used = utcnow()
    return link


def connect_idp(
    store: Store, slug: str, raw: str, xml: str, *, name: str | None, metadata_url: str | None
) -> IdentityProvider:
    """The `sso` step: register the IdP from its metadata."""

    def work(db: Session) -> IdentityProvider:
        link = _claim(db, slug, raw, "sso")
        return idps.add_in(
            db, slug, xml, name=name, metadata_url=metadata_url, actor=f"setup-link:{link.id}"
        )

    return store.write(work)


def scim_token(store: Store, slug: str, raw: str, *, label: str) -> accounts.IssuedToken:
    """The `scim` step: one SCIM token, returned once."""

    def work(db: Session) -> accounts.IssuedToken:
        link = _claim(db, slug, raw, "scim")
        return accounts.issue_token_in(db, slug, label=label, actor=f"setup-link:{link.id}")

    return store.write(work)
