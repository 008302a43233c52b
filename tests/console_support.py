"""Signing people in to the console in tests: an account whose policy makes `admins` members
admins, a test IdP registered with it, and a SAML login through the SP as a browser would."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import urlsplit

from bridge import idps
from tests.saml_idp import TestIdP, parse_authn_request

BASE = "http://127.0.0.1:8000"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

POLICY = """\
account: {slug}
environments: [production, staging]
defaults:
  role: media_library_user
  environments: [production]
rules:
  - name: admins
    when: {{groups: {{contains: admins}}}}
    then: {{role: admin, environments: all}}
  - name: marketing
    when: {{department: {{equals: Marketing}}}}
    then:
      environments: [production, staging]
      grants:
        - {{environment: production, folder: "marketing/", level: editor}}
"""


def write_policy(settings, slug: str, text: str | None = None) -> None:
    (settings.policy_dir / f"{slug}.yaml").write_text(text or POLICY.format(slug=slug))


class ConsoleLogin:
    """A browser (Flask test client) signing in to one account's console through its SSO."""

    def __init__(self, client, store, account, settings):
        self.client, self.store, self.account = client, store, account
        self.slug = account.slug
        write_policy(settings, self.slug)
        self.idp = TestIdP()
        idps.add(store, self.slug, self.idp.metadata_xml(), name="test", actor="test")

    def sign_in(self, user_name: str, groups=("admins",), **attributes):
        """Open the console, follow it to the IdP, post what the IdP answers; the response."""
        home = f"/console/{self.slug}/"
        first = self.client.get(home)
        assert first.status_code == 302 and "/signin" in first.headers["Location"]
        chooser = self.client.get(first.headers["Location"])
        assert chooser.status_code == 302, chooser.get_data(as_text=True)
        login = urlsplit(chooser.headers["Location"])
        assert login.path == f"/saml/{self.slug}/login"
        sent = self.client.get(chooser.headers["Location"])
        request = parse_authn_request(sent.headers["Location"])
        xml = self.idp.response(
            destination=f"{BASE}/saml/{self.slug}/acs",
            audience=f"{BASE}/saml/{self.slug}/metadata",
            in_response_to=request.id,
            name_id=user_name,
            attributes={"email": [user_name], "groups": list(groups), **attributes},
        )
        return self.client.post(f"/saml/{self.slug}/acs", data=self.idp.post_form(xml))

    def csrf(self, path: str | None = None) -> str:
        page = self.client.get(path or f"/console/{self.slug}/")
        assert page.status_code == 200, page.status_code
        return unescape(CSRF.search(page.get_data(as_text=True))[1])

    def post(self, path: str, data=None, *, csrf: bool = True, **kw):
        form = dict(data or {})
        if csrf:
            form["csrf_token"] = self.csrf()
        return self.client.post(f"/console/{self.slug}{path}", data=form, **kw)
