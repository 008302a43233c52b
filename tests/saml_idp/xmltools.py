"""XML, key and crypto plumbing of the test IdP: namespaces, element building, timestamps, keys,
enveloped XML signatures (xmlsec) and XML encryption (written with `cryptography` alone, so the
SP's xmlsec-based decryption is checked against an independent implementation)."""

from __future__ import annotations

import base64
import datetime as dt
import os
import uuid
from dataclasses import dataclass

import lxml.etree as etree
import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

NS = {
    "samlp": "urn:oasis:names:tc:SAML:2.0:protocol",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "md": "urn:oasis:names:tc:SAML:2.0:metadata",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
    "xenc": "http://www.w3.org/2001/04/xmlenc#",
    "xs": "http://www.w3.org/2001/XMLSchema",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
    "xsl": "http://www.w3.org/1999/XSL/Transform",
}

NAMEID_EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
NAMEID_PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
NAMEID_TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
NAMEID_UNSPECIFIED = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"
ATTRNAME_BASIC = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"
ATTRNAME_URI = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"
BINDING_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
BINDING_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
CM_BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
AC_PASSWORD_PROTECTED = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
STATUS_PREFIX = "urn:oasis:names:tc:SAML:2.0:status:"
STATUS_SUCCESS = STATUS_PREFIX + "Success"

# short name -> (URI, xmlsec transform, hash for the Redirect binding's query signature)
SIGNATURE_ALGORITHMS: dict[str, tuple[str, object, type[hashes.HashAlgorithm]]] = {
    "rsa-sha1": (
        "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
        xmlsec.Transform.RSA_SHA1,
        hashes.SHA1,
    ),
    "rsa-sha256": (
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        xmlsec.Transform.RSA_SHA256,
        hashes.SHA256,
    ),
    "rsa-sha384": (
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
        xmlsec.Transform.RSA_SHA384,
        hashes.SHA384,
    ),
    "rsa-sha512": (
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
        xmlsec.Transform.RSA_SHA512,
        hashes.SHA512,
    ),
}
DIGEST_ALGORITHMS: dict[str, object] = {
    "sha1": xmlsec.Transform.SHA1,
    "sha256": xmlsec.Transform.SHA256,
    "sha384": xmlsec.Transform.SHA384,
    "sha512": xmlsec.Transform.SHA512,
}
# short name -> (URI, key bytes, GCM?)
BLOCK_ENCRYPTION: dict[str, tuple[str, int, bool]] = {
    "aes128-cbc": ("http://www.w3.org/2001/04/xmlenc#aes128-cbc", 16, False),
    "aes256-cbc": ("http://www.w3.org/2001/04/xmlenc#aes256-cbc", 32, False),
    "aes128-gcm": ("http://www.w3.org/2009/xmlenc11#aes128-gcm", 16, True),
    "aes256-gcm": ("http://www.w3.org/2009/xmlenc11#aes256-gcm", 32, True),
}
RSA_OAEP_MGF1P = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"
DIGEST_SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
XSLT_TRANSFORM = "http://www.w3.org/TR/1999/REC-xslt-19991116"


def qname(name: str) -> str:
    """'saml:Issuer' -> '{urn:oasis:names:tc:SAML:2.0:assertion}Issuer'."""
    prefix, local = name.split(":")
    return f"{{{NS[prefix]}}}{local}"


def sub(
    parent: etree._Element | None,
    name: str,
    text: str | None = None,
    nsmap: dict[str | None, str] | None = None,
    **attrs: str | None,
) -> etree._Element:
    """Create element `name` ('prefix:Local') under `parent`; attributes whose value is None are
    left out; the keyword xsi_type stands for xsi:type."""
    attrib = {}
    for key, value in attrs.items():
        if value is not None:
            attrib[qname("xsi:type") if key == "xsi_type" else key] = value
    if parent is None:
        element = etree.Element(qname(name), attrib, nsmap=nsmap)
    else:
        element = etree.SubElement(parent, qname(name), attrib, nsmap=nsmap)
    if text is not None:
        element.text = text
    return element


def find(element: etree._Element, path: str) -> etree._Element:
    """The one element at XPath `path` (with the NS prefixes); AssertionError if not exactly one."""
    found = element.xpath(path, namespaces=NS)
    assert len(found) == 1, f"{path}: {len(found)} matches"
    return found[0]


def new_id() -> str:
    """A fresh xs:ID (NCName: must not start with a digit)."""
    return "_" + uuid.uuid4().hex


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def instant(value: dt.datetime) -> str:
    """SAML xs:dateTime in UTC with a Z, seconds precision."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def at(base: dt.datetime, value: dt.timedelta | dt.datetime | None) -> str | None:
    """An offset from `base`, an absolute time, or None (attribute left out)."""
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        return instant(base + value)
    return instant(value)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def serialize(element: etree._Element) -> bytes:
    return etree.tostring(element.getroottree(), xml_declaration=True, encoding="UTF-8")


def safe_parser(*, remove_comments: bool = False) -> etree.XMLParser:
    """A parser that resolves no entity and fetches nothing (for what the SP sends us)."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=remove_comments,
        remove_pis=True,
    )


def parse(xml: bytes | str, *, remove_comments: bool = False) -> etree._Element:
    if isinstance(xml, str):
        xml = xml.encode()
    root = etree.fromstring(xml, safe_parser(remove_comments=remove_comments))
    if root.getroottree().docinfo.doctype:
        raise ValueError("a DOCTYPE in a SAML message")
    return root


# ---------------------------------------------------------------------------------------------
# keys


@dataclass(frozen=True)
class KeyPair:
    """An RSA key and its self-signed certificate."""

    private_key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @classmethod
    def generate(
        cls, common_name: str = "Test IdP", *, days: int = 365, key_size: int = 2048
    ) -> KeyPair:
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @property
    def key_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def cert_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def cert_b64(self) -> str:
        """Base64 DER on one line: what metadata's X509Certificate and python3-saml's
        'x509cert' setting hold."""
        return base64.b64encode(self.certificate.public_bytes(serialization.Encoding.DER)).decode()


def load_certificate(cert: str | bytes | x509.Certificate) -> x509.Certificate:
    """A certificate from PEM, DER, or the bare base64 body found in metadata."""
    if isinstance(cert, x509.Certificate):
        return cert
    if isinstance(cert, str):
        cert = cert.encode()
    if b"-----BEGIN" in cert:
        return x509.load_pem_x509_certificate(cert)
    if cert[:1] == b"\x30":
        return x509.load_der_x509_certificate(cert)
    return x509.load_der_x509_certificate(base64.b64decode(b"".join(cert.split())))


def cert_pem(cert: str | bytes | x509.Certificate) -> str:
    return load_certificate(cert).public_bytes(serialization.Encoding.PEM).decode()


# ---------------------------------------------------------------------------------------------
# XML signatures


def sign_enveloped(
    element: etree._Element,
    key: KeyPair,
    *,
    signature_algorithm: str = "rsa-sha256",
    digest_algorithm: str = "sha256",
    xslt: etree._Element | None = None,
) -> etree._Element:
    """Sign `element` (which has an ID) with an enveloped signature placed right after its
    saml:Issuer, as the SAML schema orders it: Reference URI="#ID", transforms enveloped-signature
    then exclusive c14n (PrefixList "xs", as IdPs that use xsi:type="xs:string" do), and the
    certificate in KeyInfo. With `xslt`, an XSLT transform carrying that stylesheet replaces the
    exclusive c14n transform (the XSLT-transform attack). Returns the ds:Signature element."""
    _, sign_transform, _ = SIGNATURE_ALGORITHMS[signature_algorithm]
    signature = xmlsec.template.create(element, xmlsec.Transform.EXCL_C14N, sign_transform, ns="ds")
    issuer = element.find(qname("saml:Issuer"))
    if issuer is not None:
        issuer.addnext(signature)
    else:
        element.insert(0, signature)
    ref = xmlsec.template.add_reference(
        signature, DIGEST_ALGORITHMS[digest_algorithm], uri="#" + element.get("ID")
    )
    xmlsec.template.add_transform(ref, xmlsec.Transform.ENVELOPED)
    if xslt is None:
        c14n = xmlsec.template.add_transform(ref, xmlsec.Transform.EXCL_C14N)
        xmlsec.template.transform_add_c14n_inclusive_namespaces(c14n, ["xs"])
    else:
        transform = xmlsec.template.add_transform(ref, xmlsec.Transform.XSLT)
        transform.append(xslt)
    key_info = xmlsec.template.ensure_key_info(signature)
    xmlsec.template.add_x509_data(key_info)
    ctx = xmlsec.SignatureContext()
    xmlsec_key = xmlsec.Key.from_memory(key.key_pem, xmlsec.KeyFormat.PEM)
    xmlsec_key.load_cert_from_memory(key.cert_pem.encode(), xmlsec.KeyFormat.CERT_PEM)
    ctx.key = xmlsec_key
    ctx.register_id(element, "ID")
    ctx.sign(signature)
    return signature


def verify_enveloped(
    signature: etree._Element,
    cert: str | bytes | x509.Certificate,
    *,
    restrict_transforms: bool = True,
) -> bool:
    """Whether ds:Signature `signature` verifies with `cert` (xmlsec). Every element with an ID
    attribute in the document is registered so the Reference resolves wherever it points. With
    `restrict_transforms` only enveloped-signature and exclusive c14n may appear in a Reference
    (what DESIGN §6 asks of the SP); without it, any transform xmlsec knows runs, XSLT included."""
    root = signature.getroottree().getroot()
    ctx = xmlsec.SignatureContext()
    for node in root.iter():
        if isinstance(node.tag, str) and node.get("ID") is not None:
            ctx.register_id(node, "ID")
    if restrict_transforms:
        # xmlsec counts the DigestMethod as a reference transform too
        for transform in (xmlsec.Transform.ENVELOPED, xmlsec.Transform.EXCL_C14N):
            ctx.enable_reference_transform(transform)
        for transform in DIGEST_ALGORITHMS.values():
            ctx.enable_reference_transform(transform)
    ctx.key = xmlsec.Key.from_memory(cert_pem(cert).encode(), xmlsec.KeyFormat.CERT_PEM)
    try:
        ctx.verify(signature)
    except xmlsec.Error:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# XML encryption (xmlenc), written with `cryptography` only


def encrypt_element(
    element: etree._Element,
    cert: str | bytes | x509.Certificate,
    *,
    algorithm: str = "aes256-gcm",
) -> etree._Element:
    """An xenc:EncryptedData (Type Element) holding `element` encrypted with a fresh AES key
    (`algorithm`: aes128-cbc, aes256-cbc, aes128-gcm, aes256-gcm), the key wrapped for `cert`'s
    RSA public key with RSA-OAEP (MGF1 and digest SHA-1, xmlenc#rsa-oaep-mgf1p) in a
    ds:KeyInfo/xenc:EncryptedKey. `element` itself is left alone."""
    uri, key_bytes, gcm = BLOCK_ENCRYPTION[algorithm]
    certificate = load_certificate(cert)
    public_key = certificate.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey), "the encryption cert must hold an RSA key"
    plaintext = etree.tostring(element)
    session_key = os.urandom(key_bytes)
    if gcm:
        iv = os.urandom(12)
        cipher_value = iv + AESGCM(session_key).encrypt(iv, plaintext, None)
    else:
        iv = os.urandom(16)
        padder = padding.PKCS7(128).padder()  # PKCS#7 padding satisfies xmlenc's rule
        padded = padder.update(plaintext) + padder.finalize()
        encryptor = Cipher(algorithms.AES(session_key), modes.CBC(iv)).encryptor()
        cipher_value = iv + encryptor.update(padded) + encryptor.finalize()
    sha1 = hashes.SHA1()  # noqa: S303 - rsa-oaep-mgf1p is defined with SHA-1
    wrapped = public_key.encrypt(
        session_key, asym_padding.OAEP(mgf=asym_padding.MGF1(sha1), algorithm=sha1, label=None)
    )
    data = sub(
        None,
        "xenc:EncryptedData",
        nsmap={"xenc": NS["xenc"], "ds": NS["ds"]},
        Type="http://www.w3.org/2001/04/xmlenc#Element",
    )
    sub(data, "xenc:EncryptionMethod", Algorithm=uri)
    key_info = sub(data, "ds:KeyInfo")
    encrypted_key = sub(key_info, "xenc:EncryptedKey")
    method = sub(encrypted_key, "xenc:EncryptionMethod", Algorithm=RSA_OAEP_MGF1P)
    sub(method, "ds:DigestMethod", Algorithm=DIGEST_SHA1)
    sub(sub(encrypted_key, "xenc:CipherData"), "xenc:CipherValue", b64(wrapped))
    sub(sub(data, "xenc:CipherData"), "xenc:CipherValue", b64(cipher_value))
    return data
