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
    action = re.search(r"<form method=post action='([^']+)'", posted.get_data(as_text=True))[1]
    assert action.endswith(f"/saml/{slug}/acs/dev")  # the IdP's own ACS, as our request named
    done = client.post(urlsplit(unescape(action)).path, data=form)
    assert done.status_code == 302 and done.headers["Location"] == "/session"
    session = client.get("/session").json
    assert session["user"]["userName"] == "dev.user@example.com"
    assert session["environments"] == ["production"]


def _dev_login(client, tmp_path, slug, **fields):
    """The README's browser steps: /login without next -> the dev IdP's page, submitted with
    its pre-filled values (overridden by `fields`) -> the ACS; returns the ACS's answer."""
    idp = devidp.create_app(tmp_path / "dev-idp", "http://127.0.0.1:8100").test_client()
    login = client.get(f"/saml/{slug}/login", query_string={"idp": "dev"})
    page = idp.get(f"/sso?{urlsplit(login.headers['Location']).query}").get_data(as_text=True)
    form = {k: unescape(v) for k, v in re.findall(r"name=\"(\w+)\" value=\"([^\"]*)\"", page)}
    prefilled = dict(re.findall(r"name=(\w+) value='([^']*)'", page))
    posted = idp.post("/sso", data={**prefilled, **form, **fields}).get_data(as_text=True)
    answer = {"SAMLResponse": re.search(r'name=SAMLResponse value="([^"]+)"', posted)[1]}
    relay = re.search(r'name=RelayState value="([^"]*)"', posted)
    if relay:
        answer["RelayState"] = unescape(relay[1])
    action = re.search(r"<form method=post action='([^']+)'", posted)[1]  # the IdP's own ACS
    return client.post(urlsplit(unescape(action)).path, data=answer)


def test_make_run_demo_shows_the_policy_at_work(app, client, cli, settings, tmp_path):
    """`idbridge demo` pushes the commented demo policy as the account's stored version (no file
    in the policy folder); a second run keeps a version edited since as it is; the first
    dev-IdP login, with the page's pre-filled groups and department, lands on the signed-in page
    showing role admin, every environment, the policy group Marketing and its folder grant,
    each with its rule."""
    slug = f"demo-{secrets.token_hex(3)}"
    cli.env["BRIDGE_POLICY_DIR"] = str(settings.policy_dir)
    shown = cli("demo", "--slug", slug)
    assert shown.exit_code == 0, shown.output
    assert (
        "policy:             version 1 is active (pushed from policies/examples/demo.yaml)"
        in shown.stdout.splitlines()
    )
    assert not (settings.policy_dir / f"{slug}.yaml").exists()
    pulled = cli("policy", "pull", slug)
    assert pulled.exit_code == 0 and pulled.stdout.startswith("# The demo account's policy")
    assert f"\naccount: {slug}\n" in pulled.stdout
    edited = tmp_path / f"{slug}.yaml"
    edited.write_text("# edited by hand\n" + pulled.stdout)
    assert cli("policy", "push", slug, str(edited)).exit_code == 0
    assert cli("dev-idp", "register", slug).exit_code == 0
    again = cli("demo", "--slug", slug)  # a second run keeps an edited policy as it is
    assert again.exit_code == 0, again.output
    assert "policy:             version 2 is active (kept as it is)" in again.stdout.splitlines()
    assert cli("policy", "pull", slug).stdout == edited.read_text()

    done = _dev_login(client, tmp_path, slug)
    assert done.status_code == 302 and done.headers["Location"] == "/session"
    doc = client.get("/session").json
    assert doc["role"] == "admin" and doc["environments"] == ["all"]
    assert doc["groups"] == ["Marketing"]
    assert {
        "group": "Marketing",
        "environment": "production",
        "kind": "folder",
        "path": "marketing/",
        "level": "editor",
        "provenance": "policy:grants",
    } in doc["grants"]
    html = client.get("/session", headers={"Accept": "text/html"}).get_data(as_text=True)
    for seen in ("rule platform-admins", "rule marketing", "<code>marketing/</code>"):
        assert seen in html


def test_demo_pushes_a_policy_file_an_earlier_run_left(cli, settings):
    """A policy file an earlier `make run` installed (and someone edited) is what the demo pushes
    as the first stored version; a broken one stops it with file:line and stores nothing."""
    slug, broken = f"demo-{secrets.token_hex(3)}", f"demo-{secrets.token_hex(3)}"
    cli.env["BRIDGE_POLICY_DIR"] = str(settings.policy_dir)
    left = settings.policy_dir / f"{slug}.yaml"
    left.write_text(
        f"account: {slug}\nenvironments: [production, staging]\n"
        "defaults: {role: reports, environments: [production]}\n"
    )
    try:
        shown = cli("demo", "--slug", slug)
        assert shown.exit_code == 0, shown.output
        assert f"policy:             version 1 is active (pushed from {left})" in shown.stdout
        assert cli("policy", "pull", slug).stdout == left.read_text()

        (settings.policy_dir / f"{broken}.yaml").write_text(f"account: {broken}\nrules: 5\n")
        refused = cli("demo", "--slug", broken)
        assert refused.exit_code == 1
        assert f"{broken}.yaml: the policy does not load:\n{broken}.yaml:2:" in refused.stderr
        pulled = cli("policy", "pull", broken)
        assert pulled.exit_code == 1 and "has no active policy version" in pulled.stderr
    finally:
        left.unlink(missing_ok=True)
        (settings.policy_dir / f"{broken}.yaml").unlink(missing_ok=True)
