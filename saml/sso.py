"""SAML 2.0 SP on python3-saml, hardened beyond it (DESIGN §6).

python3-saml 1.16 alone accepts what a production SP must refuse: prefix-matched Destinations,
substring-matched Recipients, responses without an Audience or an expiry, XSLT transforms that
burn CPU before any check, unsolicited responses even when a request ID is given (it compares
only the unsigned Response@InResponseTo), and replays (it keeps no cache). So every response is
first parsed here with a parser that refuses DTDs, its transforms are limited to
enveloped-signature and exclusive c14n, and after the library's signature and condition checks
the signed assertion's Destination, Recipient, Audience, expiry and InResponseTo are checked
exactly, and its ID is recorded in the shared replay cache.

Each IdP of an account has its own ACS and SLS (`/acs/<idp>`, `/sls/<idp>`) and a metadata
document naming them, so every flow of every IdP is told apart by the URL it arrives at; the
account-wide `/acs` and `/sls` stay for one-IdP set-ups and answers to our own requests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import threading
from copy import deepcopy
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import onelogin.saml2
from lxml import etree
from onelogin.saml2.constants import OneLogin_Saml2_Constants as C
from onelogin.saml2.errors import OneLogin_Saml2_ValidationError as VE
from onelogin.saml2.response import OneLogin_Saml2_Response
from onelogin.saml2.settings import OneLogin_Saml2_Settings
from onelogin.saml2.utils import OneLogin_Saml2_Utils
from onelogin.saml2.xml_utils import OneLogin_Saml2_XML
from sqlalchemy import bindparam, delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bridge import test_logins
from bridge.models import Account, AuthnRequest, IdentityProvider, SeenAssertion, utcnow
from bridge.sessions import NameId
from bridge.sp_keys import KeyPair
from bridge.store import Store
from saml.errors import SamlRejected

NS = {"samlp": C.NS_SAMLP, "saml": C.NS_SAML, "ds": C.NS_DS, "xenc": C.NS_XENC}
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ALLOWED_TRANSFORMS = {ENVELOPED, EXC_C14N}
MAX_RESPONSE = 256 * 1024
REQUEST_TTL = timedelta(minutes=10)
_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, dtd_validation=False
)

# python3-saml 1.16 reads and compiles the protocol XSD on every validation (most of its time):
# compile each schema once per thread instead (lxml schemas are not shared across threads).
_schemas = threading.local()
_SCHEMA_DIR = Path(onelogin.saml2.__file__).parent / "schemas"
# libxml2 sets up its built-in schema types on the first compile in a process, not thread-safely:
# two request threads compiling at once could fail, and leave every later compile in that worker
# failing too (all its logins refused as `invalid`). So compile one at a time, and once here, at
# import, before any request thread runs.
_compiling = threading.Lock()


def _schema(name: str) -> Any:
    cached = getattr(_schemas, "by_name", None)
    if cached is None:
        cached = _schemas.by_name = {}
    if name not in cached:
        with _compiling:
            cached[name] = etree.XMLSchema(etree.parse(str(_SCHEMA_DIR / name)))
    return cached[name]


def _validate_xml(xml: Any, schema: str, debug: bool = False) -> Any:
    try:
        xml = OneLogin_Saml2_XML.to_etree(xml)
    except Exception:  # the library's contract: a string names the failure
        return "unloaded_xml"
    compiled = _schema(schema)
    with _compiling:  # a check beside another thread's compile could fail too (a fork test)
        return xml if compiled.validate(xml) else "invalid_xml"


_schema("saml-schema-protocol-2.0.xsd")
OneLogin_Saml2_XML.validate_xml = staticmethod(_validate_xml)  # type: ignore[method-assign]

# An IdP that encrypts to a certificate other than ours: set up with another SP's, or with
# one of ours since retired (the console's SAML page and our metadata give the current one).
UNDECRYPTABLE = (
    "the {what} is encrypted to a certificate this account does not hold: give the IdP the "
    "encryption certificate in this account's SP metadata"
)
# Library error codes -> the typed reasons recorded for every refused login.
REASONS = {
    VE.ASSERTION_EXPIRED: "expired",
    VE.SESSION_EXPIRED: "expired",
    VE.RESPONSE_EXPIRED: "expired",
    VE.ASSERTION_TOO_EARLY: "not_yet_valid",
    VE.WRONG_AUDIENCE: "wrong_audience",
    VE.WRONG_DESTINATION: "wrong_destination",
    VE.EMPTY_DESTINATION: "wrong_destination",
    VE.WRONG_SUBJECTCONFIRMATION: "wrong_recipient",
    VE.WRONG_INRESPONSETO: "unknown_in_response_to",
    VE.WRONG_ISSUER: "wrong_issuer",
    VE.INVALID_SIGNATURE: "bad_signature",
    VE.NO_SIGNED_ASSERTION: "unsigned",
    VE.NO_SIGNATURE_FOUND: "unsigned",
    VE.NO_SIGNED_MESSAGE: "unsigned",
    VE.DEPRECATED_SIGNATURE_METHOD: "deprecated_algorithm",
    VE.DEPRECATED_DIGEST_METHOD: "deprecated_algorithm",
    VE.STATUS_CODE_IS_NOT_SUCCESS: "idp_error",
}


@dataclass(frozen=True)
class Sp:
    """The SP side of one account: its URLs and keys."""

    slug: str
    base_url: str
    keys: tuple[KeyPair, ...]

    @property
    def entity_id(self) -> str:
        return f"{self.base_url}/saml/{self.slug}/metadata"

    @property
    def acs_url(self) -> str:
        return f"{self.base_url}/saml/{self.slug}/acs"

    @property
    def sls_url(self) -> str:
        return f"{self.base_url}/saml/{self.slug}/sls"

    def acs_url_for(self, idp_name: str) -> str:
        """The ACS an IdP is given: its own, so an unsolicited response names its IdP."""
        return f"{self.acs_url}/{idp_name}"

    def sls_url_for(self, idp_name: str) -> str:
        return f"{self.sls_url}/{idp_name}"

    def metadata_url_for(self, idp_name: str) -> str:
        return f"{self.entity_id}/{idp_name}"


IdpKey = tuple[str, str, str, str | None, tuple[str, ...], bool]


def settings(sp: Sp, idp: IdentityProvider | None, *, key: KeyPair | None = None) -> Any:
    """python3-saml settings for this SP (and IdP), with every security switch set explicitly;
    with an IdP, the SP endpoints are that IdP's own."""
    previous = sp.keys[1].cert_b64 if len(sp.keys) > 1 else None
    return _settings(sp, _idp_key(idp), key or sp.keys[0], previous, False)


def slo_settings(sp: Sp, idp: IdentityProvider) -> Any:
    """Settings for single logout: LogoutRequests and LogoutResponses must be signed."""
    previous = sp.keys[1].cert_b64 if len(sp.keys) > 1 else None
    return _settings(sp, _idp_key(idp), sp.keys[0], previous, True)


def _idp_key(idp: IdentityProvider | None) -> IdpKey | None:
    if idp is None:
        return None
    return (
        idp.name,
        idp.entity_id,
        idp.sso_url,
        idp.slo_url,
        tuple(idp.certificates.get("signing", [])),
        bool(idp.accept_response_signature),
    )


@lru_cache(maxsize=512)
def _settings(
    sp: Sp,
    idp: IdpKey | None,
    key: KeyPair,
    previous_cert: str | None,
    signed_messages: bool,
) -> Any:
    acs, sls = (sp.acs_url_for(idp[0]), sp.sls_url_for(idp[0])) if idp else (sp.acs_url, sp.sls_url)
    data: dict[str, Any] = {
        "strict": True,
        "debug": False,
        "sp": {
            "entityId": sp.entity_id,
            "assertionConsumerService": {"url": acs, "binding": C.BINDING_HTTP_POST},
            "singleLogoutService": {"url": sls, "binding": C.BINDING_HTTP_REDIRECT},
            "NameIDFormat": C.NAMEID_UNSPECIFIED,
            "x509cert": key.cert_b64,
            "privateKey": key.key_pem,
        },
        "security": {
            "authnRequestsSigned": True,
            "logoutRequestSigned": True,
            "logoutResponseSigned": True,
            # strict by default; per IdP, a signed Response may cover an unsigned assertion
            # (SAML Profiles 4.1.3.5). python3-saml always demands one of the two signatures.
            "wantAssertionsSigned": not (idp and idp[5]),
            # one switch in python3-saml for POST Responses and Redirect logout messages: on for
            # logout only, since most IdPs sign the assertion rather than the Response
            "wantMessagesSigned": signed_messages,
            "wantNameId": True,
            "wantAttributeStatement": False,
            "requestedAuthnContext": False,
            "allowRepeatAttributeName": True,
            "rejectDeprecatedAlgorithm": True,
            "signatureAlgorithm": C.RSA_SHA256,
            "digestAlgorithm": C.SHA256,
            "wantNameIdEncrypted": False,
            "wantAssertionsEncrypted": False,
        },
    }
    if previous_cert:  # published during a rotation so IdPs can still encrypt to it
        data["sp"]["x509certNew"] = previous_cert
    if idp is not None:
        _name, entity_id, sso, slo, certs, _response_signature = idp
        data["idp"] = {
            "entityId": entity_id,
            "singleSignOnService": {"url": sso, "binding": C.BINDING_HTTP_REDIRECT},
            "x509certMulti": {"signing": list(certs)},
        }
        if slo:
            data["idp"]["singleLogoutService"] = {"url": slo, "binding": C.BINDING_HTTP_REDIRECT}
    return OneLogin_Saml2_Settings(data, sp_validation_only=idp is None)


def metadata(sp: Sp, idp: IdentityProvider | None = None) -> str:
    """SP metadata: entity ID, ACS, SLS (the IdP's own with `idp`), WantAssertionsSigned as
    enforced, and every published key for signing and encryption (python3-saml lists encryption
    keys only when it requires encryption; we accept either)."""
    config = settings(sp, idp)
    builder = config.metadata_class
    xml = builder.builder(
        config.get_sp_data(),
        True,
        config.get_security_data()["wantAssertionsSigned"],
        None,
        None,
        config.get_contacts(),
        config.get_organization(),
    )
    for key in reversed(sp.keys):
        xml = builder.add_x509_key_descriptors(xml, key.cert_b64, True)
    return xml.decode() if isinstance(xml, bytes) else str(xml)


def request_data(
    sp: Sp, path: str, *, post: dict[str, str] | None = None, get: dict[str, str] | None = None
) -> dict[str, Any]:
    """The request as python3-saml wants it, built from our configured base URL (never from the
    Host header), so Destination checks compare against the URL we publish."""
    parts = urlsplit(sp.base_url)
    return {
        "https": "on" if parts.scheme == "https" else "off",
        "http_host": parts.netloc,
        "script_name": parts.path + path,
        "get_data": get or {},
        "post_data": post or {},
    }


@dataclass(frozen=True)
class Assertion:
    """What a valid response says, once every check passed."""

    idp: IdentityProvider
    name_id: str
    name_id_format: str | None
    subject: NameId
    session_index: str | None
    attributes: dict[str, list[str]]
    in_response_to: str | None
    relay_state: str | None
    assertion_id: str
    expires: datetime
    authn_instant: datetime | None = None


def decode(form_value: str | None) -> bytes:
    """The XML of a SAMLResponse form field, strictly base64, within the size limit."""
    if not form_value:
        raise SamlRejected("malformed", "the request carries no SAMLResponse")
    try:
        xml = base64.b64decode("".join(form_value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise SamlRejected("malformed", "the SAMLResponse is not base64") from None
    if len(xml) > MAX_RESPONSE:
        raise SamlRejected("too_large", f"the SAMLResponse is larger than {MAX_RESPONSE} bytes")
    return xml


def inspect(xml: bytes) -> etree._Element:
    """Parse with DTDs refused and check the shape before any signature work (§6)."""
    try:
        root = etree.fromstring(xml, _PARSER)
    except etree.XMLSyntaxError:
        raise SamlRejected("malformed", "the SAMLResponse is not well-formed XML") from None
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None:
        raise SamlRejected("malformed", "DTDs are not allowed in SAML messages")
    if root.tag != f"{{{C.NS_SAMLP}}}Response":
        raise SamlRejected("malformed", "the message is not a samlp:Response")
    _check_transforms(root)
    count = len(root.findall("saml:Assertion", NS)) + len(
        root.findall("saml:EncryptedAssertion", NS)
    )
    if count != 1 or len(root.findall(".//saml:Assertion", NS)) > 1:
        raise SamlRejected("malformed", "the response must carry exactly one assertion")
    return root


def _check_transforms(root: etree._Element) -> None:
    for transform in root.iterfind(".//ds:Transform", NS):
        if transform.get("Algorithm") not in ALLOWED_TRANSFORMS:
            raise SamlRejected(
                "forbidden_transform",
                f"signature transform {transform.get('Algorithm')!r} is not allowed",
            )
    for method in root.iterfind(".//ds:CanonicalizationMethod", NS):
        if method.get("Algorithm") != "http://www.w3.org/2001/10/xml-exc-c14n#":
            raise SamlRejected("forbidden_transform", "only exclusive c14n is allowed")


def issuer(root: etree._Element) -> str | None:
    found = root.find("saml:Issuer", NS)
    if found is None:
        found = root.find("saml:Assertion/saml:Issuer", NS)
    return None if found is None else (found.text or "").strip()


def validate(
    sp: Sp, idp: IdentityProvider, form: dict[str, str], path: str, acs_url: str
) -> Assertion:
    """Run python3-saml's checks and ours (no writes: `claim` then records the assertion);
    `acs_url` is the ACS it was posted to, which Destination and Recipient must name exactly."""
    raw = form["SAMLResponse"]
    response, opened = None, False
    for key in sp.keys:  # during a rotation the IdP may still encrypt to the previous key
        try:
            candidate = _Response(settings(sp, idp, key=key), raw)
        except Exception as exc:  # decryption and parse errors of every kind
            last = exc
            continue
        response = response or candidate
        if _opens_name_id(candidate, key):
            response, opened = candidate, True
            break
    if response is None:
        if inspect(decode(raw)).find("saml:EncryptedAssertion", NS) is not None:
            raise SamlRejected("undecryptable", UNDECRYPTABLE.format(what="assertion"))
        raise SamlRejected("malformed", f"the response cannot be read ({type(last).__name__})")
    if not opened:
        raise SamlRejected("undecryptable", UNDECRYPTABLE.format(what="NameID (EncryptedID)"))
    document = response.decrypted_document if response.encrypted else response.document
    if response.encrypted:
        _check_transforms(document)
    try:
        response.is_valid(request_data(sp, path, post=form), raise_exceptions=True)
        # once: the library's get_nameid and get_nameid_format each read it again (and decrypt
        # an EncryptedID again), with the same checks
        name_data = response.get_nameid_data()
        name_id = name_data.get("Value")
    except VE as exc:
        raise SamlRejected(REASONS.get(exc.code, "invalid"), str(exc)) from None
    except Exception as exc:  # anything else the library raises is a bad message, not a 500
        raise SamlRejected("invalid", f"{type(exc).__name__}: {exc}") from None
    assertion = document.find("saml:Assertion", NS)
    if assertion is None:
        assertion = document.find(".//saml:Assertion", NS)
    _exact(document.get("Destination"), acs_url, "wrong_destination", "Destination")
    data = assertion.find("saml:Subject/saml:SubjectConfirmation/saml:SubjectConfirmationData", NS)
    if data is None:
        raise SamlRejected("wrong_recipient", "the assertion has no SubjectConfirmationData")
    _exact(data.get("Recipient"), acs_url, "wrong_recipient", "Recipient")
    audiences = [
        a.text
        for a in assertion.iterfind("saml:Conditions/saml:AudienceRestriction/saml:Audience", NS)
    ]
    if sp.entity_id not in audiences:
        raise SamlRejected("wrong_audience", f"the assertion is not for audience {sp.entity_id}")
    expiry = data.get("NotOnOrAfter") or assertion.find("saml:Conditions", NS).get("NotOnOrAfter")
    if not expiry:
        raise SamlRejected("expired", "the assertion carries no expiry (NotOnOrAfter)")
    in_response_to = data.get("InResponseTo")  # signed: the Response's own copy is not
    if not in_response_to and not idp.allow_idp_initiated:
        raise SamlRejected(
            "idp_initiated_not_allowed",
            "this IdP may not start logins; sign in from the product's login page",
        )
    if not assertion.get("ID"):
        raise SamlRejected("malformed", "the assertion has no ID")
    return Assertion(
        idp=idp,
        name_id=name_id,
        name_id_format=name_data.get("Format"),
        subject=_subject(name_data, assertion, name_id),
        session_index=response.get_session_index(),
        attributes={k: [str(v) for v in vs] for k, vs in response.get_attributes().items()},
        in_response_to=in_response_to,
        relay_state=form.get("RelayState"),
        assertion_id=assertion.get("ID"),
        expires=_instant(expiry),
        authn_instant=_authn_instant(assertion),
    )


def _opens_name_id(response: OneLogin_Saml2_Response, key: KeyPair) -> bool:
    """Whether `key` decrypts the assertion's EncryptedID (True when the NameID is plain): an
    IdP may encrypt the NameID alone, to the previous key during a rotation, and the library
    decrypts it only later (get_nameid_data), with the one key its settings hold."""
    document = response.decrypted_document if response.encrypted else response.document
    found = document.findall("saml:Assertion/saml:Subject/saml:EncryptedID/xenc:EncryptedData", NS)
    if not found:
        return True
    try:
        OneLogin_Saml2_Utils.decrypt_element(found[0], key.key_pem)  # on a copy
    except Exception:  # any key that cannot open it: the next one may
        return False
    return True


def _authn_instant(assertion: etree._Element) -> datetime | None:
    """When the IdP authenticated the person (the signed AuthnStatement's AuthnInstant)."""
    statement = assertion.find("saml:AuthnStatement", NS)
    text = None if statement is None else statement.get("AuthnInstant")
    try:
        return _instant(text) if text else None
    except ValueError:
        raise SamlRejected("malformed", "the AuthnStatement's AuthnInstant is no time") from None


def _subject(data: dict[str, Any], assertion: etree._Element, value: str) -> NameId:
    """The whole NameID: value, Format and qualifiers (SPProvidedID only when not encrypted)."""
    plain = assertion.find("saml:Subject/saml:NameID", NS)
    return NameId(
        value,
        data.get("Format"),
        data.get("NameQualifier"),
        data.get("SPNameQualifier"),
        plain.get("SPProvidedID") if plain is not None else None,
    )


class _Response(OneLogin_Saml2_Response):  # type: ignore[misc]
    """python3-saml's Response, with the decrypted assertion kept as the IdP signed it.

    The library decrypts the assertion inside its EncryptedAssertion and then moves it into the
    Response with lxml, which drops namespace declarations the new parent already has under
    another prefix and re-prefixes the assertion: its exclusive-c14n form changes and a valid
    signature fails (python3-saml#180, the same bug in php-saml with ADFS). Here the assertion
    is decrypted in a document of its own, serialised with its own prefixes, and put into the
    Response as text, so the signature is checked on the assertion the IdP signed; every other
    check runs unchanged on the resulting document.
    """

    def _decrypt_assertion(self, xml: Any) -> Any:
        found = OneLogin_Saml2_XML.query(xml, "/samlp:Response/saml:EncryptedAssertion")
        if not found:
            return xml
        alone = deepcopy(found[0])  # a document of its own, ancestors' declarations copied
        data = alone.find("xenc:EncryptedData", NS)
        keyinfo = None if data is None else data.find("ds:KeyInfo", NS)
        if keyinfo is None or len(keyinfo) == 0:
            raise VE("the EncryptedData has no KeyInfo", VE.KEYINFO_NOT_FOUND_IN_ENCRYPTED_DATA)
        for method in keyinfo.findall("ds:RetrievalMethod", NS):  # XML Encryption 3.5.2
            if method.get("Type") != "http://www.w3.org/2001/04/xmlenc#EncryptedKey":
                raise VE("unsupported RetrievalMethod", VE.UNSUPPORTED_RETRIEVAL_METHOD)
            uri = method.get("URI") or ""
            for encrypted_key in alone.xpath(
                "./xenc:EncryptedKey[@Id=$id]", namespaces=NS, id=uri.removeprefix("#")
            ):
                keyinfo.append(encrypted_key)
        assertion = OneLogin_Saml2_Utils.decrypt_element(
            data, self._settings.get_sp_key(), inplace=True
        )
        if (
            not isinstance(assertion, etree._Element)
            or assertion.tag != f"{{{C.NS_SAML}}}Assertion"
            or len(alone) != 1
        ):
            raise VE(
                "the EncryptedAssertion holds no single assertion", VE.WRONG_NUMBER_OF_ASSERTIONS
            )
        plaintext = etree.tostring(assertion)
        target = f"bridge-assertion-{secrets.token_hex(16)}"
        found[0].getparent().replace(found[0], etree.ProcessingInstruction(target))
        text = etree.tostring(xml)
        marker = f"<?{target} ?>".encode()
        if text.count(marker) != 1:
            raise VE("the response cannot be rebuilt around its assertion", VE.MISSING_ID)
        return etree.fromstring(text.replace(marker, plaintext), _PARSER)


def _exact(value: str | None, wanted: str, reason: str, what: str) -> None:
    if value != wanted:
        raise SamlRejected(reason, f"{what} is {value!r}, not {wanted!r}")


def _instant(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# An IdP's clock may trail ours: python3-saml's allowed drift for its own time checks.
FORCE_AUTHN_SKEW = timedelta(seconds=C.ALLOWED_CLOCK_DRIFT)


def browser_hash(nonce: str) -> str:
    """What a pending login keeps of the nonce in its browser's cookie."""
    return hashlib.sha256(nonce.encode()).hexdigest()


def remember_request(
    store: Store,
    account: Account,
    idp: IdentityProvider,
    request_id: str,
    relay_state: str | None,
    nonce: str,
    *,
    force_authn: bool = False,
) -> None:
    """Keep an AuthnRequest ID, bound to the browser holding `nonce`, until it comes back (once,
    to that browser) or expires."""
    store.write(
        lambda db: remember_request_in(
            db, account, idp, request_id, relay_state, nonce, force_authn=force_authn
        )
    )


def remember_request_in(
    db: Any,
    account: Account,
    idp: IdentityProvider,
    request_id: str,
    relay_state: str | None,
    nonce: str,
    *,
    force_authn: bool = False,
) -> None:
    """`remember_request` inside the caller's transaction (a test login claims its link in it)."""
    db.execute(delete(AuthnRequest).where(AuthnRequest.expires < utcnow()))
    db.add(
        AuthnRequest(
            id=request_id,
            account_id=account.id,
            idp_id=idp.id,
            relay_state=relay_state,
            browser_hash=browser_hash(nonce),
            force_authn=force_authn,
            expires=utcnow() + REQUEST_TTL,
        )
    )


_SEEN_TABLE = SeenAssertion.__table__
# The replay cache's insert, built once per dialect (PostgreSQL, SQLite): the row's id comes back
# only when this transaction put it there.
_SEEN = tuple(
    insert(_SEEN_TABLE)
    .on_conflict_do_nothing(index_elements=["idp_id", "assertion_id"])
    .returning(_SEEN_TABLE.c.id)
    for insert in (pg_insert, sqlite_insert)
)


_REQUESTS = AuthnRequest.__table__
# A pending request used up in one statement, which also locks it: a concurrent claim of the
# same ID waits for this transaction and then finds nothing (or the row, if this one rolled back).
_USE_UP = (
    delete(_REQUESTS)
    .where(
        _REQUESTS.c.id == bindparam("request_id"),
        _REQUESTS.c.account_id == bindparam("account_id"),
    )
    .returning(*_REQUESTS.c)
)


def claim(
    db: Any,
    account: Account,
    idp: IdentityProvider,
    assertion: Assertion,
    nonce: str | None,
    *,
    test: bool = False,
) -> str | None:
    """Inside the login's transaction: use up the AuthnRequest the assertion answers (once, this
    IdP's, not expired, posted by the browser that started it: `nonce` from its cookie) and
    record the assertion ID in the replay cache; returns the RelayState kept with the request.
    A test login's request (bridge.test_logins) answers only `test=True`, and only it does."""
    relay = None
    if test and not assertion.in_response_to:
        raise SamlRejected("unknown_in_response_to", "a test login answers a request of ours")
    if assertion.in_response_to:
        # used up first, judged after: a refusal below rolls the deletion back with the rest
        row = (
            db.connection()
            .execute(_USE_UP, {"request_id": assertion.in_response_to, "account_id": account.id})
            .first()
        )
        if row is None or row.idp_id != idp.id or row.expires < utcnow():
            raise SamlRejected(
                "unknown_in_response_to", "the response answers no pending login of ours"
            )
        if test_logins.link_of(row.relay_state) is not None and not test:
            raise SamlRejected(
                "test_login_only", "the response answers a test login: it signs nobody in"
            )
        if test and test_logins.link_of(row.relay_state) is None:
            raise SamlRejected("unknown_in_response_to", "the response answers no test login")
        if nonce is None or row.browser_hash != browser_hash(nonce):
            # login CSRF: someone else's answer, posted from a browser that did not ask for it
            raise SamlRejected(
                "wrong_browser", "the response answers a login started in another browser"
            )
        if row.force_authn and (
            assertion.authn_instant is None
            or assertion.authn_instant < row.created - FORCE_AUTHN_SKEW
        ):
            # SAML Core §3.4.1: an IdP that ignored ForceAuthn answers with its old session
            raise SamlRejected(
                "not_reauthenticated",
                "ForceAuthn was asked but the IdP's AuthnInstant "
                f"({assertion.authn_instant or 'absent'}) is before the request",
                403,
            )
        relay = row.relay_state
    if secrets.randbelow(100) == 0:  # an occasional sweep keeps the cache small
        db.execute(delete(SeenAssertion).where(SeenAssertion.expires < utcnow()))
    keep_until = max(assertion.expires, utcnow()) + timedelta(minutes=5)  # beyond clock skew
    # One statement: the ID goes in unless it is there already (used, even if since expired and
    # not yet swept). A concurrent twin's insert waits for this one's transaction and then finds
    # the row (PostgreSQL; SQLite's writers take turns), so exactly one of them gets a row back.
    connection = db.connection()
    added = connection.execute(
        _SEEN[connection.dialect.name == "sqlite"],
        {"idp_id": idp.id, "assertion_id": assertion.assertion_id, "expires": keep_until},
    ).scalar()
    if added is None:
        raise SamlRejected("replayed", "this assertion was already used")
    return relay
