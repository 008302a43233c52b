"""Single logout messages (HTTP-Redirect): what routing reads of an incoming one before its
checks, and our LogoutRequest naming a session's NameID whole."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lxml import etree
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.logout_request import OneLogin_Saml2_Logout_Request
from onelogin.saml2.utils import OneLogin_Saml2_Utils

from bridge.models import IdentityProvider
from bridge.sessions import NameId
from saml.sso import _PARSER, MAX_RESPONSE, NS, Sp, request_data, settings


@dataclass(frozen=True)
class LogoutMessage:
    """What routing needs of a Redirect-binding logout message, read before its checks."""

    destination: str | None = None
    in_response_to: str | None = None
    name_id: str | None = None
    session_index: str | None = None


def logout_message(args: Any) -> LogoutMessage:
    """Peek at a LogoutRequest or LogoutResponse (DTDs refused); anything unreadable gives an
    empty message and is refused by the full checks that follow."""
    value = args.get("SAMLRequest") or args.get("SAMLResponse")
    if not value or len(value) > MAX_RESPONSE:
        return LogoutMessage()
    try:
        xml = OneLogin_Saml2_Utils.decode_base64_and_inflate(value, ignore_zip=True)
        root = etree.fromstring(xml, _PARSER)
    except Exception:  # bad base64, bad deflate, bad XML: process_slo refuses it
        return LogoutMessage()
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None:
        return LogoutMessage()
    name_id = root.find("saml:NameID", NS)
    index = root.find("samlp:SessionIndex", NS)
    return LogoutMessage(
        root.get("Destination"),
        root.get("InResponseTo"),
        (name_id.text or "").strip() or None if name_id is not None else None,
        (index.text or "").strip() or None if index is not None else None,
    )


def logout_redirect(
    sp: Sp, idp: IdentityProvider, name_id: NameId | None, session_index: str | None
) -> tuple[str, str]:
    """Our signed LogoutRequest to the IdP's SLO endpoint, naming the session's NameID whole
    (SAML Profiles 4.4.4.1: it must strongly match the assertion's; python3-saml drops an
    explicit unspecified Format and knows no SPProvidedID). Returns the URL and the request ID."""
    auth = OneLogin_Saml2_Auth(request_data(sp, "/logout"), old_settings=settings(sp, idp))
    auth.logout_request_class = type("_Exact", (_LogoutRequest,), {"exact": name_id})
    url = auth.logout(
        name_id=name_id.value if name_id else None,
        session_index=session_index,
        nq=name_id.name_qualifier if name_id else None,
        name_id_format=name_id.format if name_id else None,
        spnq=name_id.sp_name_qualifier if name_id else None,
    )
    return str(url), str(auth.get_last_request_id())


class _LogoutRequest(OneLogin_Saml2_Logout_Request):  # type: ignore[misc]
    """A LogoutRequest whose NameID carries exactly the attributes of `exact`."""

    exact: NameId | None = None

    def __init__(self, settings: Any, request: str | None = None, **kw: Any) -> None:
        super().__init__(settings, request, **kw)
        if request is not None or self.exact is None:
            return
        root = etree.fromstring(self._logout_request.encode(), _PARSER)
        node = root.find("saml:NameID", NS)
        for attribute, value in (
            ("Format", self.exact.format),
            ("NameQualifier", self.exact.name_qualifier),
            ("SPNameQualifier", self.exact.sp_name_qualifier),
            ("SPProvidedID", self.exact.sp_provided_id),
        ):
            if value:
                node.set(attribute, value)
            elif attribute in node.attrib:
                del node.attrib[attribute]
        self._logout_request = etree.tostring(root).decode()
