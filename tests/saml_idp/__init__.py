"""An independent test IdP for the SAML SP's tests, plus attack payloads.

It builds and signs SAML 2.0 messages itself with lxml + xmlsec (encryption with `cryptography`),
never with python3-saml, so the SP is checked against a second implementation rather than
against itself. Typical use::

    idp = TestIdP()                                     # RSA key + self-signed cert
    metadata = idp.metadata_xml()                       # register it with the SP
    xml = idp.response(destination=acs_url, audience=sp_entity_id, in_response_to=request_id,
                       name_id="ann@example.com", attributes={"groups": ["admins"]})
    client.post(acs_path, data=idp.post_form(xml, relay_state="/next"))

    idp.signature_wrapping("extensions", destination=acs_url, audience=sp_entity_id)

Modules: `xmltools` (namespaces, keys, sign/verify/encrypt), `bindings` (Redirect/POST
encoding, parsers for what the SP sends), `idp` (core), `attacks` (attack builders, garbage).
"""

from .attacks import XSW_VARIANTS, AttackBuilders, base64_not_xml, not_base64, truncated
from .bindings import (
    AuthnRequestInfo,
    LogoutRequestInfo,
    LogoutResponseInfo,
    Redirect,
    SPMetadata,
    deflate_b64,
    inflate_b64,
    parse_authn_request,
    parse_logout_request,
    parse_logout_response,
    parse_sp_metadata,
    post_form,
)
from .idp import SAME
from .xmltools import (
    NAMEID_EMAIL,
    NAMEID_PERSISTENT,
    NAMEID_TRANSIENT,
    NAMEID_UNSPECIFIED,
    NS,
    KeyPair,
    encrypt_element,
    sign_enveloped,
    verify_enveloped,
)


class TestIdP(AttackBuilders):
    """The test IdP: `IdPCore` (keys, metadata, response, logout) + `AttackBuilders`.

    TestIdP(entity_id="https://idp.example.test/metadata", sso_url=..., slo_url=...,
    keys=None, signing_key=None); TestIdP.with_keys(k1, k2, signing_key=k2, entity_id=...).
    """

    __test__ = False  # not a pytest test class, whatever its name


__all__ = [
    "NAMEID_EMAIL",
    "NAMEID_PERSISTENT",
    "NAMEID_TRANSIENT",
    "NAMEID_UNSPECIFIED",
    "NS",
    "SAME",
    "XSW_VARIANTS",
    "AuthnRequestInfo",
    "KeyPair",
    "LogoutRequestInfo",
    "LogoutResponseInfo",
    "Redirect",
    "SPMetadata",
    "TestIdP",
    "base64_not_xml",
    "deflate_b64",
    "encrypt_element",
    "inflate_b64",
    "not_base64",
    "parse_authn_request",
    "parse_logout_request",
    "parse_logout_response",
    "parse_sp_metadata",
    "post_form",
    "sign_enveloped",
    "truncated",
    "verify_enveloped",
]
