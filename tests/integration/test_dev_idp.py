"""The development IdP round trip, as the README's run command sets it up."""

import re
import secrets
from html import unescape
from urllib.parse import urlsplit

from saml import devidp


def test_dev_idp_round_trip(app, client, cli, tmp_path, monkeypatch):
    """register -> /login -> dev IdP page -> signed response -> ACS -> /session."""
    slug = f"dev-{secrets.token_hex(3)}"
    assert cli("accounts", "create", slug).exit_code == 0
    assert cli("environments", "add", slug, "production", "--default").exit_code == 0
    registered = cli("dev-idp", "register", slug)
    assert registered.exit_code == 0, registered.output
    assert f"/saml/{slug}/login?idp=dev" in registered.stdout
    again = cli("dev-idp", "register", slug)  # idempotent
    assert again.exit_code == 0

    idp = devidp.create_app(tmp_path / "dev-idp", "http://127.0.0.1:8100").test_client()
    login = client.get(f"/saml/{slug}/login", query_string={"idp": "dev", "next": "/session"})
    assert login.status_code == 302
    target = urlsplit(login.headers["Location"])
    assert target.netloc == "127.0.0.1:8100" and target.path == "/sso"
    page = idp.get(f"/sso?{target.query}")
    assert page.status_code == 200 and b"Development IdP" in page.data
    fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', page.get_data(as_text=True)))
    posted = idp.post(
        "/sso",
        data={
            **{k: unescape(v) for k, v in fields.items()},
            "user_name": "dev.user@example.com",
            "groups": "cld-admins",
        },
    )
    saml_response = re.search(r'name=SAMLResponse value="([^"]+)"', posted.get_data(as_text=True))[
        1
    ]
    relay = re.search(r'name=RelayState value="([^"]*)"', posted.get_data(as_text=True))
    form = {"SAMLResponse": saml_response, **({"RelayState": unescape(relay[1])} if relay else {})}
    done = client.post(f"/saml/{slug}/acs", data=form)
    assert done.status_code == 302 and done.headers["Location"] == "/session"
    session = client.get("/session").json
    assert session["user"]["userName"] == "dev.user@example.com"
    assert session["environments"] == ["production"]
