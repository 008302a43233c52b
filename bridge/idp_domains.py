"""E-mail domains of an account's IdPs: which IdP a `login_hint` at /oidc/authorize goes to.

"Verified" here means declared by the account's admin (the CLI or an admin-scope API key), not
proven by a DNS record: the bridge cannot reach DNS in every deployment, and a domain routes only
within its own account, so a wrong declaration misroutes only that account's own people (to a
chooser or an IdP of the same account, never to another account's IdP). One IdP per domain within
an account (a unique constraint holds it under concurrent writes); other accounts may declare the
same domain. Domains are kept lower-case in their ASCII (IDNA) form.
"""

from __future__ import annotations

import re

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bridge.errors import Conflict, InvalidInput
from bridge.models import IdentityProvider, IdpDomain

MAX_PER_IDP = 50
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def normalize(domain: str) -> str:
    """The domain's key (lower case, IDNA ASCII form), or InvalidInput naming what is wrong."""
    text = domain.strip().lower()
    if not text or len(text) > 253:
        raise InvalidInput(f"domain {domain[:100]!r} is empty or over 253 characters")
    try:
        ascii_form = text.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidInput(f"domain {domain[:100]!r} is not a valid domain name") from None
    labels = ascii_form.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise InvalidInput(
            f"domain {domain[:100]!r} must be a domain name such as example.com"
            " (letters, digits and hyphens, no wildcard, no trailing dot)"
        )
    if labels[-1].isdigit():
        raise InvalidInput(f"domain {domain[:100]!r} is an address, not a domain name")
    return ascii_form


def of_hint(login_hint: str | None) -> str | None:
    """The domain of a `login_hint` that is an e-mail address (OIDC Core §3.1.2.1), or None."""
    if not login_hint or "@" not in login_hint or len(login_hint) > 320:
        return None
    try:
        return normalize(login_hint.rpartition("@")[2])
    except InvalidInput:
        return None


def of_idp(db: Session, idp_id: int) -> list[str]:
    stmt = select(IdpDomain.domain).where(IdpDomain.idp_id == idp_id)
    return list(db.scalars(stmt.order_by(IdpDomain.domain)))


def route(db: Session, account_id: int, login_hint: str | None) -> IdentityProvider | None:
    """The enabled IdP of this account whose domain is the hint's, if any."""
    domain = of_hint(login_hint)
    if domain is None:
        return None
    return db.scalar(
        select(IdentityProvider)
        .join(IdpDomain, IdpDomain.idp_id == IdentityProvider.id)
        .where(
            IdpDomain.account_id == account_id,
            IdpDomain.domain == domain,
            IdentityProvider.account_id == account_id,
            IdentityProvider.disabled.is_(False),
        )
    )


def normalize_all(domains: list[str]) -> list[str]:
    """The distinct keys of `domains`, sorted; InvalidInput for a bad one or too many."""
    wanted = sorted({normalize(d) for d in domains})
    if len(wanted) > MAX_PER_IDP:
        raise InvalidInput(f"at most {MAX_PER_IDP} domains per IdP")
    return wanted


def set_in(
    db: Session, idp: IdentityProvider, domains: list[str], *, actor: str
) -> tuple[list[str], list[str]]:
    """Make `domains` the IdP's whole list inside the caller's transaction (the caller audits);
    a domain another IdP of the account has is a Conflict. Returns (before, after)."""
    wanted = normalize_all(domains)
    taken = db.execute(
        select(IdpDomain.domain, IdentityProvider.name)
        .join(IdentityProvider, IdentityProvider.id == IdpDomain.idp_id)
        .where(
            IdpDomain.account_id == idp.account_id,
            IdpDomain.domain.in_(wanted),
            IdpDomain.idp_id != idp.id,
        )
        .order_by(IdpDomain.domain)
    ).first()
    if taken is not None:
        raise Conflict(f"domain {taken.domain} is already IdP {taken.name!r}'s")
    before = of_idp(db, idp.id)
    db.execute(delete(IdpDomain).where(IdpDomain.idp_id == idp.id, IdpDomain.domain.not_in(wanted)))
    db.add_all(
        IdpDomain(account_id=idp.account_id, idp_id=idp.id, domain=d, created_by=actor)
        for d in wanted
        if d not in before
    )
    db.flush()  # a concurrent claim of the same domain fails here; Store.write runs us again
    return before, wanted
