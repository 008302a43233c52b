"""A scripted browser for sign-in flows over real HTTP: follows redirects hop by hop and plays
the test IdP (tests/saml_idp) when the bridge sends it there."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

from tests.saml_idp import TestIdP, parse_authn_request

MAX_HOPS = 12


class Browser:
    """A requests session acting as the person's browser; `other` answers URLs of another
    origin (e.g. a product under Flask's test client)."""

    def __init__(self, idp: TestIdP, base_url: str, slug: str) -> None:
        self.http = requests.Session()
        self.idp, self.base_url, self.slug = idp, base_url, slug

    def follow(
        self,
        url: str,
        *,
        stop: Callable[[str], bool],
        name_id: str = "ann@example.com",
        attributes: dict[str, list[str]] | None = None,
    ) -> requests.Response | str:
        """Follow redirects from `url`; sign in at the IdP when sent there; return the first
        Location for which `stop` is true, or the response that did not redirect."""
        for _ in range(MAX_HOPS):
            if stop(url):
                return url
            if url.startswith(self.idp.sso_url):
                response = self._sign_in(url, name_id, attributes or {})
            else:
                response = self.http.get(url, allow_redirects=False, timeout=10)
            if response.status_code not in (301, 302, 303):
                return response
            url = urljoin(response.url, response.headers["Location"])
        raise AssertionError(f"more than {MAX_HOPS} redirects")

    def _sign_in(
        self, url: str, name_id: str, attributes: dict[str, list[str]]
    ) -> requests.Response:
        request = parse_authn_request(url)
        relay = parse_qs(urlsplit(url).query).get("RelayState", [None])[0]
        acs = f"{self.base_url}/saml/{self.slug}/acs"
        xml = self.idp.response(
            destination=acs,
            audience=f"{self.base_url}/saml/{self.slug}/metadata",
            in_response_to=request.id,
            name_id=name_id,
            attributes=attributes,
        )
        return self.http.post(
            acs, data=self.idp.post_form(xml, relay), allow_redirects=False, timeout=10
        )
