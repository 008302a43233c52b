"""SAML IdPs of the account: list (certificate expiry, the SP values an IdP admin needs), add
from a metadata URL or XML, change settings, refresh, remove (its sessions end)."""

from __future__ import annotations

from datetime import datetime

from flask import current_app, g, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field, model_validator
from sqlalchemy.orm import Session

from api.base import account_id, actor, bp, requires, responses, spec
from api.models import Problem, Strict
from bridge import accounts, idp_domains, idps, test_logins
from bridge import fetch as fetching
from bridge.errors import InvalidInput
from bridge.models import IdentityProvider
from bridge.web import get_store

TAG = "idps"
NAME = "<string(maxlength=64):name>"


class Certificate(BaseModel):
    subject: str
    not_after: str


class ServiceProvider(BaseModel):
    """What the IdP's admin enters on their side."""

    entity_id: str
    acs_url: str
    metadata_url: str
    slo_url: str


class IdpDoc(BaseModel):
    name: str
    entity_id: str
    sso_url: str
    slo_url: str | None
    metadata_url: str | None
    allow_idp_initiated: bool
    allow_jit: bool
    match_by: str
    link_by_email: bool
    domains: list[str] = Field(
        description="E-mail domains whose login_hint /oidc/authorize routes to this IdP"
    )
    refreshed: datetime | None
    certificates: list[Certificate]
    warnings: list[str]


class IdpList(BaseModel):
    service_provider: ServiceProvider
    idps: list[IdpDoc]


class NewIdp(Strict):
    name: str | None = Field(None, min_length=1, max_length=64)
    metadata_url: str | None = Field(None, max_length=2048, description="https only")
    metadata_xml: str | None = Field(None, max_length=fetching.MAX_BYTES)
    allow_idp_initiated: bool = False
    allow_jit: bool = True
    match_by: str = Field("name_id", min_length=1, max_length=256)
    link_by_email: bool = False
    domains: list[str] = Field(default_factory=list, max_length=idp_domains.MAX_PER_IDP)

    @model_validator(mode="after")
    def one_source(self) -> NewIdp:
        if (self.metadata_url is None) == (self.metadata_xml is None):
            raise ValueError("give exactly one of metadata_url or metadata_xml")
        return self


class IdpSettings(Strict):
    allow_idp_initiated: bool | None = None
    allow_jit: bool | None = None
    match_by: str | None = Field(None, min_length=1, max_length=256)
    link_by_email: bool | None = None
    domains: list[str] | None = Field(
        None,
        max_length=idp_domains.MAX_PER_IDP,
        description="The IdP's whole list of e-mail domains (declared by you, not checked in DNS)",
    )


class VerifiedDomains(Strict):
    domains: list[str] = Field(
        max_length=accounts.MAX_VERIFIED_DOMAINS,
        description=(
            "The account's whole list of verified e-mail domains: an IdP with link_by_email joins "
            "a first login to an existing user only by an e-mail on one of them (declared by "
            "you, not checked in DNS)"
        ),
    )


class Refresh(Strict):
    metadata_xml: str | None = Field(
        None, max_length=fetching.MAX_BYTES, description="Omit to re-read the metadata URL."
    )


class Removed(BaseModel):
    name: str
    sessions_ended: int


def _doc(db: Session, idp: IdentityProvider) -> IdpDoc:
    return IdpDoc(
        name=idp.name,
        entity_id=idp.entity_id,
        sso_url=idp.sso_url,
        slo_url=idp.slo_url,
        metadata_url=idp.metadata_url,
        allow_idp_initiated=idp.allow_idp_initiated,
        allow_jit=idp.allow_jit,
        match_by=idp.match_by,
        link_by_email=idp.link_by_email,
        domains=idp_domains.of_idp(db, idp.id),
        refreshed=idp.refreshed,
        certificates=[Certificate(**c) for c in idps.certificates(idp)],
        warnings=idps.expiry_warnings(idp),
    )


def _fetch(url: str) -> str:
    settings = current_app.config["BRIDGE_SETTINGS"]
    return idps.fetch(url, allow_private=settings.allow_private_metadata)


def _get(name: str) -> IdpDoc:
    with get_store().read() as db:
        return _doc(db, idps.get(db, account_id(), name))


@bp.get("/idps")
@requires("read")
@spec.validate(resp=responses(HTTP_200=IdpList), tags=[TAG])
def list_idps() -> ResponseReturnValue:
    """The account's IdPs with certificate expiry, and the SP values to give an IdP."""
    base = f"{current_app.config['BRIDGE_SETTINGS'].base_url}/saml/{g.account_slug}"
    with get_store().read() as db:
        found = [_doc(db, i) for i in idps.list_for(db, account_id())]
    sp = ServiceProvider(
        entity_id=f"{base}/metadata",
        acs_url=f"{base}/acs",
        metadata_url=f"{base}/metadata",
        slo_url=f"{base}/sls",
    )
    return IdpList(service_provider=sp, idps=found)


@bp.post("/idps")
@requires("admin")
@spec.validate(
    json=NewIdp, resp=responses(HTTP_201=IdpDoc, HTTP_400=Problem, HTTP_409=Problem), tags=[TAG]
)
def add_idp() -> ResponseReturnValue:
    """Add an IdP from its metadata URL (fetched: https, public addresses) or XML."""
    body: NewIdp = request.context.json  # type: ignore[attr-defined]
    xml = _fetch(body.metadata_url) if body.metadata_url else body.metadata_xml or ""
    idp = idps.add(
        get_store(),
        g.account_slug,
        xml,
        name=body.name,
        metadata_url=body.metadata_url,
        allow_idp_initiated=body.allow_idp_initiated,
        allow_jit=body.allow_jit,
        match_by=body.match_by,
        domains=body.domains,
        actor=actor(),
    )
    if body.link_by_email:
        idps.change_settings(
            get_store(), account_id(), idp.name, {"link_by_email": True}, actor=actor()
        )
    return _get(idp.name), 201


@bp.patch(f"/idps/{NAME}")
@requires("admin")
@spec.validate(json=IdpSettings, resp=responses(HTTP_200=IdpDoc, HTTP_400=Problem), tags=[TAG])
def update_idp(name: str) -> ResponseReturnValue:
    """Change an IdP's login settings."""
    body: IdpSettings = request.context.json  # type: ignore[attr-defined]
    changes = body.model_dump(exclude_none=True)
    idps.change_settings(get_store(), account_id(), name, changes, actor=actor())
    return _get(name)


@bp.get("/verified-domains")
@requires("read")
@spec.validate(resp=responses(HTTP_200=VerifiedDomains), tags=[TAG])
def get_verified_domains() -> ResponseReturnValue:
    """The account's verified e-mail domains (for IdPs that link first logins by e-mail)."""
    with get_store().read() as db:
        return VerifiedDomains(
            domains=sorted(accounts.get_account(db, g.account_slug).verified_domains)
        )


@bp.put("/verified-domains")
@requires("admin")
@spec.validate(
    json=VerifiedDomains, resp=responses(HTTP_200=VerifiedDomains, HTTP_400=Problem), tags=[TAG]
)
def set_verified_domains() -> ResponseReturnValue:
    """Make the given domains the account's whole list of verified e-mail domains."""
    body: VerifiedDomains = request.context.json  # type: ignore[attr-defined]
    found = accounts.set_verified_domains(get_store(), account_id(), body.domains, actor=actor())
    return VerifiedDomains(domains=found)


@bp.post(f"/idps/{NAME}/refresh")
@requires("admin")
@spec.validate(json=Refresh, resp=responses(HTTP_200=IdpDoc, HTTP_400=Problem), tags=[TAG])
def refresh_idp(name: str) -> ResponseReturnValue:
    """Re-read the IdP's metadata (its URL, or the XML given): endpoints and certificates."""
    body: Refresh = request.context.json  # type: ignore[attr-defined]
    xml = body.metadata_xml
    if xml is None:
        with get_store().read() as db:
            url = idps.get(db, account_id(), name).metadata_url
        if url is None:
            raise InvalidInput(f"IdP {name!r} was added from XML; send metadata_xml")
        xml = _fetch(url)
    idps.refresh(get_store(), g.account_slug, name, xml=xml, actor=actor())
    return _get(name)


@bp.delete(f"/idps/{NAME}")
@requires("admin")
@spec.validate(resp=responses(HTTP_200=Removed), tags=[TAG])
def remove_idp(name: str) -> ResponseReturnValue:
    """Remove an IdP; the sessions it opened end at once."""
    ended = idps.remove(get_store(), g.account_slug, name, actor=actor())
    return Removed(name=name, sessions_ended=ended)


class TestLogin(BaseModel):
    """A one-time URL: open it in a browser to run a login at the IdP that signs nobody in."""

    url: str
    idp: str
    expires: datetime


@bp.post(f"/idps/{NAME}/test-login")
@requires("admin")
@spec.validate(resp=responses(HTTP_201=TestLogin, HTTP_409=Problem), tags=[TAG])
def test_login(name: str) -> ResponseReturnValue:
    """A test-login URL (ten minutes, used once): it runs a real SAML login at this IdP and shows
    what the IdP sent and what the policy would decide, without provisioning anyone or opening a
    session."""
    issued = test_logins.issue(
        get_store(),
        g.account_slug,
        name,
        base_url=current_app.config["BRIDGE_SETTINGS"].base_url,
        actor=actor(),
    )
    return TestLogin(url=issued.url, idp=issued.idp, expires=issued.expires), 201
