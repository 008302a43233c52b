"""IdP test logins (bridge.test_logins) over HTTP, end to end with the dev IdP: the API's URL and
the console's button start a login that is validated like a real one, shows what the IdP sent
and what the policy would decide, and signs nobody in, creates nobody and sets no session."""

import re
from datetime import timedelta
from html import unescape
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from bridge import idps, provisioning
from bridge.models import (
    AuditEvent,
    LoginAttempt,
    LoginSession,
    OneTimeLink,
    RoleAssignment,
    User,
    utcnow,
)
from saml import devidp
from tests import factories
from tests.console_support import BASE, ConsoleLogin, write_policy
from tests.integration.api_client import problem_type
from tests.saml_idp import TestIdP, parse_authn_request

IDP_URL = "http://dev-idp.test"
AUTOPOST = re.compile(r'name=SAMLResponse value="([^"]+)"')


@pytest.fixture
def dev_idp(tmp_path, store, account, settings):
    """The dev IdP (its own app, driven through its test client) registered as `dev`."""
    write_policy(settings, account.slug)
    home = tmp_path / "dev-idp"
    app = devidp.create_app(home, IDP_URL)
    _key, cert = devidp.keys(home)
    idps.add(store, account.slug, devidp.metadata(IDP_URL, cert), name="dev", actor="test")
    return app.test_client()


def _count(store, model, account, *where):
    with store.read() as db:
        return db.scalar(
            select(func.count()).select_from(model).where(model.account_id == account.id, *where)
        )


def _events(store, account, action):
    with store.read() as db:
        return db.scalars(
            select(AuditEvent)
            .where(AuditEvent.account_id == account.id, AuditEvent.action == action)
            .order_by(AuditEvent.seq)
        ).all()


def _text(response):
    return unescape(response.get_data(as_text=True))


def _through_dev_idp(client, idp_client, url, *, user_name, groups="", department=""):
    """Open the test-login URL, press its button, sign in at the dev IdP, post its answer to the
    ACS as the dev IdP's page would; returns (the ACS response, the posted form)."""
    path = urlsplit(url).path
    page = client.get(path)
    assert page.status_code == 200, page.status_code
    assert "Continue to dev" in _text(page)
    sent = client.post(path)
    assert sent.status_code == 302, _text(sent)
    at_idp = urlsplit(sent.headers["Location"])
    assert f"{at_idp.scheme}://{at_idp.netloc}" == IDP_URL
    chooser = idp_client.get(f"{at_idp.path}?{at_idp.query}")
    fields = dict(re.findall(r'<input type=hidden name="(\w+)" value="([^"]*)"', _text(chooser)))
    answer = idp_client.post(
        "/sso",
        data={**fields, "user_name": user_name, "groups": groups, "department": department},
    )
    form = {"SAMLResponse": AUTOPOST.search(_text(answer))[1], "RelayState": fields["relay_state"]}
    acs = urlsplit(fields["acs"]).path
    return client.post(acs, data=form), (acs, form)


def test_an_admin_key_gets_a_url_that_runs_the_login_and_provisions_nobody(
    client, api_for, store, account, dev_idp
):
    """API test-login URL -> the dev IdP -> the ACS shows NameID, attributes and the decision;
    afterwards no user, no role, no session, no cookie; one test_login line, audited."""
    admin = api_for(account, "admin")
    r = admin.post("idps/dev/test-login")
    assert r.status_code == 201, r.json
    assert r.json["idp"] == "dev" and r.json["url"].startswith(f"{BASE}/saml/{account.slug}/")
    shown, _ = _through_dev_idp(
        client, dev_idp, r.json["url"], user_name="ann@example.com", groups="admins"
    )
    text = _text(shown)
    assert shown.status_code == 200, text
    assert "nobody was signed in, nobody was created or changed" in text
    assert re.search(r"<code id=name-id>ann@example.com</code>", text)
    assert "<code>groups</code>" in text and "<code>admins</code>" in text
    assert "create the user <strong>ann@example.com</strong>" in text
    assert re.search(r"<dt>Role</dt><dd><strong>admin</strong>\s*<small>rule admins</small>", text)
    assert "bridge_session" not in " ".join(shown.headers.getlist("Set-Cookie"))
    csp = shown.headers["Content-Security-Policy"]
    assert "script-src" not in csp and "default-src 'none'" in csp
    assert shown.headers["X-Frame-Options"] == "DENY"
    assert _count(store, User, account) == 0
    assert _count(store, LoginSession, account) == 0
    assert client.get("/session", headers={"Accept": "application/json"}).status_code == 401
    with store.read() as db:
        line = db.scalars(select(LoginAttempt).where(LoginAttempt.account_id == account.id)).one()
    assert (line.ok, line.reason, line.user_id, line.name_id) == (
        True,
        "test_login",
        None,
        "ann@example.com",
    )
    assert f"asked by api:key:{admin.key_id}" in line.detail and "role admin" in line.detail
    (event,) = _events(store, account, "idp.test_login")
    assert event.actor == f"api:key:{admin.key_id}" and event.target_id == "dev"
    assert event.after["outcome"] == "create" and event.after["role"] == "admin"
    assert _events(store, account, "login.succeed") == []
    assert _events(store, account, "user.create") == []


def test_the_test_answer_cannot_sign_anyone_in_when_posted_again(
    client, api_for, store, account, dev_idp
):
    """The test's SAMLResponse, posted again to the ACS: refused as a replay; no session."""
    url = api_for(account, "admin").post("idps/dev/test-login").json["url"]
    _shown, (acs, form) = _through_dev_idp(
        client, dev_idp, url, user_name="ann@example.com", groups="admins"
    )
    again = client.post(acs, data=form)
    assert again.status_code in (400, 403)
    assert "bridge_session" not in " ".join(again.headers.getlist("Set-Cookie"))
    with store.read() as db:
        reasons = db.scalars(
            select(LoginAttempt.reason)
            .where(LoginAttempt.account_id == account.id)
            .order_by(LoginAttempt.id)
        ).all()
    assert reasons == ["test_login", "unknown_in_response_to"]
    assert _count(store, User, account) == 0 and _count(store, LoginSession, account) == 0


def test_an_answer_to_a_test_request_is_never_a_real_login(client, api_for, store, account):
    """If the real login path meets a test request's answer, it refuses it (test_login_only)."""
    idp = TestIdP()
    write_policy_and_idp(store, account, idp)
    url = api_for(account, "admin").post("idps/test/test-login").json["url"]
    path = urlsplit(url).path
    sent = client.post(path)
    request = parse_authn_request(sent.headers["Location"])
    xml = idp.response(
        destination=f"{BASE}/saml/{account.slug}/acs",
        audience=f"{BASE}/saml/{account.slug}/metadata",
        in_response_to=request.id,
        name_id="ann@example.com",
    )
    # the claim itself, as the real path calls it: refused, and the request stays unused
    from saml import sso

    with store.read() as db:
        idp_row = idps.get(db, account.id, "test")
    assertion = sso.Assertion(
        idp=idp_row,
        name_id="ann@example.com",
        name_id_format=None,
        subject=None,  # type: ignore[arg-type]
        session_index=None,
        attributes={},
        in_response_to=request.id,
        relay_state=None,
        assertion_id="_x",
        expires=utcnow() + timedelta(minutes=5),
    )
    nonce = None

    def work(db):
        from bridge.models import Account

        sso.claim(db, db.get(Account, account.id), idp_row, assertion, nonce)

    with pytest.raises(sso.SamlRejected) as refused:
        store.write(work)
    assert refused.value.reason == "test_login_only"
    # and the answer posted normally is still the test's, not a sign-in
    shown = client.post(f"/saml/{account.slug}/acs", data=idp.post_form(xml))
    assert shown.status_code == 200 and "This was a test" in _text(shown)
    assert _count(store, LoginSession, account) == 0


def write_policy_and_idp(store, account, idp):
    idps.add(store, account.slug, idp.metadata_xml(), name="test", actor="test")


def test_a_bad_signature_is_refused_with_its_reason_even_in_a_test(
    client, api_for, store, account, settings
):
    """A test login whose answer is signed by another key: bad_signature, nothing written but
    the refusal, the request still unused (the signature is checked before anything)."""
    write_policy(settings, account.slug)
    idp = TestIdP()
    write_policy_and_idp(store, account, idp)
    url = api_for(account, "admin").post("idps/test/test-login").json["url"]
    sent = client.post(urlsplit(url).path)
    request = parse_authn_request(sent.headers["Location"])
    xml = idp.signed_by_other_key(
        destination=f"{BASE}/saml/{account.slug}/acs",
        audience=f"{BASE}/saml/{account.slug}/metadata",
        in_response_to=request.id,
        name_id="ann@example.com",
        attributes={"groups": ["admins"]},
    )
    refused = client.post(f"/saml/{account.slug}/acs", data=idp.post_form(xml))
    assert refused.status_code == 400
    assert "This was a test" not in _text(refused)
    with store.read() as db:
        line = db.scalars(select(LoginAttempt).where(LoginAttempt.account_id == account.id)).one()
    assert (line.ok, line.reason) == (False, "bad_signature")
    assert "(test login)" in line.detail
    assert _events(store, account, "idp.test_login") == []
    assert _count(store, User, account) == 0 and _count(store, LoginSession, account) == 0


def test_an_existing_user_is_previewed_and_left_exactly_as_stored(
    client, api_for, store, account, dev_idp
):
    """A SCIM user signing in at a test: "sign in the existing user", the policy's decision for
    them; their row's version and their access are unchanged."""
    out = provisioning.provision(
        store, account.id, factories.profile(user_name="bo@example.com"), actor="scim:t"
    )
    with store.read() as db:
        before = db.get(User, out.user_id).version
        role_before = db.scalar(
            select(RoleAssignment.role).where(RoleAssignment.user_id == out.user_id)
        )
    url = api_for(account, "admin").post("idps/dev/test-login").json["url"]
    shown, _ = _through_dev_idp(
        client, dev_idp, url, user_name="bo@example.com", groups="admins", department="Marketing"
    )
    text = _text(shown)
    assert "sign in the existing user <strong>bo@example.com</strong>" in text
    assert "<strong>admin</strong>" in text and "folder <code>marketing/</code>" in text
    with store.read() as db:
        assert db.get(User, out.user_id).version == before
        role_now = db.scalar(
            select(RoleAssignment.role).where(RoleAssignment.user_id == out.user_id)
        )
    assert role_now == role_before == "media_library_user"
    assert _count(store, LoginSession, account) == 0


def test_an_unknown_person_at_an_idp_without_jit_would_be_refused(
    client, api_for, store, account, dev_idp
):
    idps.change_settings(store, account.id, "dev", {"allow_jit": False}, actor="test")
    url = api_for(account, "admin").post("idps/dev/test-login").json["url"]
    shown, _ = _through_dev_idp(client, dev_idp, url, user_name="new@example.com")
    assert "be refused: <code>user_not_provisioned</code>" in _text(shown)
    (event,) = _events(store, account, "idp.test_login")
    assert event.after["outcome"] == "user_not_provisioned"


def test_a_test_link_starts_one_login_only(client, api_for, store, account, dev_idp):
    url = api_for(account, "admin").post("idps/dev/test-login").json["url"]
    path = urlsplit(url).path
    assert client.post(path).status_code == 302
    again = client.post(path)
    assert again.status_code == 409 and "already used" in _text(again)
    assert client.get(path).status_code == 409
    with store.read() as db:
        from bridge.models import AuthnRequest

        assert (
            db.scalar(
                select(func.count())
                .select_from(AuthnRequest)
                .where(AuthnRequest.account_id == account.id)
            )
            == 1
        )
    forged = client.get(f"/saml/{account.slug}/test-login/ibt_nothing")
    assert forged.status_code == 404


def test_only_an_admin_key_may_ask_and_errors_are_problems(api_for, store, account, dev_idp):
    """read and write keys: 403; an unknown IdP: 404; a disabled one: 409; no link written."""
    for scope in ("read", "write"):
        r = api_for(account, scope).post("idps/dev/test-login")
        assert r.status_code == 403 and problem_type(r) == "forbidden"
    admin = api_for(account, "admin")
    r = admin.post("idps/nope/test-login")
    assert r.status_code == 404 and problem_type(r) == "not-found"
    idps.set_disabled(store, account.slug, "dev", True, actor="test")
    r = admin.post("idps/dev/test-login")
    assert r.status_code == 409 and problem_type(r) == "conflict"
    assert "disabled" in r.json["detail"]
    assert _count(store, OneTimeLink, account) == 0


def test_the_console_button_runs_a_test_login_signed_by_the_admin(client, store, account, settings):
    """The IdP screen's Test login button (CSRF) -> the one-time page -> IdP -> the result;
    the admin's own console session is the only session; audit signed console:<admin>."""
    console = ConsoleLogin(client, store, account, settings)
    console.sign_in("ann@example.com")
    page = console.client.get(f"/console/{account.slug}/idp")
    assert "Test login</button>" in _text(page)
    started = console.post("/idp/test/test-login")
    assert started.status_code == 303
    path = started.headers["Location"]
    assert path.startswith(f"/saml/{account.slug}/test-login/ibt_")
    sent = console.client.post(path)
    request = parse_authn_request(sent.headers["Location"])
    xml = console.idp.response(
        destination=f"{BASE}/saml/{account.slug}/acs",
        audience=f"{BASE}/saml/{account.slug}/metadata",
        in_response_to=request.id,
        name_id="carl@example.com",
        attributes={"groups": ["staff"]},
    )
    shown = console.client.post(f"/saml/{account.slug}/acs", data=console.idp.post_form(xml))
    text = _text(shown)
    assert "create the user <strong>carl@example.com</strong>" in text
    assert "<strong>media_library_user</strong>" in text
    (issued,) = _events(store, account, "idp.test_login_issue")
    (ran,) = _events(store, account, "idp.test_login")
    assert issued.actor == ran.actor == "console:ann@example.com"
    with store.read() as db:
        names = db.scalars(select(User.user_name).where(User.account_id == account.id)).all()
    assert names == ["ann@example.com"]  # the admin; carl was never created
    assert _count(store, LoginSession, account) == 1
    logins_page = _text(console.client.get(f"/console/{account.slug}/logins"))
    assert "test login</span>" in logins_page and "carl@example.com" in logins_page


def test_the_console_button_needs_an_admin_and_a_csrf_token(app, client, store, account, settings):
    """Without the form's token: refused, nothing written; a non-admin: refused, nothing written."""
    console = ConsoleLogin(client, store, account, settings)
    console.sign_in("ann@example.com")
    forged = console.post("/idp/test/test-login", csrf=False)
    assert forged.status_code == 403 and "Nothing was changed" in _text(forged)
    console.client = app.test_client()  # another browser
    console.sign_in("bob@example.com", groups=("staff",))
    refused = console.post("/idp/test/test-login", csrf=False)
    assert refused.status_code == 403
    assert _count(store, OneTimeLink, account, OneTimeLink.purpose == "test_login") == 0
