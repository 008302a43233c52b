"""IdP test logins: run a real SAML login against an account's IdP and report what the IdP sent
and what the policy would decide, without signing anyone in or provisioning anyone.

An admin (console button, or `POST /api/v1/idps/<name>/test-login` with an admin key) gets a
one-time URL (`ibt_` + 256 bits, only its SHA-256 kept, ten minutes, used once). Opening it and
pressing its button claims the link and sends an AuthnRequest whose pending row carries the
marker `test-login:<link id>` as its kept RelayState. The answer is validated exactly like a
real login (signature, audience, destination, InResponseTo, the browser that asked, replay), and
then, in one transaction: the pending request is used up, the assertion ID enters the replay
cache, the policy's decision is computed on the same Profile a login would use, and a
`test_login` line goes to the login log with an `idp.test_login` audit event signed by the
admin who asked. No user, membership, grant or session is written, and no session cookie is
set: the result is a page, nothing more. The real login path refuses a marked request.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

import policies
from bridge import audit, idps, logins, planning, profiles, provisioning
from bridge.accounts import get_account
from bridge.admins import new_link, usable_link, use_up
from bridge.errors import Conflict, NotFound
from bridge.identifiers import identifier_problem
from bridge.models import Account, AuthnRequest, IdentityProvider, OneTimeLink, User
from bridge.policy import PolicyRegistry, policy_for
from bridge.store import Store

PURPOSE = "test_login"
PREFIX = "ibt_"
MINUTES = 10
MARKER = "test-login:"  # the kept RelayState of a test login's pending AuthnRequest


@dataclass(frozen=True)
class IssuedTest:
    """A test-login URL, returned once (only the token's hash is kept)."""

    raw: str
    url: str
    idp: str
    expires: datetime


@dataclass(frozen=True)
class TestLink:
    """A usable test-login link: which IdP it tests and who asked for it."""

    link_id: int
    idp_id: int
    idp_name: str
    created_by: str
    expires: datetime


@dataclass
class Preview:
    """What a login with this assertion would do, computed without writing it."""

    user_name: str
    user_id: str | None = None  # the stored user it would sign in as, if any
    outcome: str = "update"  # update, create, or the typed reason it would be refused
    detail: str = ""
    policy_source: str = ""
    policy_error: str | None = None
    decision: dict[str, Any] | None = None
    profile: dict[str, Any] = field(default_factory=dict)

    @property
    def refused(self) -> bool:
        return self.outcome not in ("update", "create")


def start_url(base_url: str, slug: str, raw: str) -> str:
    return f"{base_url}/saml/{slug}/test-login/{raw}"


def marker(link_id: int) -> str:
    return f"{MARKER}{link_id}"


def link_of(relay_state: str | None) -> int | None:
    """The test link a pending request's kept RelayState names, or None for a real login."""
    if relay_state is None or not relay_state.startswith(MARKER):
        return None
    number = relay_state.removeprefix(MARKER)
    return int(number) if number.isdigit() else None


def issue(store: Store, slug: str, idp_name: str, *, base_url: str, actor: str) -> IssuedTest:
    """A one-time test-login URL for one IdP of the account (admins only: the callers check)."""
    raw = PREFIX + secrets.token_urlsafe(32)

    def work(db: Session) -> IssuedTest:
        account = get_account(db, slug)
        idp = idps.get(db, account.id, idp_name)
        if idp.disabled:
            raise Conflict(f"IdP {idp.name!r} is disabled: enable it before testing it")
        link = new_link(
            db,
            account.id,
            PURPOSE,
            raw,
            timedelta(minutes=MINUTES),
            actor=actor,
            scopes=[str(idp.id)],
        )
        audit.record(
            db,
            account.id,
            actor=actor,
            action="idp.test_login_issue",
            target_type="idp",
            target_id=idp.name,
            after={"link": link.id, "expires": link.expires.isoformat(timespec="seconds")},
        )
        return IssuedTest(raw, start_url(base_url, slug, raw), idp.name, link.expires)

    return store.write(work)


def _test_link(db: Session, account: Account, link: OneTimeLink) -> TestLink:
    idp_id = int(link.scopes[0]) if link.scopes and str(link.scopes[0]).isdigit() else None
    idp = db.get(IdentityProvider, idp_id) if idp_id is not None else None
    if idp is None or idp.account_id != account.id:
        raise NotFound("the IdP this test login was for has been removed")
    return TestLink(link.id, idp.id, idp.name, link.created_by, link.expires)


def peek(store: Store, slug: str, raw: str) -> TestLink:
    """What a link would test, without using it up (a link preview's GET must not)."""
    if not raw.startswith(PREFIX):
        raise NotFound("this link is not one we issued for this account")
    with store.read() as db:
        account = get_account(db, slug)
        return _test_link(db, account, usable_link(db, account, raw, PURPOSE))


def claim_in(db: Session, account: Account, raw: str) -> TestLink:
    """Use the link up, inside the transaction that records its AuthnRequest (once: a
    conditional UPDATE, so two tabs cannot both start from it)."""
    if not raw.startswith(PREFIX):
        raise NotFound("this link is not one we issued for this account")
    return _test_link(db, account, use_up(db, usable_link(db, account, raw, PURPOSE)))


def preview_in(
    db: Session,
    registry: PolicyRegistry | None,
    account: Account,
    idp: IdentityProvider,
    profile: policies.Profile,
) -> Preview:
    """What the login would do: the user it matches (as the login matches: SAML identity,
    externalId, userName; a verified e-mail when the IdP links by e-mail), whether it would be
    refused and why, and the policy's decision on the Profile the write path would evaluate
    (the stored user's SCIM attributes and groups under the assertion's attributes)."""
    found: User | None = None
    linked = provisioning.verified_email_owner(db, account, profile) if idp.link_by_email else None
    try:
        found = provisioning.match(db, account, profile, linked)
    except Conflict as exc:
        return Preview(profile.user_name, outcome="conflict", detail=exc.detail)
    result = Preview(profile.user_name, profile=_shown(profile))
    if found is None:
        problem = identifier_problem(profile.user_name.strip())
        if not profile.user_name.strip() or problem is not None:
            result.outcome, result.detail = "invalid_identifier", problem or "empty userName"
            return result
        if not idp.allow_jit:
            result.outcome = "user_not_provisioned"
            result.detail = f"no user {profile.user_name!r}, and this IdP does not create users"
            return result
        result.outcome = "create"
        seen = _new_user_profile(profile)
    else:
        result.user_id = str(found.id)
        result.user_name = found.user_name
        if found.active is False:
            result.outcome = "user_deactivated"
            result.detail = f"user {found.user_name!r} is deactivated"
        seen = profiles.stored(db, found, profile)
    choice = policy_for(db, account, registry)
    result.policy_source, result.policy_error = choice.source, choice.error
    if choice.policy is not None:
        result.decision = planning.decision_json(policies.evaluate(choice.policy, seen))
    return result


def _new_user_profile(profile: policies.Profile) -> policies.Profile:
    """The Profile a first login's new user is evaluated on (its fields as JIT stores them)."""
    fields = profile.fields
    values = {k: v for k, v in fields.items() if k in profiles.SCIM_PATHS}
    values.update(user_name=profile.user_name, external_id=profile.external_id, active=True)
    emails = tuple(str(e.get("value")) for e in fields.get("emails", []) if e.get("value"))
    return profiles.build(values, emails=emails, phones=(), groups=(), trigger=profile)


def _shown(profile: policies.Profile) -> dict[str, Any]:
    return {
        "userName": profile.user_name,
        "fields": {k: v for k, v in profile.fields.items()},
    }


def record_in(
    db: Session,
    account: Account,
    idp: IdentityProvider,
    link_id: int,
    *,
    name_id: str,
    preview: Preview,
) -> None:
    """The test login in the login log (reason `test_login`, no user: nobody signed in) and in
    the audit log, signed by the admin who asked for it."""
    link = db.get_one(OneTimeLink, link_id)
    decision = preview.decision or {}
    outcome = preview.outcome if not preview.refused else f"would be refused: {preview.outcome}"
    role = (decision.get("role") or {}).get("value")
    logins.record_test_in(
        db,
        account.id,
        idp_id=idp.id,
        name_id=name_id,
        detail=f"test login asked by {link.created_by}: {outcome}"
        + (f", role {role}" if role else ""),
    )
    audit.record(
        db,
        account.id,
        actor=link.created_by,
        action="idp.test_login",
        target_type="idp",
        target_id=idp.name,
        after={
            "link": link_id,
            "name_id": name_id,
            "user": preview.user_name,
            "outcome": preview.outcome,
            "role": role,
        },
    )


def pending_link(db: Session, account_id: int, request_id: str | None) -> int | None:
    """The test link of a pending AuthnRequest of this account, or None (a real login)."""
    if not request_id:
        return None
    relay = db.scalar(
        select(AuthnRequest.relay_state).where(
            AuthnRequest.id == request_id, AuthnRequest.account_id == account_id
        )
    )
    return link_of(relay)
