"""pysaml2 acting as a customer's IdP: an independent SAML implementation (its own XML binding,
signing and encrypting through the xmlsec1 binary, `ns0:`/`ns1:` prefixes of its own), driven the
way a browser drives one. It reads the SP metadata we publish and takes every SP URL from it,
checks the signatures on what we send, and answers, starts logins and starts logouts."""

from __future__ import annotations

import base64
import datetime
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.config import IdPConfig
from saml2.metadata import entity_descriptor
from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID
from saml2.server import Server
from saml2.sigver import SIG_RSA_SHA256

from bridge.certs import self_signed

XMLSEC1 = shutil.which("xmlsec1")
if XMLSEC1 is None:  # never a silent skip: CI installs it (.ci/run)
    raise RuntimeError("pysaml2 needs the xmlsec1 binary: apt-get install xmlsec1")
DIGEST_SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
PASSWORD = {"class_ref": "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"}


def query(url: str) -> dict[str, str]:
    """The query parameters of a Redirect-binding URL."""
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def local(url: str, base: str) -> str:
    """A URL of ours as the Flask test client wants it (path and query)."""
    assert url.startswith(base + "/"), url
    return url.removeprefix(base)


class PySaml2IdP:
    """One IdP with its own key and entity ID; `trust(sp_metadata)` before any exchange."""

    def __init__(self, home: Path, entity_id: str) -> None:
        home.mkdir(parents=True, exist_ok=True)
        key, cert = self_signed("pysaml2 IdP", datetime.timedelta(days=30))
        (home / "key.pem").write_bytes(key)
        (home / "cert.pem").write_bytes(cert)
        self.home, self.entity_id = home, entity_id
        base = entity_id.rsplit("/", 1)[0]
        self.sso_url, self.slo_url = f"{base}/sso", f"{base}/slo"
        self.server = self._server(None)

    def _server(self, sp_metadata: str | None) -> Server:
        config = IdPConfig()
        config.load(
            {
                "entityid": self.entity_id,
                "xmlsec_binary": XMLSEC1,
                "key_file": str(self.home / "key.pem"),
                "cert_file": str(self.home / "cert.pem"),
                "metadata": {"inline": [sp_metadata]} if sp_metadata else {},
                "accepted_time_diff": 60,
                "signing_algorithm": SIG_RSA_SHA256,
                "digest_algorithm": DIGEST_SHA256,
                "service": {
                    "idp": {
                        "endpoints": {
                            "single_sign_on_service": [(self.sso_url, BINDING_HTTP_REDIRECT)],
                            "single_logout_service": [(self.slo_url, BINDING_HTTP_REDIRECT)],
                        },
                        "want_authn_requests_signed": True,
                        "name_id_format": [NAMEID_FORMAT_PERSISTENT],
                        "policy": {"default": {"lifetime": {"minutes": 15}}},
                    }
                },
            }
        )
        return Server(config=config)

    def metadata_xml(self) -> str:
        return str(entity_descriptor(self.server.config))

    def trust(self, sp_metadata: str) -> None:
        """Load the SP's metadata: its entity ID, ACS, SLS and certificates come from there."""
        self.server = self._server(sp_metadata)
        (self.sp_entity_id,) = list(self.server.metadata.keys())

    def persistent(self, value: str) -> NameID:
        """A persistent NameID with every qualifier (SAML Core 8.3.7)."""
        return NameID(
            format=NAMEID_FORMAT_PERSISTENT,
            name_qualifier=self.entity_id,
            sp_name_qualifier=self.sp_entity_id,
            sp_provided_id=f"sp-{value}",
            text=value,
        )

    # -- login

    def read_authn_request(self, url: str) -> Any:
        """Our AuthnRequest from its Redirect URL; pysaml2 checks its signature."""
        q = query(url)
        return self.server.parse_authn_request(
            q["SAMLRequest"],
            BINDING_HTTP_REDIRECT,
            relay_state=q.get("RelayState"),
            sigalg=q["SigAlg"],
            signature=q["Signature"],
        ).message

    def response(
        self,
        acs_url: str,
        name_id: NameID,
        *,
        in_response_to: str | None = None,
        attributes: dict[str, list[str]] | None = None,
        sign_assertion: bool = True,
        sign_response: bool = False,
        encrypt: bool = False,
    ) -> str:
        """A Response (XML) to `acs_url`: answering a request, or unsolicited."""
        kwargs: dict[str, Any] = {}
        if encrypt:  # to the SP's encryption certificate from its metadata
            kwargs.update(encrypt_assertion=True, encrypt_assertion_self_contained=True)
        response = self.server.create_authn_response(
            attributes or {},
            in_response_to,
            acs_url,
            self.sp_entity_id,
            name_id=name_id,
            authn=PASSWORD,
            sign_assertion=sign_assertion,
            sign_response=sign_response,
            sign_alg=SIG_RSA_SHA256,
            digest_alg=DIGEST_SHA256,
            session_not_on_or_after=None,
            **kwargs,
        )
        return str(response)

    def acs_url(self) -> str:
        """The ACS the SP's metadata gives this IdP (HTTP-POST)."""
        return str(
            self.server.metadata.assertion_consumer_service(self.sp_entity_id, BINDING_HTTP_POST)[
                0
            ]["location"]
        )

    def sls_url(self) -> str:
        """The SLS the SP's metadata gives this IdP (HTTP-Redirect)."""
        return str(
            self.server.metadata.single_logout_service(
                self.sp_entity_id, BINDING_HTTP_REDIRECT, "spsso"
            )[0]["location"]
        )

    @staticmethod
    def post_form(xml: str, relay_state: str | None = None) -> dict[str, str]:
        form = {"SAMLResponse": base64.b64encode(xml.encode()).decode()}
        if relay_state is not None:
            form["RelayState"] = relay_state
        return form

    # -- logout

    def logout_request(
        self, name_id: NameID, session_index: str | None, destination: str | None = None
    ) -> tuple[str, str]:
        """An IdP-initiated LogoutRequest to the SP's SLS (of the metadata unless `destination`
        says otherwise), signed (Redirect); URL and ID."""
        destination = destination or self.sls_url()
        request_id, request = self.server.create_logout_request(
            destination,
            self.entity_id,
            name_id=name_id,
            session_indexes=[session_index] if session_index else None,
            sign=False,
        )
        info = self.server.apply_binding(
            BINDING_HTTP_REDIRECT, str(request), destination, "", sign=True, sigalg=SIG_RSA_SHA256
        )
        return dict(info["headers"])["Location"], request_id

    def read_logout_request(self, url: str) -> Any:
        """Our LogoutRequest from its Redirect URL; pysaml2 checks its signature."""
        q = query(url)
        return self.server.parse_logout_request(
            q["SAMLRequest"],
            BINDING_HTTP_REDIRECT,
            relay_state=q.get("RelayState"),
            sigalg=q["SigAlg"],
            signature=q["Signature"],
        )

    def logout_response(self, request: Any, destination: str | None = None) -> str:
        """The signed LogoutResponse (Redirect URL) to a LogoutRequest of the SP's, to the SLS
        of the metadata unless `destination` says otherwise."""
        response = self.server.create_logout_response(request, [BINDING_HTTP_REDIRECT], sign=False)
        info = self.server.apply_binding(
            BINDING_HTTP_REDIRECT,
            str(response),
            destination or self.sls_url(),
            "",
            response=True,
            sign=True,
            sigalg=SIG_RSA_SHA256,
        )
        return str(dict(info["headers"])["Location"])

    def read_logout_response(self, url: str) -> Any:
        """The SP's LogoutResponse from its Redirect URL, checked by pysaml2."""
        return self.server.parse_logout_request_response(
            query(url)["SAMLResponse"], BINDING_HTTP_REDIRECT
        )
