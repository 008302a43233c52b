"""lxml and xmlsec must link the same libxml2, or SAML signature checks fail at a login."""

import datetime

import lxml.etree as etree
import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def _key_and_cert() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem_key, cert.public_bytes(serialization.Encoding.PEM)


def _signed(pem_key: bytes) -> etree._Element:
    doc = etree.fromstring(b'<Doc xmlns="urn:test" ID="d1"><Value>42</Value></Doc>')
    signature = xmlsec.template.create(doc, xmlsec.Transform.EXCL_C14N, xmlsec.Transform.RSA_SHA256)
    doc.append(signature)
    ref = xmlsec.template.add_reference(signature, xmlsec.Transform.SHA256, uri="#d1")
    xmlsec.template.add_transform(ref, xmlsec.Transform.ENVELOPED)
    xmlsec.tree.add_ids(doc, ["ID"])
    ctx = xmlsec.SignatureContext()
    ctx.key = xmlsec.Key.from_memory(pem_key, xmlsec.KeyFormat.PEM)
    ctx.sign(signature)
    return doc


def _verify(doc: etree._Element, pem_cert: bytes) -> None:
    signature = xmlsec.tree.find_node(doc, xmlsec.constants.NodeSignature)
    xmlsec.tree.add_ids(doc, ["ID"])
    ctx = xmlsec.SignatureContext()
    ctx.key = xmlsec.Key.from_memory(pem_cert, xmlsec.KeyFormat.CERT_PEM)
    ctx.verify(signature)


def test_lxml_and_xmlsec_share_libxml2():
    """Both bindings report the same libxml2 they were built with and run against."""
    assert xmlsec.get_libxml_version() == etree.LIBXML_VERSION
    assert xmlsec.get_libxml_compiled_version() == etree.LIBXML_COMPILED_VERSION


def test_sign_and_verify_roundtrip():
    """A document signed with xmlsec verifies, and fails once its content is altered."""
    pem_key, pem_cert = _key_and_cert()
    doc = _signed(pem_key)
    _verify(etree.fromstring(etree.tostring(doc)), pem_cert)
    tampered = etree.fromstring(etree.tostring(doc).replace(b"42", b"43"))
    try:
        _verify(tampered, pem_cert)
    except xmlsec.Error:
        return
    raise AssertionError("a tampered document verified")
