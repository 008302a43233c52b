"""Who may administer an account in the console: admin sessions and one-time sign-in links.

People whose role is `master_admin` or `admin` may enter an account's console, through the
account's own SSO (a session opened by a SAML login) or, before SSO works, through a one-time
sign-in link (`idbridge console link`): 256-bit random, only its SHA-256 kept, valid ten minutes,
redeemed once. Redeeming is one transaction: the link is claimed by a conditional UPDATE (two
concurrent redeems cannot both win), the role is checked again, the session opened, the use
audited. A session only ever opens the console of its own account.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bridge import audit, sessions
from bridge.accounts import get_account
from bridge.errors import Conflict, Forbidden, NotFound
from bridge.models import Account, OneTimeLink, RoleAssignment, User, fold, utcnow
from bridge.store import Store

ADMIN_ROLES = ("master_admin", "admin")
SIGN_IN = "signin"
LINK_MINUTES = 10
LINK_PREFIX = "ibl_"


@dataclass(frozen=True)
class Admin:
    """A person signed in to an account's console."""

    account_id: int
    slug: str
    account_name: str
    user_id: uuid.UUID
    user_name: str
    role: str

    @property
    def actor(self) -> str:
        """How their changes are signed in the audit log."""
        return f"console:{self.user_name}"


@dataclass(frozen=True)
class IssuedLink:
    raw: str
    user_name: str
    expires: datetime


def role_of(db: Session, user_id: uuid.UUID) -> str | None:
    return db.scalar(select(RoleAssignment.role).where(RoleAssignment.user_id == user_id))


def _admin(db: Session, account: Account, user: User) -> Admin:
    """The person as an admin of `account`, or Forbidden saying why not."""
    role = role_of(db, user.id)
    if user.active is False:
        raise Forbidden(f"{user.user_name} is deactivated")
    if role not in ADMIN_ROLES:
        raise Forbidden(
            f"{user.user_name} has the role {role or 'none'}; only master_admin and admin "
            "may use the console"
        )
    return Admin(account.id, account.slug, account.name, user.id, user.user_name, role)


def signed_in(store: Store, slug: str, secret: str | None) -> Admin | None:
    """The admin whose live session `secret` is in account `slug`.

    None when nobody is signed in to this account (a session of another account counts as none);
    Forbidden when the person is signed in here but is not an admin; NotFound for no account.
    """
    with store.read() as db:
        account = get_account(db, slug)
        found = sessions.current(db, secret) if secret else None
        if found is None or found[1].account_id != account.id:
            return None
        return _admin(db, account, found[1])


def link_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def new_link(
    db: Session,
    account_id: int,
    purpose: str,
    raw: str,
    lifetime: timedelta,
    *,
    actor: str,
    scopes: list[str] | None = None,
    user_id: uuid.UUID | None = None,
) -> OneTimeLink:
    """Store a one-time link (only the hash of `raw`), valid for `lifetime`; flushed, so its id
    can go into the audit event the caller writes."""
    link = OneTimeLink(
        account_id=account_id,
        purpose=purpose,
        user_id=user_id,
        token_hash=link_hash(raw),
        scopes=scopes or [],
        created_by=actor,
        expires=utcnow() + lifetime,
    )
    db.add(link)
    db.flush()
    return link


def issue_link(
    store: Store, slug: str, user_name: str, *, actor: str, minutes: int = LINK_MINUTES
) -> IssuedLink:
    """A one-time sign-in link for an admin of the account; the raw token is returned once."""
    raw = LINK_PREFIX + secrets.token_urlsafe(32)

    def work(db: Session) -> IssuedLink:
        account = get_account(db, slug)
        user = db.scalar(
            select(User).where(User.account_id == account.id, User.user_name_key == fold(user_name))
        )
        if user is None:
            raise NotFound(f"no user {user_name!r} in account {slug!r}")
        admin = _admin(db, account, user)
        link = new_link(
            db, account.id, SIGN_IN, raw, timedelta(minutes=minutes), actor=actor, user_id=user.id
        )
        audit.record(
            db,
            account.id,
            actor=actor,
            action="console.link_issue",
            target_type="user",
            target_id=str(user.id),
            after={"user": admin.user_name, "expires": link.expires.isoformat(timespec="seconds")},
        )
        return IssuedLink(raw, user.user_name, link.expires)

    return store.write(work)


def usable_link(db: Session, account: Account, raw: str, purpose: str) -> OneTimeLink:
    link = db.scalar(
        select(OneTimeLink).where(
            OneTimeLink.token_hash == link_hash(raw),
            OneTimeLink.account_id == account.id,
            OneTimeLink.purpose == purpose,
        )
    )
    if link is None:
        raise NotFound("this link is not one we issued for this account")
    if link.used is not None:
        raise Conflict("this link was already used: ask for a new one")
    if link.expires <= utcnow():
        raise Conflict("this link has expired: ask for a new one")
    return link


def use_up(db: Session, link: OneTimeLink) -> OneTimeLink:
    """Mark a usable link used, once: a conditional UPDATE, so of two concurrent redeems one
    wins and the other gets Conflict."""
    claimed = db.execute(
        update(OneTimeLink)
        .where(OneTimeLink.id == link.id, OneTimeLink.used.is_(None))
        .values(used=utcnow())
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict("this link was already used: ask for a new one")
    return link


def peek_link(store: Store, slug: str, raw: str) -> str:
    """Whose sign-in link this is, without using it up (a mail scanner's GET must not)."""
    with store.read() as db:
        account = get_account(db, slug)
        link = usable_link(db, account, raw, SIGN_IN)
        return db.get_one(User, link.user_id).user_name


def redeem_link(store: Store, slug: str, raw: str, secret: str) -> tuple[Admin, int]:
    """Use a sign-in link once: open a session for `secret`; returns the admin and minutes."""

    def work(db: Session) -> tuple[Admin, int]:
        account = get_account(db, slug)
        link = use_up(db, usable_link(db, account, raw, SIGN_IN))
        admin = _admin(db, account, db.get_one(User, link.user_id))
        sessions.start_in(db, secret, account.id, admin.user_id, minutes=account.session_minutes)
        audit.record(
            db,
            account.id,
            actor=admin.actor,
            action="console.link_sign_in",
            target_type="user",
            target_id=str(admin.user_id),
            after={"link": link.id},
        )
        return admin, account.session_minutes

    return store.write(work)
