"""OIDC Core §3.1.2.1 `prompt` and `max_age` at /oidc/authorize, driven by a stock relying party
(Authlib's requests client; joserfc checks the ID token) over real HTTP with the test IdP:
prompt=login and a max_age the session is older than sign the person in again (SAML ForceAuthn)
and move auth_time; prompt=none never shows a page and answers login_required without a session
fresh enough."""

import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import func, select

from bridge import clients, idps
from bridge.models import LoginAttempt, LoginSession, OidcCode
from tests.browser_flow import Browser
from tests.saml_idp import TestIdP, parse_authn_request

REDIRECT = "https://product.example.test/callback"


@pytest.fixture
def rp(live, store, account):
    idp = TestIdP()
    idps.add(store, account.slug, idp.metadata_xml(), name="test", actor="t")
    made = clients.add(store, account.slug, name="Product", redirect_uris=[REDIRECT], actor="t")
    meta = requests.get(f"{live.base_url}/.well-known/openid-configuration", timeout=10).json()
    return RP(live, store, account, made, meta, Browser(idp, live.base_url, account.slug))


class RP:
    def __init__(self, live, store, account, made, meta, browser):
        self.live, self.store, self.account, self.meta = live, store, account, meta
        self.made, self.browser, self.idp_requests = made, browser, []

    def session(self):
        return OAuth2Session(
            self.made.client_id,
            self.made.secret,
            scope="openid email",
            redirect_uri=REDIRECT,
            code_challenge_method="S256",
        )

    def _stop(self, url):
        if url.startswith(self.browser.idp.sso_url):
            self.idp_requests.append(parse_authn_request(url))
        return url.startswith(REDIRECT)

    def sign_in(self, **params):
        """The whole flow with the browser; the verified ID token's claims."""
        session, verifier = self.session(), generate_token(48)
        url, state = session.create_authorization_url(
            self.meta["authorization_endpoint"], code_verifier=verifier, **params
        )
        return self.claims(session, verifier, state, self.browser.follow(url, stop=self._stop))

    def claims(self, session, verifier, state, callback):
        """The code at `callback` exchanged: the verified ID token's claims."""
        assert isinstance(callback, str), getattr(callback, "text", callback)
        assert parse_qs(urlsplit(callback).query)["state"] == [state]
        token = session.fetch_token(
            self.meta["token_endpoint"], authorization_response=callback, code_verifier=verifier
        )
        keys = KeySet.import_key_set(requests.get(self.meta["jwks_uri"], timeout=10).json())
        return jwt.decode(token["id_token"], keys, algorithms=["ES256"]).claims

    def first_hop(self, browser=None, **params):
        url, state = self.session().create_authorization_url(
            self.meta["authorization_endpoint"], code_verifier=generate_token(48), **params
        )
        http = (browser or self.browser).http if browser is not False else requests
        return http.get(url, allow_redirects=False, timeout=10), state


def _sessions(store, account):
    with store.read() as db:
        return db.scalar(
            select(func.count())
            .select_from(LoginSession)
            .where(LoginSession.account_id == account.id)
        )


def _codes(store):
    with store.read() as db:
        return db.scalar(select(func.count()).select_from(OidcCode))


def test_prompt_login_signs_in_again_with_force_authn(rp, store):
    """Signed in already, prompt=login still goes to the IdP, with ForceAuthn="true", and the
    new ID token's auth_time is the new login's; without prompt the session is used as is."""
    first = rp.sign_in(nonce="a")
    assert rp.idp_requests[-1].root.get("ForceAuthn") in (None, "false")
    time.sleep(1.1)  # auth_time has whole seconds
    rp.idp_requests.clear()
    reused = rp.sign_in(nonce="b")
    assert rp.idp_requests == [] and reused["auth_time"] == first["auth_time"]
    again = rp.sign_in(nonce="c", prompt="login")
    assert [r.root.get("ForceAuthn") for r in rp.idp_requests] == ["true"]
    assert again["auth_time"] > first["auth_time"] and again["sub"] == first["sub"]
    assert abs(again["auth_time"] - time.time()) < 30
    assert _sessions(store, rp.account) == 2


def test_max_age_older_session_signs_in_again(rp):
    """max_age shorter than the session's age forces a new login (ForceAuthn); a longer one does
    not; the ID token always carries auth_time."""
    first = rp.sign_in(nonce="m1")
    rp.idp_requests.clear()
    kept = rp.sign_in(nonce="m2", max_age="3600")
    assert rp.idp_requests == [] and kept["auth_time"] == first["auth_time"]
    time.sleep(2.1)
    renewed = rp.sign_in(nonce="m3", max_age="1")
    assert [r.root.get("ForceAuthn") for r in rp.idp_requests] == ["true"]
    assert renewed["auth_time"] > first["auth_time"]
    assert time.time() - renewed["auth_time"] <= 1 + 30


def test_prompt_none_without_a_session_answers_login_required(rp, store):
    """prompt=none in a browser with no session: a redirect to the client with
    error=login_required and its state, no page, no IdP, no code."""
    before = _codes(store)
    answer, state = rp.first_hop(browser=False, prompt="none", nonce="n0")
    assert answer.status_code == 302
    location = urlsplit(answer.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["error"] == ["login_required"] and query["state"] == [state]
    assert "code" not in query and _codes(store) == before


def test_prompt_none_with_a_session_issues_a_code_at_once(rp):
    """prompt=none with a bridge session: the code comes back without any page."""
    rp.sign_in(nonce="s1")
    answer, state = rp.first_hop(prompt="none", nonce="s2")
    assert answer.status_code == 302
    query = parse_qs(urlsplit(answer.headers["Location"]).query)
    assert query["state"] == [state] and query["code"] and "error" not in query


def test_prompt_none_with_a_stale_session_answers_login_required(rp, store):
    """prompt=none with max_age=0 (any session is too old) or with login: login_required or
    invalid_request, never a page and never a code."""
    rp.sign_in(nonce="t1")
    time.sleep(1.1)
    before = _codes(store)
    answer, _ = rp.first_hop(prompt="none", max_age="0", nonce="t2")
    assert answer.status_code == 302
    assert parse_qs(urlsplit(answer.headers["Location"]).query)["error"] == ["login_required"]
    both, _ = rp.first_hop(prompt="none login", nonce="t3")
    assert both.status_code == 302
    assert parse_qs(urlsplit(both.headers["Location"]).query)["error"] == ["invalid_request"]
    assert _codes(store) == before


def test_bad_max_age_is_refused_to_the_client(rp, store):
    """A max_age that is not a whole number of seconds: invalid_request to the client."""
    before = _codes(store)
    for bad in ("-1", "1.5", "soon", "9" * 11):
        answer, state = rp.first_hop(browser=False, max_age=bad, nonce="b" + bad)
        assert answer.status_code == 302, bad
        query = parse_qs(urlsplit(answer.headers["Location"]).query)
        assert query["error"] == ["invalid_request"] and query["state"] == [state]
        assert "max_age" in query["error_description"][0]
    assert _codes(store) == before


def test_a_forged_auth_after_cannot_loop_or_fail(rp):
    """Our own `auth_after` marker far in the future or huge is capped at now: one forced login
    and the code, never a redirect loop or a 500."""
    rp.sign_in(nonce="f1")
    for value in ("99999999999999", "999999999999999", "1" * 40):
        rp.idp_requests.clear()
        claims = rp.sign_in(nonce=f"f-{value[:5]}-{len(value)}", auth_after=value)
        assert claims["sub"]


def _answer_with_instant(rp, url, authn_instant):
    """Follow `url` to the IdP and answer the AuthnRequest as an IdP whose AuthnInstant is
    `authn_instant` (an IdP that reused its session ignores ForceAuthn)."""
    http = rp.browser.http
    for _ in range(6):
        if url.startswith(rp.browser.idp.sso_url):
            break
        response = http.get(url, allow_redirects=False, timeout=10)
        assert response.status_code == 302, response.text
        url = urljoin(response.url, response.headers["Location"])
    request = parse_authn_request(url)
    relay = parse_qs(urlsplit(url).query).get("RelayState", [None])[0]
    acs = f"{rp.live.base_url}/saml/{rp.account.slug}/acs"
    xml = rp.browser.idp.response(
        destination=acs,
        audience=f"{rp.live.base_url}/saml/{rp.account.slug}/metadata",
        in_response_to=request.id,
        name_id="ann@example.com",
        issue_instant=authn_instant,
    )
    answer = http.post(
        acs, data=rp.browser.idp.post_form(xml, relay), allow_redirects=False, timeout=10
    )
    return request, answer


def test_an_idp_that_ignores_force_authn_is_refused(rp, store):
    """prompt=login, and the IdP answers with an AuthnInstant from an hour ago: refused with
    reason not_reauthenticated (logged), no new session, no code; the same old AuthnInstant
    without ForceAuthn is accepted as before."""
    rp.sign_in(nonce="i1")
    sessions_before, codes_before = _sessions(store, rp.account), _codes(store)
    url, _ = rp.session().create_authorization_url(
        rp.meta["authorization_endpoint"],
        code_verifier=generate_token(48),
        nonce="i2",
        prompt="login",
    )
    old = datetime.now(UTC) - timedelta(hours=1)
    request, answer = _answer_with_instant(rp, url, old)
    assert request.root.get("ForceAuthn") == "true"
    assert answer.status_code == 403 and "sign in again" in answer.text
    assert "not_reauthenticated" in answer.text
    assert _sessions(store, rp.account) == sessions_before and _codes(store) == codes_before
    with store.read() as db:
        last = db.scalars(
            select(LoginAttempt)
            .where(LoginAttempt.account_id == rp.account.id)
            .order_by(LoginAttempt.id.desc())
        ).first()
    assert (last.ok, last.reason) == (False, "not_reauthenticated")
    plain = f"{rp.live.base_url}/saml/{rp.account.slug}/login?next=/session"
    request, answer = _answer_with_instant(rp, plain, old)
    assert request.root.get("ForceAuthn") in (None, "false")
    assert answer.status_code == 302 and _sessions(store, rp.account) == sessions_before + 1


def _sign_in_answered_at(rp, authn_instant, **params):
    """The whole flow, the IdP answering with `authn_instant`: its request and the claims."""
    session, verifier = rp.session(), generate_token(48)
    url, state = session.create_authorization_url(
        rp.meta["authorization_endpoint"], code_verifier=verifier, **params
    )
    request, answer = _answer_with_instant(rp, url, authn_instant)
    assert answer.status_code == 302, answer.text
    back = urljoin(answer.url, answer.headers["Location"])
    return request, rp.claims(session, verifier, state, rp.browser.follow(back, stop=rp._stop))


def test_auth_time_is_when_the_idp_authenticated(rp, store):
    """An IdP that answers from its own session of an hour ago: the ID token's auth_time is that
    hour-old AuthnInstant, not the bridge login's moment, so a product's max_age of 30 minutes
    sends the person to authenticate again (ForceAuthn) though their bridge session is new."""
    old = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    request, claims = _sign_in_answered_at(rp, old, nonce="o1")
    assert request.root.get("ForceAuthn") in (None, "false")
    assert claims["auth_time"] == int(old.timestamp())
    rp.idp_requests.clear()
    renewed = rp.sign_in(nonce="o2", max_age="1800")
    assert [r.root.get("ForceAuthn") for r in rp.idp_requests] == ["true"]
    assert abs(renewed["auth_time"] - time.time()) < 30 and renewed["sub"] == claims["sub"]
    assert _sessions(store, rp.account) == 2


def test_auth_time_from_an_idp_clock_ahead_or_behind(rp):
    """An IdP clock a minute ahead: auth_time is capped at the login's moment (never in the
    future). prompt=login answered by an IdP clock a minute behind (within the drift the
    ForceAuthn check allows): one forced login and the code, no redirect loop."""
    ahead = datetime.now(UTC) + timedelta(minutes=1)
    _, claims = _sign_in_answered_at(rp, ahead, nonce="a1")
    assert claims["auth_time"] <= time.time() + 1
    time.sleep(1.1)
    behind = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    rp.idp_requests.clear()
    request, again = _sign_in_answered_at(rp, behind, nonce="a2", prompt="login")
    assert request.root.get("ForceAuthn") == "true"
    assert again["auth_time"] == int(behind.timestamp()) and again["sub"] == claims["sub"]
