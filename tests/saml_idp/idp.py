"""The core of the test IdP: keys, metadata, signed (and optionally encrypted) Responses,
and logout messages for the HTTP-Redirect binding."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import lxml.etree as etree
from cryptography import x509

from . import bindings
from .xmltools import (
    AC_PASSWORD_PROTECTED,
    ATTRNAME_BASIC,
    BINDING_POST,
    BINDING_REDIRECT,
    CM_BEARER,
    NAMEID_EMAIL,
    NAMEID_PERSISTENT,
    NAMEID_UNSPECIFIED,
    NS,
    STATUS_PREFIX,
    KeyPair,
    at,
    encrypt_element,
    instant,
    new_id,
    serialize,
    sign_enveloped,
    sub,
    utcnow,
)

Attributes = Mapping[str, Sequence[str]] | Sequence[tuple[str, Sequence[str]]]


class _Same:
    """Sentinel: 'the same as the related argument'."""

    def __repr__(self) -> str:
        return "SAME"


SAME: Any = _Same()


def _status(value: str) -> str:
    return value if ":" in value else STATUS_PREFIX + value


class IdPCore:
    """See `TestIdP` (which adds the attack builders)."""

    def __init__(
        self,
        entity_id: str = "https://idp.example.test/metadata",
        sso_url: str = "https://idp.example.test/sso",
        slo_url: str = "https://idp.example.test/slo",
        *,
        keys: Sequence[KeyPair] | None = None,
        signing_key: KeyPair | None = None,
    ) -> None:
        self.entity_id = entity_id
        self.sso_url = sso_url
        self.slo_url = slo_url
        self.keys: list[KeyPair] = list(keys) if keys else [KeyPair.generate()]
        self.signing_key: KeyPair = signing_key or self.keys[0]

    @classmethod
    def with_keys(cls, *keys: KeyPair, signing_key: KeyPair | None = None, **kwargs: Any):
        """An IdP publishing exactly `keys` (signing with `signing_key`, default the first)."""
        return cls(keys=keys, signing_key=signing_key, **kwargs)

    # keys ----------------------------------------------------------------------------------

    @property
    def cert_pem(self) -> str:
        """PEM of the current signing certificate."""
        return self.signing_key.cert_pem

    @property
    def cert_b64(self) -> str:
        """One-line base64 DER of the current signing certificate (python3-saml 'x509cert')."""
        return self.signing_key.cert_b64

    def rollover(self, *, activate: bool = True) -> KeyPair:
        """Add a new key/cert to the metadata; with `activate` (default) sign with it from now
        on. The old one stays published until `retire()`."""
        key = KeyPair.generate()
        self.keys.append(key)
        if activate:
            self.signing_key = key
        return key

    def retire(self, key: KeyPair) -> None:
        """Stop publishing `key` (and sign with the newest remaining one if it was active)."""
        self.keys.remove(key)
        if self.signing_key is key:
            self.signing_key = self.keys[-1]

    # metadata -------------------------------------------------------------------------------

    def metadata_xml(self, *, want_authn_requests_signed: bool = False) -> str:
        """EntityDescriptor/IDPSSODescriptor: a signing KeyDescriptor per published cert,
        SingleLogoutService (Redirect), NameIDFormats, SingleSignOnService (Redirect, POST)."""
        root = sub(
            None,
            "md:EntityDescriptor",
            nsmap={"md": NS["md"], "ds": NS["ds"]},
            entityID=self.entity_id,
        )
        idp = sub(
            root,
            "md:IDPSSODescriptor",
            WantAuthnRequestsSigned="true" if want_authn_requests_signed else "false",
            protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol",
        )
        for key in self.keys:
            x509_data = sub(
                sub(sub(idp, "md:KeyDescriptor", use="signing"), "ds:KeyInfo"), "ds:X509Data"
            )
            sub(x509_data, "ds:X509Certificate", key.cert_b64)
        sub(idp, "md:SingleLogoutService", Binding=BINDING_REDIRECT, Location=self.slo_url)
        for name_id_format in (NAMEID_EMAIL, NAMEID_PERSISTENT, NAMEID_UNSPECIFIED):
            sub(idp, "md:NameIDFormat", name_id_format)
        sub(idp, "md:SingleSignOnService", Binding=BINDING_REDIRECT, Location=self.sso_url)
        sub(idp, "md:SingleSignOnService", Binding=BINDING_POST, Location=self.sso_url)
        return serialize(root).decode()

    # signing --------------------------------------------------------------------------------

    def sign(
        self,
        element: etree._Element,
        *,
        key: KeyPair | None = None,
        signature_algorithm: str = "rsa-sha256",
        digest_algorithm: str = "sha256",
    ) -> etree._Element:
        """Add an enveloped signature to `element` (a Response or Assertion built by
        `response_tree`, perhaps after a test changed it). Returns the ds:Signature."""
        return sign_enveloped(
            element,
            key or self.signing_key,
            signature_algorithm=signature_algorithm,
            digest_algorithm=digest_algorithm,
        )

    # responses ------------------------------------------------------------------------------

    def response_tree(
        self,
        *,
        destination: str | None,
        audience: str | None,
        recipient: str | None = SAME,
        in_response_to: str | None = None,
        name_id: str | None = "user@example.com",
        name_id_format: str | None = NAMEID_EMAIL,
        sp_name_qualifier: str | None = None,
        attributes: Attributes | None = None,
        attribute_name_format: str | None = ATTRNAME_BASIC,
        session_index: str | None = SAME,
        now: dt.datetime | None = None,
        issue_instant: dt.datetime | None = None,
        not_before: dt.timedelta | dt.datetime | None = dt.timedelta(minutes=-1),
        not_on_or_after: dt.timedelta | dt.datetime | None = dt.timedelta(minutes=5),
        subject_not_on_or_after: dt.timedelta | dt.datetime | None = SAME,
        session_not_on_or_after: dt.timedelta | dt.datetime | None = None,
        authn_context: str = AC_PASSWORD_PROTECTED,
        assertion_id: str | None = None,
        response_id: str | None = None,
        issuer: str | None = SAME,
        status: str = "Success",
        status_message: str | None = None,
        sign_assertion: bool = True,
        sign_response: bool = False,
        encrypt_to_cert: str | bytes | x509.Certificate | None = None,
        encrypt_name_id_to_cert: str | bytes | x509.Certificate | None = None,
        encryption_algorithm: str = "aes256-gcm",
        signature_algorithm: str = "rsa-sha256",
        digest_algorithm: str = "sha256",
        key: KeyPair | None = None,
    ) -> etree._Element:
        """`response()` as an lxml tree (the samlp:Response element); the arguments are
        documented on `response()`. Change the tree and re-sign with `sign()` if needed."""
        now = now or utcnow()
        issued = issue_instant or now
        issuer = self.entity_id if issuer is SAME else issuer
        recipient = destination if recipient is SAME else recipient
        subject_nooa = (
            not_on_or_after if subject_not_on_or_after is SAME else subject_not_on_or_after
        )
        assertion_id = assertion_id or new_id()
        session_index = "_session" + assertion_id if session_index is SAME else session_index
        signing = {
            "key": key,
            "signature_algorithm": signature_algorithm,
            "digest_algorithm": digest_algorithm,
        }

        response = sub(
            None,
            "samlp:Response",
            nsmap={"samlp": NS["samlp"], "saml": NS["saml"]},
            ID=response_id or new_id(),
            Version="2.0",
            IssueInstant=instant(issued),
            Destination=destination,
            InResponseTo=in_response_to,
        )
        if issuer is not None:
            sub(response, "saml:Issuer", issuer)
        status_element = sub(response, "samlp:Status")
        sub(status_element, "samlp:StatusCode", Value=_status(status))
        if status_message is not None:
            sub(status_element, "samlp:StatusMessage", status_message)

        if _status(status) == _status("Success"):
            assertion = sub(
                response,
                "saml:Assertion",
                nsmap={"saml": NS["saml"], "xs": NS["xs"], "xsi": NS["xsi"]},
                ID=assertion_id,
                Version="2.0",
                IssueInstant=instant(issued),
            )
            if issuer is not None:
                sub(assertion, "saml:Issuer", issuer)
            subject = sub(assertion, "saml:Subject")
            if name_id is not None:
                name = sub(
                    subject,
                    "saml:NameID",
                    name_id,
                    Format=name_id_format,
                    SPNameQualifier=sp_name_qualifier,
                )
                if encrypt_name_id_to_cert is not None:  # an EncryptedID in its place
                    encrypted_id = sub(None, "saml:EncryptedID")
                    encrypted_id.append(
                        encrypt_element(
                            name, encrypt_name_id_to_cert, algorithm=encryption_algorithm
                        )
                    )
                    name.addprevious(encrypted_id)
                    subject.remove(name)
            confirmation = sub(subject, "saml:SubjectConfirmation", Method=CM_BEARER)
            sub(
                confirmation,
                "saml:SubjectConfirmationData",
                NotOnOrAfter=at(now, subject_nooa),
                Recipient=recipient,
                InResponseTo=in_response_to,
            )
            conditions = sub(
                assertion,
                "saml:Conditions",
                NotBefore=at(now, not_before),
                NotOnOrAfter=at(now, not_on_or_after),
            )
            if audience is not None:
                sub(sub(conditions, "saml:AudienceRestriction"), "saml:Audience", audience)
            authn = sub(
                assertion,
                "saml:AuthnStatement",
                AuthnInstant=instant(issued),
                SessionIndex=session_index,
                SessionNotOnOrAfter=at(now, session_not_on_or_after),
            )
            sub(sub(authn, "saml:AuthnContext"), "saml:AuthnContextClassRef", authn_context)
            pairs = list(attributes.items()) if isinstance(attributes, Mapping) else attributes
            if pairs:
                statement = sub(assertion, "saml:AttributeStatement")
                for name, values in pairs:
                    attribute = sub(
                        statement, "saml:Attribute", Name=name, NameFormat=attribute_name_format
                    )
                    for value in [values] if isinstance(values, str) else values:
                        sub(attribute, "saml:AttributeValue", value, xsi_type="xs:string")
            if sign_assertion:
                self.sign(assertion, **signing)
            if encrypt_to_cert is not None:
                encrypted = sub(None, "saml:EncryptedAssertion")
                encrypted.append(
                    encrypt_element(assertion, encrypt_to_cert, algorithm=encryption_algorithm)
                )
                assertion.addprevious(encrypted)
                response.remove(assertion)
        if sign_response:
            self.sign(response, **signing)
        return response

    def response(self, **kwargs: Any) -> bytes:
        """A complete samlp:Response (UTF-8 bytes with an XML declaration).

        Required: `destination` (Response@Destination) and `audience` (the SP entity ID); None
        leaves either out. `recipient` defaults to `destination`. `in_response_to` goes on both
        the Response and the SubjectConfirmationData (None: unsolicited). Times are UTC,
        seconds precision, relative to `now` (default: the current time): `not_before`
        (-1 min), `not_on_or_after` (+5 min, also SubjectConfirmationData's unless
        `subject_not_on_or_after` is given), `session_not_on_or_after` (absent); each takes a
        timedelta, an absolute datetime or None (left out). IDs default to '_' + 32 hex digits;
        SessionIndex to '_session' + assertion ID. `attributes` maps a Name to its values (a list
        of pairs allows a repeated Name); each value is an xs:string AttributeValue. The
        assertion is signed (sign_assertion=True), the Response too with sign_response=True
        (after any encryption). `encrypt_to_cert` (PEM, DER, base64 body or x509.Certificate:
        the SP's encryption cert) turns the assertion into an EncryptedAssertion
        (`encryption_algorithm` aes256-gcm | aes128-gcm | aes128-cbc | aes256-cbc, key
        transport RSA-OAEP-MGF1P), signed before it is encrypted. `encrypt_name_id_to_cert`
        puts a saml:EncryptedID (the NameID encrypted to that cert, the same algorithms) in the
        Subject instead of the NameID, before the assertion is signed. A `status` other than Success
        ('Responder', 'AuthnFailed' or a full URI) gives a Response without an assertion."""
        return serialize(self.response_tree(**kwargs))

    @staticmethod
    def post_form(response_xml: bytes, relay_state: str | None = None) -> dict[str, str]:
        """{"SAMLResponse": base64, "RelayState": ...} for an HTTP-POST to the SP's ACS."""
        return bindings.post_form(response_xml, relay_state)

    # logout ---------------------------------------------------------------------------------

    def logout_request(
        self,
        destination: str,
        name_id: str,
        session_index: str | Sequence[str] | None = None,
        *,
        sign: bool = True,
        relay_state: str | None = None,
        name_id_format: str | None = NAMEID_EMAIL,
        request_id: str | None = None,
        now: dt.datetime | None = None,
        not_on_or_after: dt.timedelta | dt.datetime | None = None,
        issuer: str | None = SAME,
        signature_algorithm: str = "rsa-sha256",
        key: KeyPair | None = None,
    ) -> bindings.Redirect:
        """An IdP-initiated samlp:LogoutRequest for the HTTP-Redirect binding (deflated,
        base64, query-string signature when `sign`). `.url` is what the browser would GET."""
        now = now or utcnow()
        request_id = request_id or new_id()
        root = sub(
            None,
            "samlp:LogoutRequest",
            nsmap={"samlp": NS["samlp"], "saml": NS["saml"]},
            ID=request_id,
            Version="2.0",
            IssueInstant=instant(now),
            Destination=destination,
            NotOnOrAfter=at(now, not_on_or_after),
        )
        issuer = self.entity_id if issuer is SAME else issuer
        if issuer is not None:
            sub(root, "saml:Issuer", issuer)
        sub(root, "saml:NameID", name_id, Format=name_id_format)
        indexes = [session_index] if isinstance(session_index, str) else session_index or []
        for index in indexes:
            sub(root, "samlp:SessionIndex", index)
        return bindings.redirect(
            destination,
            "SAMLRequest",
            serialize(root),
            request_id,
            relay_state=relay_state,
            key=(key or self.signing_key) if sign else None,
            signature_algorithm=signature_algorithm,
        )

    def logout_response(
        self,
        destination: str,
        in_response_to: str | None,
        status: str = "Success",
        *,
        sign: bool = True,
        relay_state: str | None = None,
        response_id: str | None = None,
        now: dt.datetime | None = None,
        issuer: str | None = SAME,
        signature_algorithm: str = "rsa-sha256",
        key: KeyPair | None = None,
    ) -> bindings.Redirect:
        """The IdP's samlp:LogoutResponse to an SP-initiated LogoutRequest, for the
        HTTP-Redirect binding. `status` is a short name ('Success', 'Responder') or a URI."""
        response_id = response_id or new_id()
        root = sub(
            None,
            "samlp:LogoutResponse",
            nsmap={"samlp": NS["samlp"], "saml": NS["saml"]},
            ID=response_id,
            Version="2.0",
            IssueInstant=instant(now or utcnow()),
            Destination=destination,
            InResponseTo=in_response_to,
        )
        issuer = self.entity_id if issuer is SAME else issuer
        if issuer is not None:
            sub(root, "saml:Issuer", issuer)
        sub(sub(root, "samlp:Status"), "samlp:StatusCode", Value=_status(status))
        return bindings.redirect(
            destination,
            "SAMLResponse",
            serialize(root),
            response_id,
            relay_state=relay_state,
            key=(key or self.signing_key) if sign else None,
            signature_algorithm=signature_algorithm,
        )
