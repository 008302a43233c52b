"""Where a login lands and how a session ends, through HTTP: the signed-in page (HTML for
browsers, JSON for programs), redirect targets judged as a browser reads them, sign-out only by
a POST carrying the session's CSRF token, and every refusal written where its page points."""

import json
import logging
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select

from bridge import idps, logins
from bridge.models import AuthnRequest, LoginSession
from tests.integration.test_saml import BASE, Login
from tests.saml_idp import TestIdP, parse_authn_request

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture
def saml(client, store, account):
    idp = TestIdP()
    idps.add(store, account.slug, idp.metadata_xml(), name="test", actor="t")
    return Login(client, store, account, idp)


def _count(store, model, account):
    with store.read() as db:
        return db.scalar(
            select(func.count()).select_from(model).where(model.account_id == account.id)
        )


def _sign_in(saml, name_id="ann@example.com", next_url=None, **kw):
    query = {} if next_url is None else {"next": next_url}
    start = saml.client.get(f"/saml/{saml.account.slug}/login", query_string=query)
    assert start.status_code == 302, start.get_data(as_text=True)
    request = parse_authn_request(start.headers["Location"])
    relay = parse_qs(urlsplit(start.headers["Location"]).query).get("RelayState", [None])[0]
    xml = saml.response(in_response_to=request.id, name_id=name_id, **kw)
    return saml.post(xml, relay_state=relay), relay


def _failed(saml):
    with saml.store.read() as db:
        return logins.recent(db, saml.account.id, failed=True)


# --- landing ---------------------------------------------------------------------------------


def test_login_without_next_lands_on_the_signed_in_page(saml):
    """No `next`: the RelayState sent is /session (not the login URL), and the ACS lands there."""
    done, relay = _sign_in(saml)
    assert relay == "/session"
    assert done.status_code == 302 and done.headers["Location"] == "/session"


def test_a_next_naming_the_login_url_never_loops(saml):
    """`next` pointing back at a login URL (or its absolute form) lands on /session instead."""
    for target in (f"/saml/{saml.account.slug}/login", f"{BASE}/saml/{saml.account.slug}/login/"):
        done, _ = _sign_in(saml, next_url=target)
        assert done.headers["Location"] == "/session"


def test_signed_in_page_for_browsers(saml, settings):
    """A browser sees who, role, environments, groups and grants with where each came from, and
    a sign-out form that POSTs the session's CSRF token."""
    slug = saml.account.slug
    (settings.policy_dir / f"{slug}.yaml").write_text(
        f"account: {slug}\nenvironments: [production, staging]\n"
        "defaults: {role: media_library_user, environments: [production]}\n"
        "rules:\n"
        "  - name: admins\n    when: {groups: {contains: cld-admins}}\n"
        "    then: {role: admin, environments: all}\n"
        "  - name: marketing\n    when: {groups: {contains: Marketing}}\n"
        "    then: {groups: [Marketing]}\n"
        "grants:\n  Marketing:\n"
        "    - {environment: production, folder: 'marketing/', level: editor}\n"
    )
    _sign_in(saml, attributes={"groups": ["cld-admins", "Marketing"]})
    page = saml.client.get("/session", headers={"Accept": BROWSER})
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "ann@example.com" in html and "<strong>admin</strong>" in html
    assert "from the account&#39;s policy, rule admins" in html
    assert "<strong>all</strong>" in html and "<strong>Marketing</strong>" in html
    assert "rule marketing" in html
    assert "<code>marketing/</code>" in html and "editor" in html and "group Marketing" in html
    token = saml.client.get("/session").json["csrf_token"]
    assert "<form method=post action='/logout'>" in html
    assert f"name=csrf_token value='{token}'" in html
    assert page.headers["Cache-Control"] == "no-store"


def test_session_is_json_for_programs(saml):
    """curl (`*/*`), an explicit JSON Accept and no Accept at all get the JSON document."""
    _sign_in(saml)
    for headers in ({}, {"Accept": "*/*"}, {"Accept": "application/json"}):
        resp = saml.client.get("/session", headers=headers)
        assert resp.status_code == 200 and resp.mimetype == "application/json"
        assert resp.json["user"]["userName"] == "ann@example.com"


def test_not_signed_in_is_401_in_both_forms(client):
    """Nobody signed in: 401 JSON for programs, a 401 page for browsers."""
    assert client.get("/session").json["error"] == "Unauthorized"
    page = client.get("/session", headers={"Accept": BROWSER})
    assert page.status_code == 401 and "You are not signed in" in page.get_data(as_text=True)


# --- open redirects (issue 9 item 1) -----------------------------------------------------------

HOSTILE = [
    "/%09/evil.example/x",
    "/\t/evil.example/x",
    "/%0A/x",
    "/%0D%0ALocation:%20https://evil.example",
    "//evil.example/",
    "/\\evil.example",
    "\\\\evil.example",
    "/%5Cevil.example",
    "/%2F/evil.example",
    "/%252F%252Fevil.example",
    "https://evil.example/",
    "HTTPS://evil.example",
    "https:evil.example",
    f"{BASE}@evil.example/",
    "javascript:alert(1)",
    "data:text/html,x",
    " /x",
    "/..//evil.example",
    "evil.example",
    "/%ff",
]


@pytest.mark.parametrize("target", HOSTILE)
def test_hostile_next_is_refused_at_login(saml, target):
    """A `next` a browser would read as another origin (or cannot read plainly) is 400
    bad_relay_state, logged, and no AuthnRequest is kept."""
    resp = saml.client.get(f"/saml/{saml.account.slug}/login", query_string={"next": target})
    assert resp.status_code == 400
    assert "somewhere we do not trust" in resp.get_data(as_text=True)
    assert _failed(saml)[0]["reason"] == "bad_relay_state"
    assert _count(saml.store, AuthnRequest, saml.account) == 0


@pytest.mark.parametrize("target", ["/welcome", "/a/b?c=d#e", "/caf%C3%A9", f"{BASE}/x"])
def test_plain_local_targets_are_kept(saml, target):
    """Plain local paths and our own origin are followed as given."""
    done, _ = _sign_in(saml, next_url=target)
    assert done.status_code == 302 and done.headers["Location"] == target


@pytest.mark.parametrize("target", ["/%09/evil.example/x", "/\\evil.example", "//evil.example"])
def test_hostile_relay_state_refused_on_idp_initiated_login(saml, store, target):
    """An IdP-initiated login's RelayState is judged the same way, before anything is written."""

    def allow(db):
        idps.get(db, saml.account.id, "test").allow_idp_initiated = True

    store.write(allow)
    resp = saml.post(saml.response(name_id="idp@example.com"), relay_state=target)
    assert resp.status_code == 400 and saml.last_reason() == "bad_relay_state"
    assert saml.users() == 0 and _count(store, LoginSession, saml.account) == 0


def test_bad_stored_target_refused_before_the_login_commits(saml, store):
    """A pending request whose kept target is unsafe (kept by an older version) is refused at
    the ACS with 400, and neither the user nor a session is written (it was a 500 after commit)."""
    request_id = saml.start().id

    def spoil(db):
        db.get(AuthnRequest, request_id).relay_state = "/\n/x"

    store.write(spoil)
    resp = saml.post(saml.response(in_response_to=request_id, name_id="nl@example.com"))
    assert resp.status_code == 400 and saml.last_reason() == "bad_relay_state"
    assert saml.users() == 0 and _count(store, LoginSession, saml.account) == 0
    with store.read() as db:
        assert db.get(AuthnRequest, request_id) is not None  # nothing used up either


# --- sign-out (issue 9 item 4) -----------------------------------------------------------------


def test_get_logout_only_asks(saml):
    """GET /logout (a link, an <img>) shows a confirmation form and ends nothing."""
    _sign_in(saml)
    page = saml.client.get("/logout", headers={"Accept": BROWSER})
    assert page.status_code == 200 and "Sign out?" in page.get_data(as_text=True)
    token = saml.client.get("/session").json["csrf_token"]
    assert f"name=csrf_token value='{token}'" in page.get_data(as_text=True)
    assert saml.client.get("/session").status_code == 200


@pytest.mark.parametrize("form", [{}, {"csrf_token": ""}, {"csrf_token": "0" * 64}, {"x": "y"}])
def test_logout_post_without_the_token_is_refused(saml, form):
    """A POST without the session's token (a cross-site form) is 403; the session stays."""
    _sign_in(saml)
    resp = saml.client.post("/logout", data=form)
    assert resp.status_code == 403 and "still signed" in resp.get_data(as_text=True)
    assert saml.client.get("/session").status_code == 200


def test_another_sessions_token_does_not_sign_out(saml, app):
    """A token is bound to its session: one user's token cannot end another's session."""
    _sign_in(saml, name_id="one@example.com")
    other = app.test_client()
    saml_other = Login(other, saml.store, saml.account, saml.idp)
    _sign_in(saml_other, name_id="two@example.com")
    stolen = other.get("/session").json["csrf_token"]
    assert saml.client.post("/logout", data={"csrf_token": stolen}).status_code == 403
    assert saml.client.get("/session").status_code == 200


def test_logout_with_the_token_signs_out(saml):
    """The form's POST (or a program's X-CSRF-Token header) ends the session."""
    _sign_in(saml)
    token = saml.client.get("/session").json["csrf_token"]
    resp = saml.client.post("/logout", headers={"X-CSRF-Token": token})
    assert resp.status_code in (200, 302) and "bridge_session=;" in resp.headers["Set-Cookie"]
    assert saml.client.get("/session").status_code == 401
    assert _count(saml.store, LoginSession, saml.account) == 1  # kept, ended


# --- refusals are written where the page says (issue 8 item 7) ---------------------------------


def test_refusals_of_a_known_account_are_in_the_login_log(saml):
    """unknown_idp, bad_relay_state and a GET on /acs appear in `idbridge logins --failed`,
    with the page's reference; the page says to look there."""
    slug = saml.account.slug
    assert saml.client.get(f"/saml/{slug}/login?idp=nope").status_code == 404
    assert saml.client.get(f"/saml/{slug}/login?next=//evil.example").status_code == 400
    got = saml.client.get(f"/saml/{slug}/acs")
    assert got.status_code == 405 and "idbridge logins" in got.get_data(as_text=True)
    reasons = [row["reason"] for row in _failed(saml)]
    assert reasons == ["wrong_method", "bad_relay_state", "unknown_idp"]
    ref = got.headers["X-Request-ID"]
    assert f"[ref wrong_method / {ref}]" in _failed(saml)[0]["detail"]
    assert f"wrong_method / {ref}" in got.get_data(as_text=True)


def test_refusals_without_an_account_go_to_the_json_log(client, caplog):
    """unknown_account has no login log: a JSON log line carries the reason and the reference,
    and the page says to look in the service log."""
    caplog.set_level(logging.WARNING, logger="saml.views")
    resp = client.get("/saml/no-such-account/login", headers={"X-Request-ID": "req-unknown-1"})
    assert resp.status_code == 404
    html = resp.get_data(as_text=True)
    assert "unknown_account / req-unknown-1" in html and "service log" in html
    lines = [r for r in caplog.records if getattr(r, "reason", None) == "unknown_account"]
    assert lines and lines[0].reference == "unknown_account / req-unknown-1"
    from bridge.logs import JsonFormatter

    with client.application.test_request_context():
        line = json.loads(JsonFormatter().format(lines[0]))
    assert line["reason"] == "unknown_account" and line["reference"].endswith("req-unknown-1")


def test_idp_logout_request_never_redirects_to_its_relay_state(saml, store):
    """An IdP without a logout endpoint: python3-saml would redirect to the LogoutRequest's
    RelayState; the session still ends, and the answer is our page, not that URL."""

    def no_slo(db):
        idps.get(db, saml.account.id, "test").slo_url = None

    store.write(no_slo)
    _sign_in(saml, name_id="slo@example.com", session_index="_s9")
    message = saml.idp.logout_request(
        f"{BASE}/saml/{saml.account.slug}/sls",
        "slo@example.com",
        "_s9",
        relay_state="https://evil.example/after",
    )
    resp = saml.client.get(f"/saml/{saml.account.slug}/sls?{message.query_string}")
    assert resp.status_code == 200 and "Location" not in resp.headers
    assert saml.client.get("/session").status_code == 401
