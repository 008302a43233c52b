"""OpenID Back-Channel Logout 1.0: a deactivated or deleted user, or a sign-out, makes the
workers POST a signed logout token to every client with a back-channel logout URI."""

import threading
import time
from urllib.parse import parse_qs

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from bridge import clients, delivery, idps, sessions
from tests.browser_flow import Browser
from tests.receiver import Receiver
from tests.saml_idp import TestIdP

EVENT = "http://schemas.openid.net/event/backchannel-logout"


@pytest.fixture
def setup(live, store, scim):
    receiver = Receiver()
    made = clients.add(
        store,
        scim.account.slug,
        name="Product",
        redirect_uris=["https://product.example.test/cb"],
        backchannel_logout_uri=receiver.url,
        actor="t",
    )
    stop = threading.Event()
    sender = delivery.Sender(
        store,
        live.app.config["SECRET_KEY"],
        live.base_url,
        True,
        delivery.Tuning(threads=2, poll_seconds=0.05),
    )
    worker = threading.Thread(
        target=delivery.run, args=(store, sender), kwargs={"stop": stop}, daemon=True
    )
    worker.start()
    yield receiver, made
    stop.set()
    worker.join(timeout=15)
    receiver.close()


def _tokens(live, receiver, n):
    deadline = time.monotonic() + 10
    while len(receiver.forms) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    keys = KeySet.import_key_set(requests.get(f"{live.base_url}/oidc/jwks.json", timeout=10).json())
    return [
        jwt.decode(parse_qs(body.decode())["logout_token"][0], keys, algorithms=["ES256"])
        for body in receiver.forms
    ]


def test_scim_deactivation_and_deletion_send_logout_tokens(setup, live, scim):
    """Deactivation, then deletion, each send a logout token for the user, signed by a JWKS key."""
    receiver, made = setup
    user = scim.post("Users", {"userName": "bob@example.com"}).json
    scim.patch(
        f"Users/{user['id']}", {"Operations": [{"op": "replace", "value": {"active": False}}]}
    )
    scim.delete(f"Users/{user['id']}")
    tokens = _tokens(live, receiver, 2)
    assert len(tokens) == 2
    for token in tokens:
        c = token.claims
        assert token.header["typ"] == "logout+jwt" and c["iss"] == live.base_url
        assert c["aud"] == made.client_id and c["sub"] == user["id"]
        assert EVENT in c["events"] and "nonce" not in c and c["exp"] > time.time()


def test_sign_out_sends_a_logout_token_with_the_session(setup, live, store, scim):
    """Ending a bridge session sends a logout token naming that session (sid)."""
    receiver, _ = setup
    idp = TestIdP()
    idps.add(store, scim.account.slug, idp.metadata_xml(), name="test", actor="t")
    browser = Browser(idp, live.base_url, scim.account.slug)
    page = browser.follow(
        f"{live.base_url}/saml/{scim.account.slug}/login?next=/session", stop=lambda url: False
    )
    assert page.status_code == 200
    secret = sessions.cookie_secret(
        live.app.config["SECRET_KEY"], browser.http.cookies.get(sessions.COOKIE)
    )
    ended = sessions.end(store, secret)
    (token,) = _tokens(live, receiver, 1)
    assert token.claims["sid"] == str(ended.id) and token.claims["sub"] == str(ended.user_id)


def test_no_logout_uri_no_delivery(live, store, scim):
    """Clients without a back-channel logout URI are not sent anything."""
    clients.add(
        store, scim.account.slug, name="Plain", redirect_uris=["https://p.test/cb"], actor="t"
    )
    user = scim.post("Users", {"userName": "cy@example.com"}).json
    scim.delete(f"Users/{user['id']}")
    assert delivery.project(store) == (0, [])


@pytest.mark.parametrize("how", ["remove", "disable"])
def test_idp_removal_ends_its_sessions_and_logs_them_out(setup, live, store, scim, how):
    """Removing or disabling an IdP ends the sessions it opened, and each gets a logout token
    with its sid."""
    receiver, _ = setup
    idp = TestIdP()
    idps.add(store, scim.account.slug, idp.metadata_xml(), name="test", actor="t")
    browser = Browser(idp, live.base_url, scim.account.slug)
    page = browser.follow(
        f"{live.base_url}/saml/{scim.account.slug}/login?next=/session", stop=lambda url: False
    )
    sid_user = page.json()["user"]["id"]
    if how == "remove":
        idps.remove(store, scim.account.slug, "test", actor="t")
    else:
        assert idps.set_disabled(store, scim.account.slug, "test", True, actor="t") == 1
    assert browser.http.get(f"{live.base_url}/session", timeout=10).status_code == 401
    (token,) = _tokens(live, receiver, 1)
    assert token.claims["sub"] == sid_user and token.claims["sid"]
