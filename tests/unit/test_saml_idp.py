"""Tests of the test IdP itself (tests/saml_idp): its signatures really verify (xmlsec, and
python3-saml as a sanity check), its messages match the SAML schemas, and each attack payload
is what it claims to be."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import zlib
from pathlib import Path
from urllib.parse import parse_qs, quote_plus, urlsplit

import lxml.etree as etree
import onelogin.saml2
import pytest
import xmlsec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser
from onelogin.saml2.response import OneLogin_Saml2_Response
from onelogin.saml2.settings import OneLogin_Saml2_Settings
from onelogin.saml2.utils import OneLogin_Saml2_Utils

from tests.saml_idp import (
    NS,
    XSW_VARIANTS,
    KeyPair,
    TestIdP,
    base64_not_xml,
    not_base64,
    parse_authn_request,
    parse_logout_request,
    parse_logout_response,
    parse_sp_metadata,
    post_form,
    truncated,
    verify_enveloped,
)
from tests.saml_idp.xmltools import load_certificate

SP_ENTITY = "https://sp.example.test/saml/acme/metadata"
ACS = "https://sp.example.test/saml/acme/acs"
SLS = "https://sp.example.test/saml/acme/sls"
BASE = {
    "destination": ACS,
    "audience": SP_ENTITY,
    "attributes": {"groups": ["admins", "staff"], "email": ["ann@example.com"]},
}
SCHEMAS = Path(onelogin.saml2.__file__).parent / "schemas"


# ---------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def idp() -> TestIdP:
    return TestIdP()


@pytest.fixture(scope="module")
def sp_key() -> KeyPair:
    return KeyPair.generate("SP")


@pytest.fixture(scope="module")
def protocol_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMAS / "saml-schema-protocol-2.0.xsd")))


def xpath(root: etree._Element, path: str) -> list[etree._Element]:
    return root.xpath(path, namespaces=NS)


def one(root: etree._Element, path: str) -> etree._Element:
    found = xpath(root, path)
    assert len(found) == 1, (path, found)
    return found[0]


def signature_of(
    root: etree._Element, path: str = "/samlp:Response/saml:Assertion"
) -> etree._Element:
    return one(root, path + "/ds:Signature")


def signed_target(signature: etree._Element) -> etree._Element:
    """The element the signature's Reference points at."""
    uri = one(signature, "ds:SignedInfo/ds:Reference").get("URI")
    return one(signature.getroottree().getroot(), f"//*[@ID='{uri[1:]}']")


def p3s_settings(idp: TestIdP, sp_key: KeyPair, **security: object) -> OneLogin_Saml2_Settings:
    """python3-saml settings (strict) for an SP trusting `idp` through its metadata."""
    idp_data = OneLogin_Saml2_IdPMetadataParser.parse(idp.metadata_xml())["idp"]
    return OneLogin_Saml2_Settings(
        {
            "strict": True,
            "sp": {
                "entityId": SP_ENTITY,
                "assertionConsumerService": {"url": ACS},
                "singleLogoutService": {"url": SLS},
                "x509cert": sp_key.cert_b64,
                "privateKey": sp_key.key_pem.decode(),
            },
            "idp": idp_data,
            "security": {
                "wantAssertionsSigned": True,
                "rejectDeprecatedAlgorithm": True,
                **security,
            },
        },
        sp_validation_only=True,
    )


def request_data(path: str, **extra: object) -> dict[str, object]:
    return {
        "https": "on",
        "http_host": "sp.example.test",
        "script_name": path,
        **extra,
    }


def p3s_accepts(settings: OneLogin_Saml2_Settings, xml: bytes, request_id: str | None = None):
    response = OneLogin_Saml2_Response(settings, post_form(xml)["SAMLResponse"])
    valid = response.is_valid(request_data("/saml/acme/acs"), request_id)
    return valid, response


def query_params(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


# ---------------------------------------------------------------------------------------------
# keys and metadata


def test_key_pair_and_certificate_forms():
    key = KeyPair.generate("Someone")
    cert = key.certificate
    assert cert.public_key().public_numbers() == key.private_key.public_key().public_numbers()
    for form in (key.cert_pem, key.cert_pem.encode(), key.cert_b64, base64.b64decode(key.cert_b64)):
        assert load_certificate(form) == cert


def test_metadata_is_schema_valid_and_lists_every_published_cert():
    idp = TestIdP(sso_url="https://idp.example.test/sso", slo_url="https://idp.example.test/slo")
    old = idp.signing_key
    new = idp.rollover()
    assert idp.signing_key is new and idp.keys == [old, new]
    xml = idp.metadata_xml()
    root = etree.fromstring(xml.encode())
    schema = etree.XMLSchema(etree.parse(str(SCHEMAS / "saml-schema-metadata-2.0.xsd")))
    assert schema.validate(root), schema.error_log
    assert root.get("entityID") == "https://idp.example.test/metadata"
    certs = xpath(root, "//md:KeyDescriptor[@use='signing']//ds:X509Certificate/text()")
    assert certs == [old.cert_b64, new.cert_b64]
    bindings = {
        e.get("Binding").rsplit(":", 1)[1]: e.get("Location")
        for e in xpath(root, "//md:SingleSignOnService")
    }
    assert bindings == {
        "HTTP-Redirect": "https://idp.example.test/sso",
        "HTTP-POST": "https://idp.example.test/sso",
    }
    assert one(root, "//md:SingleLogoutService").get("Location") == "https://idp.example.test/slo"
    assert xpath(root, "//md:NameIDFormat/text()")[0].endswith("emailAddress")
    parsed = OneLogin_Saml2_IdPMetadataParser.parse(xml)["idp"]
    assert parsed["x509certMulti"]["signing"] == [old.cert_b64, new.cert_b64]

    idp.retire(old)
    assert xpath(etree.fromstring(idp.metadata_xml().encode()), "//ds:X509Certificate/text()") == [
        new.cert_b64
    ]


def test_with_keys_publishes_exactly_those_keys():
    first, second = KeyPair.generate(), KeyPair.generate()
    idp = TestIdP.with_keys(first, second, signing_key=second, entity_id="https://other.test/")
    assert idp.keys == [first, second] and idp.signing_key is second
    assert idp.entity_id == "https://other.test/"
    assert isinstance(idp, TestIdP)


# ---------------------------------------------------------------------------------------------
# responses


def test_response_has_every_part_and_is_schema_valid(idp, protocol_schema):
    now = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    xml = idp.response(
        **BASE,
        in_response_to="_req1",
        name_id="ann@example.com",
        session_index="_sess1",
        now=now,
        assertion_id="_a1",
        response_id="_r1",
    )
    assert xml.startswith(b"<?xml")
    root = etree.fromstring(xml)
    assert protocol_schema.validate(root), protocol_schema.error_log
    assert root.tag == f"{{{NS['samlp']}}}Response"
    assert (root.get("ID"), root.get("Version"), root.get("InResponseTo")) == (
        "_r1",
        "2.0",
        "_req1",
    )
    assert root.get("Destination") == ACS
    assert root.get("IssueInstant") == "2030-01-02T03:04:05Z"
    assert one(root, "saml:Issuer").text == idp.entity_id
    assert one(root, "samlp:Status/samlp:StatusCode").get("Value").endswith(":Success")
    assertion = one(root, "saml:Assertion")
    assert assertion.get("ID") == "_a1"
    assert [child.tag.split("}")[1] for child in assertion] == [
        "Issuer",
        "Signature",
        "Subject",
        "Conditions",
        "AuthnStatement",
        "AttributeStatement",
    ]
    name_id = one(assertion, "saml:Subject/saml:NameID")
    assert name_id.text == "ann@example.com" and name_id.get("Format").endswith("emailAddress")
    confirmation = one(assertion, "saml:Subject/saml:SubjectConfirmation")
    assert confirmation.get("Method") == "urn:oasis:names:tc:SAML:2.0:cm:bearer"
    data = one(confirmation, "saml:SubjectConfirmationData")
    assert dict(data.attrib) == {
        "NotOnOrAfter": "2030-01-02T03:09:05Z",
        "Recipient": ACS,
        "InResponseTo": "_req1",
    }
    conditions = one(assertion, "saml:Conditions")
    assert conditions.get("NotBefore") == "2030-01-02T03:03:05Z"
    assert conditions.get("NotOnOrAfter") == "2030-01-02T03:09:05Z"
    assert one(conditions, "saml:AudienceRestriction/saml:Audience").text == SP_ENTITY
    authn = one(assertion, "saml:AuthnStatement")
    assert authn.get("SessionIndex") == "_sess1"
    assert authn.get("AuthnInstant") == "2030-01-02T03:04:05Z"
    values = {
        attribute.get("Name"): [value.text for value in attribute]
        for attribute in xpath(assertion, "saml:AttributeStatement/saml:Attribute")
    }
    assert values == BASE["attributes"]


def test_none_leaves_out_what_an_sp_must_insist_on(idp, protocol_schema):
    root = etree.fromstring(
        idp.response(
            destination=None,
            audience=None,
            recipient=None,
            not_before=None,
            not_on_or_after=None,
            session_index=None,
            attributes=None,
        )
    )
    assert protocol_schema.validate(root), protocol_schema.error_log
    assert root.get("Destination") is None and root.get("InResponseTo") is None
    assert not xpath(root, "//saml:AudienceRestriction | //saml:AttributeStatement")
    assert not xpath(root, "//@NotOnOrAfter | //@NotBefore | //@Recipient | //@SessionIndex")
    assert verify_enveloped(signature_of(root), idp.cert_pem)


def test_recipient_and_subject_expiry_can_differ_from_their_defaults(idp):
    root = etree.fromstring(
        idp.response(
            **BASE,
            recipient="https://elsewhere.test/acs",
            now=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
            subject_not_on_or_after=dt.timedelta(minutes=1),
            session_not_on_or_after=dt.datetime(2030, 1, 2, tzinfo=dt.UTC),
        )
    )
    data = one(root, "//saml:SubjectConfirmationData")
    assert data.get("Recipient") == "https://elsewhere.test/acs"
    assert data.get("NotOnOrAfter") == "2030-01-01T00:01:00Z"
    assert one(root, "//saml:Conditions").get("NotOnOrAfter") == "2030-01-01T00:05:00Z"
    assert one(root, "//saml:AuthnStatement").get("SessionNotOnOrAfter") == "2030-01-02T00:00:00Z"


def test_repeated_attribute_names_from_a_list_of_pairs(idp):
    root = etree.fromstring(
        idp.response(**{**BASE, "attributes": [("groups", ["a"]), ("groups", ["b", "c"])]})
    )
    assert [a.get("Name") for a in xpath(root, "//saml:Attribute")] == ["groups", "groups"]
    assert xpath(root, "//saml:AttributeValue/text()") == ["a", "b", "c"]


def test_failed_status_has_no_assertion(idp, protocol_schema):
    root = etree.fromstring(idp.response(**BASE, status="Responder", status_message="no"))
    assert protocol_schema.validate(root)
    assert one(root, "samlp:Status/samlp:StatusCode").get("Value") == (
        "urn:oasis:names:tc:SAML:2.0:status:Responder"
    )
    assert not xpath(root, "//saml:Assertion")


def test_assertion_signature_verifies_with_xmlsec_and_only_with_the_idp_cert(idp):
    root = etree.fromstring(idp.response(**BASE))
    signature = signature_of(root)
    assert signed_target(signature) is one(root, "saml:Assertion")
    transforms = xpath(
        signature, "ds:SignedInfo/ds:Reference/ds:Transforms/ds:Transform/@Algorithm"
    )
    assert transforms == [
        "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
        "http://www.w3.org/2001/10/xml-exc-c14n#",
    ]
    assert (
        one(signature, "ds:SignedInfo/ds:SignatureMethod").get("Algorithm").endswith("rsa-sha256")
    )
    assert verify_enveloped(signature, idp.cert_pem)
    assert not verify_enveloped(signature, KeyPair.generate().cert_pem)
    assert one(signature, "ds:KeyInfo/ds:X509Data/ds:X509Certificate").text.replace("\n", "") == (
        idp.cert_b64
    )


def test_signature_checked_by_a_bare_xmlsec_context(idp):
    """Independent of verify_enveloped: the plainest xmlsec check, as the xmlsec docs show."""
    root = etree.fromstring(idp.response(**BASE))
    assertion = one(root, "saml:Assertion")
    ctx = xmlsec.SignatureContext()
    ctx.register_id(assertion, "ID")
    ctx.key = xmlsec.Key.from_memory(idp.cert_pem.encode(), xmlsec.KeyFormat.CERT_PEM)
    ctx.verify(signature_of(root))


def test_python3_saml_validate_sign_agrees(idp):
    xml = idp.response(**BASE, sign_response=True)
    for path in (
        OneLogin_Saml2_Utils.ASSERTION_SIGNATURE_XPATH,
        OneLogin_Saml2_Utils.RESPONSE_SIGNATURE_XPATH,
    ):
        assert OneLogin_Saml2_Utils.validate_sign(xml, idp.cert_pem, xpath=path)
        assert not OneLogin_Saml2_Utils.validate_sign(xml, KeyPair.generate().cert_pem, xpath=path)


def test_response_signature_covers_the_signed_assertion(idp):
    root = etree.fromstring(idp.response(**BASE, sign_response=True))
    response_signature = signature_of(root, "/samlp:Response")
    assert signed_target(response_signature) is root
    assert [child.tag.split("}")[1] for child in root] == [
        "Issuer",
        "Signature",
        "Status",
        "Assertion",
    ]
    assert verify_enveloped(response_signature, idp.cert_pem)
    assert verify_enveloped(signature_of(root), idp.cert_pem)


def test_sha1_algorithms_on_request(idp):
    root = etree.fromstring(
        idp.response(**BASE, signature_algorithm="rsa-sha1", digest_algorithm="sha1")
    )
    signature = signature_of(root)
    assert xpath(signature, "ds:SignedInfo/ds:SignatureMethod/@Algorithm") == [
        "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
    ]
    assert xpath(signature, "ds:SignedInfo/ds:Reference/ds:DigestMethod/@Algorithm") == [
        "http://www.w3.org/2000/09/xmldsig#sha1"
    ]
    assert verify_enveloped(signature, idp.cert_pem)


def test_python3_saml_accepts_a_valid_response(idp, sp_key):
    settings = p3s_settings(idp, sp_key)
    valid, response = p3s_accepts(
        settings, idp.response(**BASE, in_response_to="_req9", name_id="ann@example.com"), "_req9"
    )
    assert valid, response.get_error()
    assert response.get_nameid() == "ann@example.com"
    assert response.get_attributes() == BASE["attributes"]


def test_key_rollover_old_and_new_keys(sp_key):
    idp = TestIdP()
    old = idp.signing_key
    trusting_old_only = p3s_settings(idp, sp_key)
    new = idp.rollover()
    trusting_both = p3s_settings(idp, sp_key)
    for key in (old, new):
        valid, response = p3s_accepts(trusting_both, idp.response(**BASE, key=key))
        assert valid, response.get_error()
    assert p3s_accepts(trusting_old_only, idp.response(**BASE, key=old))[0]
    assert not p3s_accepts(trusting_old_only, idp.response(**BASE))[0]  # signed with `new`


# ---------------------------------------------------------------------------------------------
# encryption


def decrypt(root: etree._Element, sp_key: KeyPair) -> etree._Element:
    manager = xmlsec.KeysManager()
    manager.add_key(xmlsec.Key.from_memory(sp_key.key_pem, xmlsec.KeyFormat.PEM))
    data = one(root, "saml:EncryptedAssertion/xenc:EncryptedData")
    return xmlsec.EncryptionContext(manager).decrypt(data)


@pytest.mark.parametrize(
    ("algorithm", "uri"),
    [
        ("aes256-gcm", "http://www.w3.org/2009/xmlenc11#aes256-gcm"),
        ("aes128-cbc", "http://www.w3.org/2001/04/xmlenc#aes128-cbc"),
    ],
)
def test_encrypted_assertion_decrypts_with_the_sp_key_and_stays_signed(
    idp, sp_key, protocol_schema, algorithm, uri
):
    xml = idp.response(
        **BASE,
        name_id="secret@example.com",
        encrypt_to_cert=sp_key.cert_b64,
        encryption_algorithm=algorithm,
    )
    assert b"secret@example.com" not in xml
    root = etree.fromstring(xml)
    assert protocol_schema.validate(root), protocol_schema.error_log
    assert not xpath(root, "saml:Assertion")
    data = one(root, "saml:EncryptedAssertion/xenc:EncryptedData")
    assert one(data, "xenc:EncryptionMethod").get("Algorithm") == uri
    assert one(data, "ds:KeyInfo/xenc:EncryptedKey/xenc:EncryptionMethod").get("Algorithm") == (
        "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"
    )
    assertion = decrypt(root, sp_key)
    assert assertion.tag == f"{{{NS['saml']}}}Assertion"
    assert one(assertion, "saml:Subject/saml:NameID").text == "secret@example.com"
    assert verify_enveloped(one(assertion, "ds:Signature"), idp.cert_pem)


def test_python3_saml_decrypts_and_accepts(idp, sp_key):
    settings = p3s_settings(idp, sp_key, wantAssertionsEncrypted=True)
    for algorithm in ("aes256-gcm", "aes128-cbc"):
        xml = idp.response(
            **BASE,
            encrypt_to_cert=sp_key.cert_pem,
            encryption_algorithm=algorithm,
            sign_response=True,
        )
        valid, response = p3s_accepts(settings, xml)
        assert valid, response.get_error()
        assert response.get_nameid() == "user@example.com"


# ---------------------------------------------------------------------------------------------
# HTTP-POST and HTTP-Redirect


def test_post_form(idp):
    xml = idp.response(**BASE)
    form = idp.post_form(xml, relay_state="/next")
    assert base64.b64decode(form["SAMLResponse"], validate=True) == xml
    assert form["RelayState"] == "/next"
    assert set(idp.post_form(xml)) == {"SAMLResponse"}


def test_logout_request_redirect_binding(idp, protocol_schema):
    redirect = idp.logout_request(SLS, "ann@example.com", "_sess1", relay_state="back to / now")
    assert redirect.url.startswith(SLS + "?SAMLRequest=")
    raw_query = urlsplit(redirect.url).query
    names = [part.split("=")[0] for part in raw_query.split("&")]
    assert names == ["SAMLRequest", "RelayState", "SigAlg", "Signature"]
    params = query_params(redirect.url)
    assert params == redirect.params
    xml = zlib.decompress(base64.b64decode(params["SAMLRequest"]), wbits=-15)
    assert xml == redirect.xml
    root = etree.fromstring(xml)
    assert protocol_schema.validate(root), protocol_schema.error_log
    assert root.get("ID") == redirect.id and root.get("Destination") == SLS
    assert one(root, "saml:NameID").text == "ann@example.com"
    assert xpath(root, "samlp:SessionIndex/text()") == ["_sess1"]
    assert params["RelayState"] == "back to / now"
    # saml-bindings §3.4.4.1: the signature covers the URL-encoded octets, in this order
    signed = raw_query.rsplit("&Signature=", 1)[0].encode()
    assert (
        signed
        == (
            "SAMLRequest="
            + quote_plus(params["SAMLRequest"])
            + "&RelayState="
            + quote_plus(params["RelayState"])
            + "&SigAlg="
            + quote_plus("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256")
        ).encode()
    )
    idp.signing_key.certificate.public_key().verify(
        base64.b64decode(params["Signature"]), signed, padding.PKCS1v15(), hashes.SHA256()
    )


def test_unsigned_logout_request_has_no_signature_parameters(idp):
    redirect = idp.logout_request(SLS, "ann@example.com", sign=False)
    assert set(query_params(redirect.url)) == {"SAMLRequest"}
    assert not xpath(etree.fromstring(redirect.xml), "samlp:SessionIndex")


def test_python3_saml_processes_the_idp_logout_request_and_answers(idp, sp_key):
    settings = p3s_settings(idp, sp_key, wantMessagesSigned=True, logoutResponseSigned=True)
    redirect = idp.logout_request(SLS, "ann@example.com", ["_s1", "_s2"], relay_state="/bye")
    auth = OneLogin_Saml2_Auth(request_data("/saml/acme/sls", get_data=redirect.params), settings)
    answer = auth.process_slo(delete_session_cb=lambda: None)
    assert auth.get_errors() == [], auth.get_last_error_reason()
    response = parse_logout_response(answer)
    assert response.in_response_to == redirect.id
    assert response.status == "urn:oasis:names:tc:SAML:2.0:status:Success"
    assert response.relay_state == "/bye"
    assert response.signature_valid_with(sp_key.cert_pem)
    assert not response.signature_valid_with(idp.cert_pem)


def test_logout_response_to_an_sp_logout_request(idp, sp_key, protocol_schema):
    settings = p3s_settings(idp, sp_key, logoutRequestSigned=True, wantMessagesSigned=True)
    auth = OneLogin_Saml2_Auth(request_data("/saml/acme/logout"), settings)
    url = auth.logout(name_id="ann@example.com", session_index="_s1", return_to="/after")
    request = parse_logout_request(url)
    assert request.id == auth.get_last_request_id()
    assert (request.name_id, request.session_indexes) == ("ann@example.com", ["_s1"])
    assert request.issuer == SP_ENTITY and request.destination == idp.slo_url
    assert request.relay_state == "/after"
    assert request.signature_valid_with(sp_key.cert_pem)

    answer = idp.logout_response(SLS, request.id, relay_state=request.relay_state)
    root = etree.fromstring(answer.xml)
    assert protocol_schema.validate(root), protocol_schema.error_log
    assert root.get("InResponseTo") == request.id
    auth = OneLogin_Saml2_Auth(request_data("/saml/acme/sls", get_data=answer.params), settings)
    auth.process_slo(request_id=request.id, delete_session_cb=lambda: None)
    assert auth.get_errors() == [], auth.get_last_error_reason()

    failed = idp.logout_response(SLS, request.id, "Responder", sign=False)
    assert (
        one(etree.fromstring(failed.xml), "//samlp:StatusCode").get("Value").endswith(":Responder")
    )


def test_parse_authn_request_from_python3_saml_login(idp, sp_key):
    settings = p3s_settings(idp, sp_key, authnRequestsSigned=True)
    auth = OneLogin_Saml2_Auth(request_data("/saml/acme/login"), settings)
    url = auth.login(return_to="https://sp.example.test/next")
    request_id, acs_url, issuer, signature_valid_with = parse_authn_request(url)
    assert request_id == auth.get_last_request_id()
    assert (acs_url, issuer) == (ACS, SP_ENTITY)
    assert signature_valid_with(sp_key.cert_pem)
    assert not signature_valid_with(idp.cert_pem)
    info = parse_authn_request(url)
    assert info.relay_state == "https://sp.example.test/next"
    assert info.destination == idp.sso_url and info.signed
    assert info.sig_alg == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"

    params = query_params(url)
    forged = parse_authn_request(
        url.replace(quote_plus(params["RelayState"]), quote_plus("https://evil.test/"))
    )
    assert not forged.signature_valid_with(sp_key.cert_pem)
    unsigned = OneLogin_Saml2_Auth(request_data("/saml/acme/login"), p3s_settings(idp, sp_key))
    info = parse_authn_request(unsigned.login())
    assert not info.signed and not info.signature_valid_with(sp_key.cert_pem)


def test_parse_authn_request_from_a_post_form(sp_key):
    idp = TestIdP()
    root = etree.fromstring(
        b'<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        b'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_q1" Version="2.0" '
        b'IssueInstant="2030-01-01T00:00:00Z" AssertionConsumerServiceURL="' + ACS.encode() + b'">'
        b"<saml:Issuer>" + SP_ENTITY.encode() + b"</saml:Issuer></samlp:AuthnRequest>"
    )
    idp.sign(root, key=sp_key)
    info = parse_authn_request(post_form(etree.tostring(root), field_name="SAMLRequest"))
    assert (info.binding, info.id, info.acs_url, info.issuer) == ("post", "_q1", ACS, SP_ENTITY)
    assert info.signature_valid_with(sp_key.cert_pem)
    assert not info.signature_valid_with(idp.cert_pem)


def test_parse_sp_metadata_from_python3_saml(idp, sp_key):
    settings = p3s_settings(idp, sp_key, wantAssertionsEncrypted=True)
    metadata = parse_sp_metadata(settings.get_sp_metadata())
    assert metadata.entity_id == SP_ENTITY
    assert metadata.acs_urls == {"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST": ACS}
    assert list(metadata.slo_urls.values()) == [SLS]
    assert metadata.want_assertions_signed and not metadata.authn_requests_signed
    assert load_certificate(metadata.encryption_certs[0]) == sp_key.certificate
    assert load_certificate(metadata.signing_certs[0]) == sp_key.certificate
    xml = idp.response(**BASE, encrypt_to_cert=metadata.encryption_certs[0])
    assert one(decrypt(etree.fromstring(xml), sp_key), "saml:Subject/saml:NameID").text


# ---------------------------------------------------------------------------------------------
# attacks


def test_unsigned(idp, protocol_schema):
    root = etree.fromstring(idp.unsigned(**BASE, sign_response=True))
    assert protocol_schema.validate(root)
    assert not xpath(root, "//ds:Signature")


def test_signed_by_other_key(idp):
    root = etree.fromstring(idp.signed_by_other_key(**BASE))
    signature = signature_of(root)
    assert not verify_enveloped(signature, idp.cert_pem)
    assert verify_enveloped(signature, idp.rogue_key.cert_pem)
    embedded = one(signature, "ds:KeyInfo/ds:X509Data/ds:X509Certificate").text
    assert "".join(embedded.split()) == idp.rogue_key.cert_b64
    assert idp.rogue_key.cert_b64 not in idp.metadata_xml()


def test_tampered_after_signing(idp):
    root = etree.fromstring(
        idp.tampered_after_signing(**BASE, attribute="groups", tampered_values=["root"])
    )
    assert one(root, "//saml:NameID").text == "admin@example.com"
    assert xpath(root, "//saml:Attribute[@Name='groups']/saml:AttributeValue/text()") == ["root"]
    assert not verify_enveloped(signature_of(root), idp.cert_pem)

    only_attribute = etree.fromstring(
        idp.tampered_after_signing(
            **BASE, tampered_name_id=None, attribute="groups", tampered_values=["x"]
        )
    )
    assert one(only_attribute, "//saml:NameID").text == "user@example.com"
    assert not verify_enveloped(signature_of(only_attribute), idp.cert_pem)


@pytest.mark.parametrize("variant", XSW_VARIANTS)
def test_signature_wrapping_keeps_one_valid_signature_over_the_attackers_assertion(idp, variant):
    root = etree.fromstring(
        idp.signature_wrapping(variant, **BASE, evil_attributes={"groups": ["cld-admins"]})
    )
    assertions = xpath(root, "//saml:Assertion")
    assert len(assertions) == 2
    valid = [s for s in xpath(root, "//ds:Signature") if verify_enveloped(s, idp.cert_pem)]
    assert len(valid) == 1
    covered = signed_target(valid[0])
    if variant == "response_wrapped":
        assert covered.tag == f"{{{NS['samlp']}}}Response" and covered is not root
        covered = one(covered, "saml:Assertion")
    assert one(covered, "saml:Subject/saml:NameID").text == "attacker@example.com"

    # where a careless SP looks, it finds the evil, unsigned assertion
    first = assertions[0] if variant != "evil_last" else assertions[1]
    if variant in ("extensions", "advice", "object", "response_wrapped"):
        first = one(root, "/samlp:Response/saml:Assertion")
    assert one(first, "saml:Subject/saml:NameID").text == "admin@example.com"
    assert xpath(
        first, "saml:AttributeStatement/saml:Attribute[@Name='groups']/saml:AttributeValue/text()"
    )[0] == ("cld-admins")
    own_signature = xpath(first, "ds:Signature")
    assert not own_signature or not verify_enveloped(own_signature[0], idp.cert_pem)
    assert first.get("ID") != covered.get("ID")


def test_signature_wrapping_placements(idp):
    def shape(variant: str) -> list[str]:
        root = etree.fromstring(idp.signature_wrapping(variant, **BASE))
        return [child.tag.split("}")[1] for child in root]

    assert shape("evil_first") == ["Issuer", "Status", "Assertion", "Assertion"]
    assert shape("extensions") == ["Issuer", "Extensions", "Status", "Assertion"]
    root = etree.fromstring(idp.signature_wrapping("advice", **BASE))
    assert len(xpath(root, "/samlp:Response/saml:Assertion/saml:Advice/saml:Assertion")) == 1
    root = etree.fromstring(idp.signature_wrapping("object", **BASE))
    assert (
        len(xpath(root, "/samlp:Response/saml:Assertion/ds:Signature/ds:Object/saml:Assertion"))
        == 1
    )
    with pytest.raises(ValueError, match="variant"):
        idp.signature_wrapping("nope", **BASE)


def test_comment_injected_name_id(idp):
    xml = idp.comment_injected_name_id(**BASE)
    assert b">admin@example.com<!---->.evil.test</saml:NameID>" in xml
    with_comments = etree.fromstring(xml)
    assert verify_enveloped(signature_of(with_comments), idp.cert_pem)
    name_id = one(with_comments, "//saml:NameID")
    assert name_id.text == "admin@example.com"  # the careless reading
    assert "".join(name_id.itertext()) == "admin@example.com.evil.test"
    stripped = etree.fromstring(xml, etree.XMLParser(remove_comments=True))
    assert one(stripped, "//saml:NameID").text == "admin@example.com.evil.test"
    assert verify_enveloped(signature_of(stripped), idp.cert_pem)


def test_comment_injected_attribute(idp):
    xml = idp.comment_injected_attribute("groups", **BASE)
    root = etree.fromstring(xml)
    assert verify_enveloped(signature_of(root), idp.cert_pem)
    values = xpath(root, "//saml:Attribute[@Name='groups']/saml:AttributeValue")
    assert values[0].text == "admins" and "".join(values[0].itertext()) == "admins-readonly"
    assert [v.text for v in values[1:]] == ["admins", "staff"]


def test_xxe_general_entity_reads_the_file_when_resolved(idp, tmp_path):
    canary = tmp_path / "canary.txt"
    canary.write_text("CANARY-7f3a")
    xml = idp.with_xxe(system_id=canary.as_uri(), **BASE)
    assert b"<!DOCTYPE samlp:Response [<!ENTITY xxe SYSTEM" in xml
    unsafe = etree.XMLParser(resolve_entities=True, no_network=True)
    assert one(etree.fromstring(xml, unsafe), "//saml:NameID").text == "CANARY-7f3a"
    safe = etree.XMLParser(resolve_entities=False, no_network=True)
    assert "CANARY" not in etree.tostring(etree.fromstring(xml, safe)).decode()


def test_xxe_other_kinds(idp):
    parameter = idp.with_xxe(kind="parameter", system_id="http://127.0.0.1:9/x.dtd", **BASE)
    assert b'<!ENTITY % ext SYSTEM "http://127.0.0.1:9/x.dtd"> %ext;' in parameter
    external = idp.with_xxe(kind="external_dtd", **BASE)
    assert b'<!DOCTYPE samlp:Response SYSTEM "file:///etc/passwd">' in external
    for xml in (parameter, external):
        root = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True))
        assert root.getroottree().docinfo.doctype


def test_entity_expansion_is_a_bomb(idp):
    small = idp.with_entity_expansion(depth=3, width=4, **BASE)
    root = etree.fromstring(small, etree.XMLParser(resolve_entities=False))
    entities = {e.name: e.content for e in root.getroottree().docinfo.internalDTD.iterentities()}
    assert entities == {
        "lol0": "lol",
        "lol1": "&lol0;" * 4,
        "lol2": "&lol1;" * 4,
        "lol3": "&lol2;" * 4,
    }
    expanded = etree.fromstring(small, etree.XMLParser(resolve_entities=True))
    assert one(expanded, "//saml:NameID").text == "lol" * 4**3

    xml = idp.with_entity_expansion(**BASE)  # 3 * 10**10 characters once expanded
    assert len(xml) < 20_000 and b">&lol10;</saml:NameID>" in xml
    # libxml2 2.14 refuses it at parse time, even when entities are not substituted
    for resolve in (True, False):
        with pytest.raises(etree.XMLSyntaxError, match="amplification"):
            etree.fromstring(xml, etree.XMLParser(resolve_entities=resolve, huge_tree=True))


def test_quadratic_blowup(idp):
    xml = idp.with_quadratic_blowup(entity_size=1_000, references=50, **BASE)
    assert xml.count(b"&a;") == 50 and b"a" * 1_000 in xml
    root = etree.fromstring(xml, etree.XMLParser(resolve_entities=True))
    assert one(root, "//saml:NameID").text == "a" * 50_000


def test_xslt_transform_signature_is_valid_only_where_xslt_runs(idp):
    root = etree.fromstring(idp.with_xslt_transform(**BASE))
    signature = signature_of(root)
    algorithms = xpath(signature, ".//ds:Transform/@Algorithm")
    assert algorithms == [
        "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
        "http://www.w3.org/TR/1999/REC-xslt-19991116",
    ]
    assert verify_enveloped(signature, idp.cert_pem, restrict_transforms=False)
    assert not verify_enveloped(signature, idp.cert_pem, restrict_transforms=True)
    # python3-saml 1.16 lets xmlsec run the XSLT (it does not restrict transforms)
    xml = etree.tostring(root)
    xpath_ = OneLogin_Saml2_Utils.ASSERTION_SIGNATURE_XPATH
    assert OneLogin_Saml2_Utils.validate_sign(xml, idp.cert_pem, xpath=xpath_)


def test_xslt_transform_with_loops(idp):
    root = etree.fromstring(idp.with_xslt_transform(nested_loops=2, **BASE))
    signature = signature_of(root)
    stylesheet = one(signature, ".//ds:Transform/xsl:stylesheet")
    assert len(xpath(stylesheet, ".//xsl:for-each")) == 2
    assert not verify_enveloped(signature, idp.cert_pem, restrict_transforms=False)


def test_oversized(idp):
    xml = idp.oversized(200_000, **BASE)
    assert len(xml) >= 200_000
    root = etree.fromstring(xml, etree.XMLParser(huge_tree=True))
    assert verify_enveloped(signature_of(root), idp.cert_pem)
    assert xpath(root, "//saml:Attribute/@Name") == ["groups", "email", "padding"]


def test_garbage():
    with pytest.raises(binascii.Error):
        base64.b64decode(not_base64(), validate=True)
    with pytest.raises(binascii.Error):
        base64.b64decode(not_base64())  # python3-saml's lenient decoding fails too
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(base64.b64decode(base64_not_xml(), validate=True))
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(truncated(TestIdP.with_keys(KeyPair.generate()).response(**BASE)))


def test_rewrapped_keeps_the_signed_assertion_and_changes_the_envelope(idp):
    original = idp.response(**BASE, sign_response=True)
    xml = idp.rewrapped(original, in_response_to="_pending", destination=None)
    before, after = etree.fromstring(original), etree.fromstring(xml)
    assert after.get("ID") != before.get("ID")
    assert after.get("InResponseTo") == "_pending" and after.get("Destination") is None
    assert not xpath(after, "/samlp:Response/ds:Signature")
    assert etree.tostring(one(after, "saml:Assertion"), method="c14n") == etree.tostring(
        one(before, "saml:Assertion"), method="c14n"
    )
    assert verify_enveloped(signature_of(after), idp.cert_pem)
    assert one(after, "//saml:SubjectConfirmationData").get("InResponseTo") is None


def test_encrypted_attacks_are_refused(idp, sp_key):
    with pytest.raises(ValueError, match="encrypt_to_cert"):
        idp.signature_wrapping(**BASE, encrypt_to_cert=sp_key.cert_pem)


def test_testidp_is_not_collected_as_a_test_class():
    assert TestIdP.__test__ is False
