"""SAML bindings as the IdP side sees them: HTTP-Redirect encoding with the query-string
signature of saml-bindings-2.0-os §3.4.4.1, the HTTP-POST form, and parsers for what the SP
sends the IdP (AuthnRequest, LogoutRequest, LogoutResponse, SP metadata)."""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote_plus, urlsplit

import lxml.etree as etree
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .xmltools import (
    NS,
    SIGNATURE_ALGORITHMS,
    KeyPair,
    b64,
    cert_pem,
    load_certificate,
    parse,
    qname,
    verify_enveloped,
)

_HASH_BY_URI = {uri: hash_cls for uri, _, hash_cls in SIGNATURE_ALGORITHMS.values()}


def deflate_b64(xml: bytes) -> str:
    """Raw DEFLATE (RFC 1951, no zlib header) then base64: the Redirect binding's encoding."""
    compressor = zlib.compressobj(wbits=-15)
    return b64(compressor.compress(xml) + compressor.flush())


def inflate_b64(value: str) -> bytes:
    return zlib.decompress(base64.b64decode(value, validate=True), wbits=-15)


@dataclass(frozen=True)
class Redirect:
    """A message for the HTTP-Redirect binding: `url` is destination + query string."""

    url: str
    id: str
    xml: bytes
    params: dict[str, str]  # decoded: SAMLRequest|SAMLResponse, RelayState, SigAlg, Signature

    @property
    def query_string(self) -> str:
        """The raw (still percent-encoded) query string, as signed."""
        return urlsplit(self.url).query

    @property
    def path(self) -> str:
        return urlsplit(self.url).path


def redirect(
    destination: str,
    field_name: str,
    xml: bytes,
    message_id: str,
    *,
    relay_state: str | None = None,
    key: KeyPair | None = None,
    signature_algorithm: str = "rsa-sha256",
) -> Redirect:
    """Encode `xml` for the Redirect binding; with `key`, sign the query per §3.4.4.1: the octets
    'SAMLRequest=v&RelayState=v&SigAlg=v' (URL-encoded values, RelayState only when present),
    signed with RSA PKCS#1 v1.5 over the SigAlg's hash, base64 in 'Signature'. Values are
    encoded with quote_plus, which is what python3-saml rebuilds when it checks a signature."""
    params = {field_name: deflate_b64(xml)}
    if relay_state is not None:
        params["RelayState"] = relay_state
    if key is not None:
        uri, _, hash_cls = SIGNATURE_ALGORITHMS[signature_algorithm]
        params["SigAlg"] = uri
    query = "&".join(f"{name}={quote_plus(value)}" for name, value in params.items())
    if key is not None:
        signature = key.private_key.sign(query.encode(), padding.PKCS1v15(), hash_cls())
        params["Signature"] = b64(signature)
        query += "&Signature=" + quote_plus(params["Signature"])
    separator = "&" if "?" in destination else "?"
    return Redirect(destination + separator + query, message_id, xml, params)


def post_form(
    xml: bytes, relay_state: str | None = None, *, field_name: str = "SAMLResponse"
) -> dict[str, str]:
    """The form fields of an HTTP-POST binding message (base64, not deflated). RelayState is
    left out when None."""
    form = {field_name: b64(xml)}
    if relay_state is not None:
        form["RelayState"] = relay_state
    return form


def verify_query_signature(
    signed_query: bytes, signature: bytes, sig_alg: str, cert: str | bytes | x509.Certificate
) -> bool:
    hash_cls = _HASH_BY_URI.get(sig_alg)
    if hash_cls is None:
        return False
    public_key = load_certificate(cert).public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    try:
        public_key.verify(signature, signed_query, padding.PKCS1v15(), hash_cls())
    except InvalidSignature:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# what the SP sends


@dataclass(frozen=True)
class Received:
    """A SAML message the SP sent, decoded (Redirect URL or POST form)."""

    binding: str  # "redirect" or "post"
    xml: bytes
    root: etree._Element = field(repr=False)
    relay_state: str | None
    sig_alg: str | None
    signature: bytes | None
    signed_query: bytes | None  # Redirect: the exact octets §3.4.4.1 signs

    @property
    def id(self) -> str:
        return self.root.get("ID")

    @property
    def issuer(self) -> str | None:
        issuer = self.root.find(qname("saml:Issuer"))
        return None if issuer is None else issuer.text

    @property
    def destination(self) -> str | None:
        return self.root.get("Destination")

    @property
    def signed(self) -> bool:
        return self.signature is not None or self._xml_signature() is not None

    def _xml_signature(self) -> etree._Element | None:
        return self.root.find(qname("ds:Signature"))

    def signature_valid_with(self, cert: str | bytes | x509.Certificate) -> bool:
        """True when the message carries a signature that verifies with `cert`: the query-string
        signature (Redirect) or an enveloped XML signature over the root (either binding).
        An unsigned message is False."""
        if self.signature is not None:
            assert self.signed_query is not None and self.sig_alg is not None
            return verify_query_signature(self.signed_query, self.signature, self.sig_alg, cert)
        xml_signature = self._xml_signature()
        if xml_signature is None:
            return False
        return verify_enveloped(xml_signature, cert_pem(cert))


def receive(message: str | Mapping[str, str], field_name: str) -> Received:
    """Decode a Redirect URL (str) or a POST form (mapping) carrying `field_name`."""
    if isinstance(message, str):
        query = urlsplit(message).query
        raw = {}
        for part in query.split("&"):
            name, _, value = part.partition("=")
            raw.setdefault(name, value)
        values = {name: values[0] for name, values in parse_qs(query).items()}
        if field_name not in values:
            raise ValueError(f"no {field_name} in {message!r}")
        xml = inflate_b64(values[field_name])
        signature = values.get("Signature")
        signed_query = None
        if signature is not None:
            parts = [f"{field_name}={raw[field_name]}"]
            if "RelayState" in raw:
                parts.append(f"RelayState={raw['RelayState']}")
            parts.append(f"SigAlg={raw.get('SigAlg', '')}")
            signed_query = "&".join(parts).encode()
        return Received(
            "redirect",
            xml,
            parse(xml),
            values.get("RelayState"),
            values.get("SigAlg"),
            None if signature is None else base64.b64decode(signature),
            signed_query,
        )
    xml = base64.b64decode(message[field_name], validate=True)
    return Received("post", xml, parse(xml), message.get("RelayState"), None, None, None)


@dataclass(frozen=True)
class AuthnRequestInfo(Received):
    """An AuthnRequest. Unpacks as (id, acs_url, issuer, signature_valid_with)."""

    @property
    def acs_url(self) -> str | None:
        return self.root.get("AssertionConsumerServiceURL")

    @property
    def protocol_binding(self) -> str | None:
        return self.root.get("ProtocolBinding")

    @property
    def name_id_policy_format(self) -> str | None:
        policy = self.root.find(qname("samlp:NameIDPolicy"))
        return None if policy is None else policy.get("Format")

    @property
    def force_authn(self) -> bool:
        return self.root.get("ForceAuthn") in ("true", "1")

    @property
    def is_passive(self) -> bool:
        return self.root.get("IsPassive") in ("true", "1")

    def __iter__(self) -> Iterator[object]:
        return iter((self.id, self.acs_url, self.issuer, self.signature_valid_with))


@dataclass(frozen=True)
class LogoutRequestInfo(Received):
    @property
    def name_id(self) -> str | None:
        name_id = self.root.find(qname("saml:NameID"))
        return None if name_id is None else name_id.text

    @property
    def name_id_format(self) -> str | None:
        name_id = self.root.find(qname("saml:NameID"))
        return None if name_id is None else name_id.get("Format")

    @property
    def session_indexes(self) -> list[str]:
        return [e.text or "" for e in self.root.findall(qname("samlp:SessionIndex"))]

    @property
    def not_on_or_after(self) -> str | None:
        return self.root.get("NotOnOrAfter")


@dataclass(frozen=True)
class LogoutResponseInfo(Received):
    @property
    def in_response_to(self) -> str | None:
        return self.root.get("InResponseTo")

    @property
    def status(self) -> str | None:
        code = self.root.find(f"{qname('samlp:Status')}/{qname('samlp:StatusCode')}")
        return None if code is None else code.get("Value")


def _typed(cls: type[Received], message: str | Mapping[str, str], field_name: str, tag: str):
    received = receive(message, field_name)
    if received.root.tag != qname(tag):
        raise ValueError(f"expected {tag}, got {received.root.tag}")
    return cls(**{f: getattr(received, f) for f in received.__dataclass_fields__})


def parse_authn_request(message: str | Mapping[str, str]) -> AuthnRequestInfo:
    """The AuthnRequest in a Redirect URL the SP's /login answered with (or a POST form)."""
    return _typed(AuthnRequestInfo, message, "SAMLRequest", "samlp:AuthnRequest")


def parse_logout_request(message: str | Mapping[str, str]) -> LogoutRequestInfo:
    """The LogoutRequest the SP sends the IdP (SP-initiated logout)."""
    return _typed(LogoutRequestInfo, message, "SAMLRequest", "samlp:LogoutRequest")


def parse_logout_response(message: str | Mapping[str, str]) -> LogoutResponseInfo:
    """The LogoutResponse the SP answers an IdP-initiated LogoutRequest with."""
    return _typed(LogoutResponseInfo, message, "SAMLResponse", "samlp:LogoutResponse")


@dataclass(frozen=True)
class SPMetadata:
    entity_id: str
    acs_urls: dict[str, str]  # binding -> Location (first of each binding)
    slo_urls: dict[str, str]
    signing_certs: list[str]  # PEM
    encryption_certs: list[str]  # PEM; a KeyDescriptor without `use` counts for both
    authn_requests_signed: bool
    want_assertions_signed: bool


def parse_sp_metadata(xml: bytes | str) -> SPMetadata:
    """The parts of the SP's metadata the IdP needs. encryption_certs[0] is what to pass as
    `encrypt_to_cert`."""
    root = parse(xml)
    sp = root.find(qname("md:SPSSODescriptor"))
    assert sp is not None, "no SPSSODescriptor"

    def endpoints(tag: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for e in sp.findall(qname(tag)):
            found.setdefault(e.get("Binding"), e.get("Location"))
        return found

    certs: dict[str, list[str]] = {"signing": [], "encryption": []}
    for descriptor in sp.findall(qname("md:KeyDescriptor")):
        path = "ds:KeyInfo/ds:X509Data/ds:X509Certificate"
        for node in descriptor.xpath(path, namespaces=NS):
            pem = cert_pem("".join(node.text.split()))
            for use in [descriptor.get("use")] if descriptor.get("use") else list(certs):
                certs[use].append(pem)
    return SPMetadata(
        entity_id=root.get("entityID"),
        acs_urls=endpoints("md:AssertionConsumerService"),
        slo_urls=endpoints("md:SingleLogoutService"),
        signing_certs=certs["signing"],
        encryption_certs=certs["encryption"],
        authn_requests_signed=sp.get("AuthnRequestsSigned") in ("true", "1"),
        want_assertions_signed=sp.get("WantAssertionsSigned") in ("true", "1"),
    )


__all__ = [
    "AuthnRequestInfo",
    "LogoutRequestInfo",
    "LogoutResponseInfo",
    "Redirect",
    "SPMetadata",
    "deflate_b64",
    "inflate_b64",
    "parse_authn_request",
    "parse_logout_request",
    "parse_logout_response",
    "parse_sp_metadata",
    "post_form",
    "redirect",
    "verify_query_signature",
]
