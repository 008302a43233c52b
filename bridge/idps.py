"""Identity providers of an account: added from metadata (file or URL), listed, refreshed,
removed. Several signing certificates are kept, so an IdP can roll its key without an outage.

Metadata URLs are fetched by bridge.fetch: https only, never from loopback, private or
link-local addresses unless the deployment allows it (an SSRF guard on every redirect hop).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser
from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge import audit, idp_domains, sessions
from bridge import fetch as fetching
from bridge.accounts import get_account
from bridge.errors import Conflict, InvalidInput, NotFound
from bridge.models import Account, IdentityProvider, utcnow
from bridge.store import Store

EXPIRY_WARNING = timedelta(days=30)


@dataclass(frozen=True)
class Metadata:
    """What the SP needs of an IdP's metadata."""

    entity_id: str
    sso_url: str
    slo_url: str | None
    certificates: tuple[str, ...]


@dataclass(frozen=True)
class SpValues:
    """What an IdP admin copies into their IdP: our URLs for one account (DESIGN §3)."""

    entity_id: str
    acs_url: str
    sls_url: str
    metadata_url: str
    login_url: str


def sp_values(base_url: str, slug: str) -> SpValues:
    saml = f"{base_url.rstrip('/')}/saml/{slug}"
    return SpValues(
        entity_id=f"{saml}/metadata",
        acs_url=f"{saml}/acs",
        sls_url=f"{saml}/sls",
        metadata_url=f"{saml}/metadata",
        login_url=f"{saml}/login",
    )


def parse_metadata(xml: str) -> Metadata:
    """The IdP's entity ID, endpoints and signing certificates, or InvalidInput saying why not."""
    try:
        data = OneLogin_Saml2_IdPMetadataParser.parse(xml)
    except Exception as exc:  # the parser raises bare exceptions for malformed documents
        raise InvalidInput(f"not usable SAML IdP metadata: {exc}") from exc
    idp = data.get("idp") or {}
    if not idp.get("entityId") or not (idp.get("singleSignOnService") or {}).get("url"):
        raise InvalidInput("the metadata names no IdP entityID and HTTP-Redirect SSO endpoint")
    multi = (idp.get("x509certMulti") or {}).get("signing") or []
    certs = tuple(multi) or ((idp["x509cert"],) if idp.get("x509cert") else ())
    if not certs:
        raise InvalidInput("the metadata has no signing certificate")
    for cert in certs:
        _certificate(cert)
    slo = (idp.get("singleLogoutService") or {}).get("url")
    return Metadata(idp["entityId"], idp["singleSignOnService"]["url"], slo, certs)


def expiring(db: Session) -> list[str]:
    """Expiry warnings for every IdP of every account (for /readyz)."""
    found = []
    for idp, slug in db.execute(
        select(IdentityProvider, Account.slug).join(
            Account, Account.id == IdentityProvider.account_id
        )
    ):
        found += [f"{slug}: {w}" for w in expiry_warnings(idp)]
    return found


@lru_cache(maxsize=1024)
def _certificate(b64: str) -> x509.Certificate:
    pem = "-----BEGIN CERTIFICATE-----\n" + b64.strip() + "\n-----END CERTIFICATE-----\n"
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise InvalidInput("a signing certificate in the metadata does not parse") from exc


def parse_certificate(b64: str) -> x509.Certificate:
    """A signing certificate as kept in `certificates` (base64 DER), parsed (and cached)."""
    return _certificate(b64)


def certificate_expiries(idp: IdentityProvider) -> list[datetime]:
    """When each of the IdP's signing certificates expires, soonest first."""
    return sorted(
        _certificate(b64).not_valid_after_utc for b64 in idp.certificates.get("signing", [])
    )


def expiry_warnings(idp: IdentityProvider, now: datetime | None = None) -> list[str]:
    """A line for each of the IdP's certificates that expires within 30 days (or has)."""
    now = now or utcnow()
    found = []
    for b64 in idp.certificates.get("signing", []):
        ends = _certificate(b64).not_valid_after_utc
        if ends - now < EXPIRY_WARNING:
            found.append(f"IdP {idp.name}: a signing certificate expires {ends:%Y-%m-%d}")
    return found


def fetch(url: str, *, allow_private: bool = False) -> str:
    """Metadata from `url`: https only, public addresses only, every redirect checked again."""
    return fetching.fetch(url, allow_private=allow_private)


def add(
    store: Store,
    slug: str,
    xml: str,
    *,
    name: str | None = None,
    metadata_url: str | None = None,
    allow_idp_initiated: bool = False,
    allow_jit: bool = True,
    match_by: str = "name_id",
    accept_response_signature: bool = False,
    domains: list[str] | None = None,
    actor: str,
) -> IdentityProvider:
    """Register an IdP with an account from its metadata."""
    return store.write(
        lambda db: add_in(
            db,
            slug,
            xml,
            name=name,
            metadata_url=metadata_url,
            allow_idp_initiated=allow_idp_initiated,
            allow_jit=allow_jit,
            match_by=match_by,
            accept_response_signature=accept_response_signature,
            domains=domains,
            actor=actor,
        )
    )


def add_in(
    db: Session,
    slug: str,
    xml: str,
    *,
    name: str | None = None,
    metadata_url: str | None = None,
    allow_idp_initiated: bool = False,
    allow_jit: bool = True,
    match_by: str = "name_id",
    accept_response_signature: bool = False,
    domains: list[str] | None = None,
    actor: str,
) -> IdentityProvider:
    """`add` inside the caller's transaction (a set-up link claims its step in the same one)."""
    meta = parse_metadata(xml)
    name = name or urlsplit(meta.entity_id).hostname or "idp"
    account = get_account(db, slug)
    taken = db.scalar(
        select(IdentityProvider).where(
            IdentityProvider.account_id == account.id,
            (IdentityProvider.name == name) | (IdentityProvider.entity_id == meta.entity_id),
        )
    )
    if taken is not None:
        raise Conflict(f"account {slug!r} already has IdP {taken.name!r} ({taken.entity_id})")
    idp = IdentityProvider(
        account_id=account.id,
        name=name,
        entity_id=meta.entity_id,
        metadata_url=metadata_url,
        metadata_xml=xml,
        sso_url=meta.sso_url,
        slo_url=meta.slo_url,
        certificates={"signing": list(meta.certificates)},
        allow_idp_initiated=allow_idp_initiated,
        allow_jit=allow_jit,
        match_by=match_by,
        accept_response_signature=accept_response_signature,
        refreshed=utcnow(),
    )
    db.add(idp)
    db.flush()
    after = _describe(idp)
    if domains:
        after["domains"] = idp_domains.set_in(db, idp, domains, actor=actor)[1]
    audit.record(
        db,
        account.id,
        actor=actor,
        action="idp.add",
        target_type="idp",
        target_id=name,
        after=after,
    )
    return idp


def refresh(store: Store, slug: str, name: str, *, xml: str, actor: str) -> bool:
    """Replace an IdP's endpoints and certificates from new metadata; True when they changed."""
    meta = parse_metadata(xml)

    def work(db: Session) -> bool:
        account = get_account(db, slug)
        idp = get(db, account.id, name)
        if meta.entity_id != idp.entity_id:
            raise InvalidInput(f"the metadata is for {meta.entity_id}, not {idp.entity_id}")
        before = _describe(idp)
        idp.sso_url, idp.slo_url = meta.sso_url, meta.slo_url
        idp.certificates = {"signing": list(meta.certificates)}
        idp.metadata_xml, idp.refreshed = xml, utcnow()
        after = _describe(idp)
        if before == after:
            return False
        idp.touch()
        audit.record(
            db,
            account.id,
            actor=actor,
            action="idp.refresh",
            target_type="idp",
            target_id=name,
            before=before,
            after=after,
        )
        return True

    return store.write(work)


def remove(store: Store, slug: str, name: str, *, actor: str) -> int:
    """Remove an IdP and end every session opened through it; returns how many ended."""

    def work(db: Session) -> int:
        account = get_account(db, slug)
        idp = get(db, account.id, name)
        before = _describe(idp)
        # Its people's sessions end with it (and, through the audit event, their sessions at
        # the product: back-channel logout).
        ended = sessions.end_for_idp(db, idp.id)
        db.delete(idp)
        audit.record(
            db,
            account.id,
            actor=actor,
            action="idp.remove",
            target_type="idp",
            target_id=name,
            before=before,
            after={"ended_sessions": ended},
        )
        return len(ended)

    return store.write(work)


def set_disabled(store: Store, slug: str, name: str, disabled: bool, *, actor: str) -> int:
    """Disable an IdP (no login through it; its sessions end) or enable it again; returns how
    many sessions ended."""

    def work(db: Session) -> int:
        account = get_account(db, slug)
        idp = get(db, account.id, name)
        ended = sessions.end_for_idp(db, idp.id) if disabled else []
        if idp.disabled == disabled and not ended:
            return 0
        before = _describe(idp)
        idp.disabled = disabled
        idp.touch()
        audit.record(
            db,
            account.id,
            actor=actor,
            action="idp.disable" if disabled else "idp.enable",
            target_type="idp",
            target_id=name,
            before=before,
            after={**_describe(idp), "ended_sessions": ended},
        )
        return len(ended)

    return store.write(work)


SETTINGS = ("allow_idp_initiated", "allow_jit", "match_by", "link_by_email", "domains")


def change_settings(
    store: Store, account_id: int, name: str, changes: dict[str, Any], *, actor: str
) -> IdentityProvider:
    """Change an IdP's login settings (IdP-initiated, JIT, matching, e-mail linking, e-mail
    domains for login_hint routing: the whole list) in one transaction."""
    unknown = set(changes) - set(SETTINGS)
    if unknown:
        raise InvalidInput(f"unknown IdP setting {sorted(unknown)[0]!r}")
    changes = dict(changes)
    domains = changes.pop("domains", None)
    if domains is not None:
        idp_domains.normalize_all(domains)  # refused before the transaction starts

    def work(db: Session) -> IdentityProvider:
        idp = get(db, account_id, name)
        before = _describe(idp)
        for key, value in changes.items():
            setattr(idp, key, value)
        after = _describe(idp)
        if domains is not None:
            before["domains"], after["domains"] = idp_domains.set_in(db, idp, domains, actor=actor)
        if after != before:
            idp.touch()
            audit.record(
                db,
                account_id,
                actor=actor,
                action="idp.update",
                target_type="idp",
                target_id=name,
                before=before,
                after=after,
            )
        return idp

    return store.write(work)


def certificates(idp: IdentityProvider) -> list[dict[str, str]]:
    """The IdP's signing certificates: subject and expiry."""
    found = []
    for b64 in idp.certificates.get("signing", []):
        cert = _certificate(b64)
        found.append(
            {
                "subject": cert.subject.rfc4514_string(),
                "not_after": cert.not_valid_after_utc.isoformat(timespec="seconds"),
            }
        )
    return found


def get(db: Session, account_id: int, name: str) -> IdentityProvider:
    idp = db.scalar(
        select(IdentityProvider).where(
            IdentityProvider.account_id == account_id, IdentityProvider.name == name
        )
    )
    if idp is None:
        raise NotFound(f"no IdP {name!r} in this account")
    return idp


def list_for(db: Session, account_id: int) -> list[IdentityProvider]:
    return list(
        db.scalars(
            select(IdentityProvider)
            .where(IdentityProvider.account_id == account_id)
            .order_by(IdentityProvider.name)
        )
    )


def _describe(idp: IdentityProvider) -> dict[str, Any]:
    return {
        "name": idp.name,
        "entity_id": idp.entity_id,
        "sso_url": idp.sso_url,
        "slo_url": idp.slo_url,
        "certificates": len(idp.certificates.get("signing", [])),
        "allow_idp_initiated": idp.allow_idp_initiated,
        "allow_jit": idp.allow_jit,
        "match_by": idp.match_by,
        "accept_response_signature": idp.accept_response_signature,
        "disabled": idp.disabled,
        "link_by_email": idp.link_by_email,
    }
