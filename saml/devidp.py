"""A development IdP, to see a whole SSO round trip on one machine without Okta or Entra.

A separate app in its own process (`idbridge dev-idp`), never mounted in the production app. It
answers an AuthnRequest with a page where you choose who signs in (userName, name, groups,
department), then posts a signed SAML Response to the SP's ACS. Its key pair lives in the
instance folder. Do not expose it: it signs in whoever you type.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import zlib
from html import escape
from pathlib import Path

import xmlsec
from flask import Flask, Response, abort, request
from lxml import etree

from bridge import certs

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
SAFE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def keys(home: Path) -> tuple[bytes, bytes]:
    """The dev IdP's key and certificate (PEM), made on first use."""
    home.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = home / "key.pem", home / "cert.pem"
    if not key_path.exists():
        key_pem, cert_pem = certs.self_signed("identity-bridge dev IdP", dt.timedelta(days=3650))
        cert_path.write_bytes(cert_pem)
        key_path.write_bytes(key_pem)
        key_path.chmod(0o600)
    return key_path.read_bytes(), cert_path.read_bytes()


def metadata(base_url: str, cert_pem: bytes) -> str:
    """IdP metadata: entity ID, the HTTP-Redirect SSO endpoint, the signing certificate."""
    cert_b64 = "".join(line for line in cert_pem.decode().splitlines() if "-----" not in line)
    return (
        f'<md:EntityDescriptor xmlns:md="{MD}" entityID="{escape(base_url)}/metadata">'
        f'<md:IDPSSODescriptor protocolSupportEnumeration="{SAMLP}">'
        f'<md:KeyDescriptor use="signing"><ds:KeyInfo xmlns:ds="{DS}"><ds:X509Data>'
        f"<ds:X509Certificate>{cert_b64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>"
        f"</md:KeyDescriptor><md:NameIDFormat>{EMAIL}</md:NameIDFormat>"
        f'<md:SingleSignOnService Binding="{REDIRECT}" Location="{escape(base_url)}/sso"/>'
        "</md:IDPSSODescriptor></md:EntityDescriptor>"
    )


def create_app(home: Path, base_url: str) -> Flask:
    """The dev IdP app (run it with `idbridge dev-idp`)."""
    base_url = base_url.rstrip("/")
    key_pem, cert_pem = keys(home)
    app = Flask("identity-bridge-dev-idp")

    @app.get("/metadata")
    def get_metadata() -> Response:
        return Response(metadata(base_url, cert_pem), mimetype="application/samlmetadata+xml")

    @app.get("/sso")
    def choose_user() -> str:
        authn = _authn_request(request.args.get("SAMLRequest", ""))
        fields = {
            "request_id": authn.get("ID", ""),
            "acs": authn.get("AssertionConsumerServiceURL", ""),
            "audience": authn.findtext(f"{{{SAML}}}Issuer", "").strip(),
            "relay_state": request.args.get("RelayState", ""),
        }
        hidden = "".join(
            f'<input type=hidden name="{k}" value="{escape(v)}">' for k, v in fields.items()
        )
        return (
            "<!doctype html><title>Dev IdP</title><body style='font-family:sans-serif'>"
            "<h1>Development IdP</h1><p>Sign in to the bridge as:</p>"
            f"<form method=post action='{escape(base_url)}/sso'>{hidden}"
            "<p><label>userName <input name=user_name value='dev.user@example.com'></label>"
            "<p><label>display name <input name=display_name value='Dev User'></label>"
            "<p><label>groups (comma-separated) <input name=groups value='cld-admins'></label>"
            "<p><label>department <input name=department value='Marketing'></label>"
            "<p><button>Sign in</button></form>"
        )

    @app.post("/sso")
    def answer() -> str:
        form = request.form
        if not form.get("acs") or not form.get("user_name"):
            abort(400)
        attributes = {
            "email": [form["user_name"]],
            "displayName": [form.get("display_name", "")],
            "groups": [g.strip() for g in form.get("groups", "").split(",") if g.strip()],
            "department": [form.get("department", "")],
        }
        xml = response(
            issuer=f"{base_url}/metadata",
            acs=form["acs"],
            audience=form.get("audience", ""),
            in_response_to=form.get("request_id") or None,
            name_id=form["user_name"],
            attributes={k: [v for v in vs if v] for k, vs in attributes.items()},
            key_pem=key_pem,
        )
        relay = form.get("relay_state", "")
        relay_input = (
            f'<input type=hidden name=RelayState value="{escape(relay)}">' if relay else ""
        )
        return (
            "<!doctype html><title>Signing in</title><body onload='document.forms[0].submit()'>"
            f"<form method=post action='{escape(form['acs'])}'>"
            f'<input type=hidden name=SAMLResponse value="{base64.b64encode(xml).decode()}">'
            f"{relay_input}<noscript><button>Continue</button></noscript></form>"
        )

    return app


def _authn_request(value: str) -> etree._Element:
    try:
        xml = zlib.decompress(base64.b64decode(value), -15)
        return etree.fromstring(xml, SAFE_PARSER)
    except (ValueError, zlib.error, etree.XMLSyntaxError):
        abort(400)


def response(
    *,
    issuer: str,
    acs: str,
    audience: str,
    in_response_to: str | None,
    name_id: str,
    attributes: dict[str, list[str]],
    key_pem: bytes,
) -> bytes:
    """A samlp:Response whose assertion is signed (enveloped, exclusive c14n, RSA-SHA256)."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def at(minutes: int) -> str:
        return (now + dt.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")

    irt = {"InResponseTo": in_response_to} if in_response_to else {}
    root = etree.Element(
        f"{{{SAMLP}}}Response",
        nsmap={"samlp": SAMLP, "saml": SAML},
        ID="_" + secrets.token_hex(16),
        Version="2.0",
        IssueInstant=at(0),
        Destination=acs,
        **irt,
    )
    etree.SubElement(root, f"{{{SAML}}}Issuer").text = issuer
    status = etree.SubElement(root, f"{{{SAMLP}}}Status")
    etree.SubElement(
        status, f"{{{SAMLP}}}StatusCode", Value="urn:oasis:names:tc:SAML:2.0:status:Success"
    )
    assertion_id = "_" + secrets.token_hex(16)
    assertion = etree.SubElement(
        root, f"{{{SAML}}}Assertion", ID=assertion_id, Version="2.0", IssueInstant=at(0)
    )
    etree.SubElement(assertion, f"{{{SAML}}}Issuer").text = issuer
    subject = etree.SubElement(assertion, f"{{{SAML}}}Subject")
    etree.SubElement(subject, f"{{{SAML}}}NameID", Format=EMAIL).text = name_id
    confirmation = etree.SubElement(
        subject, f"{{{SAML}}}SubjectConfirmation", Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"
    )
    etree.SubElement(
        confirmation, f"{{{SAML}}}SubjectConfirmationData", NotOnOrAfter=at(5), Recipient=acs, **irt
    )
    conditions = etree.SubElement(
        assertion, f"{{{SAML}}}Conditions", NotBefore=at(-1), NotOnOrAfter=at(5)
    )
    restriction = etree.SubElement(conditions, f"{{{SAML}}}AudienceRestriction")
    etree.SubElement(restriction, f"{{{SAML}}}Audience").text = audience
    statement = etree.SubElement(
        assertion, f"{{{SAML}}}AuthnStatement", AuthnInstant=at(0), SessionIndex="_s" + assertion_id
    )
    context = etree.SubElement(statement, f"{{{SAML}}}AuthnContext")
    etree.SubElement(
        context, f"{{{SAML}}}AuthnContextClassRef"
    ).text = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
    if attributes:
        attribute_statement = etree.SubElement(assertion, f"{{{SAML}}}AttributeStatement")
        for name, values in attributes.items():
            attribute = etree.SubElement(attribute_statement, f"{{{SAML}}}Attribute", Name=name)
            for value in values:
                etree.SubElement(attribute, f"{{{SAML}}}AttributeValue").text = value
    _sign(assertion, key_pem)
    return etree.tostring(root)


def _sign(element: etree._Element, key_pem: bytes) -> None:
    signature = xmlsec.template.create(
        element, xmlsec.Transform.EXCL_C14N, xmlsec.Transform.RSA_SHA256
    )
    element.insert(1, signature)  # after the Issuer (saml-schema-assertion-2.0)
    ref = xmlsec.template.add_reference(
        signature, xmlsec.Transform.SHA256, uri="#" + element.get("ID")
    )
    xmlsec.template.add_transform(ref, xmlsec.Transform.ENVELOPED)
    xmlsec.template.add_transform(ref, xmlsec.Transform.EXCL_C14N)
    xmlsec.tree.add_ids(element, ["ID"])
    ctx = xmlsec.SignatureContext()
    ctx.key = xmlsec.Key.from_memory(key_pem, xmlsec.KeyFormat.PEM)
    ctx.sign(signature)
