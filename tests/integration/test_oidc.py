"""The OIDC provider, driven by a stock relying party (Authlib's requests client, joserfc for
signatures) over real HTTP, with the test IdP behind the SAML login."""

import time
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import func, select, update

from bridge import authcodes, clients, idps, signing_keys
from bridge.models import Environment, Grant, OidcCode, OidcToken, User, utcnow
from tests.browser_flow import Browser
from tests.saml_idp import TestIdP

REDIRECT = "https://product.example.test/callback"


@pytest.fixture
def rp(live, store, account):
    """A confidential client of a fresh account with one test IdP, and a browser."""
    idp = TestIdP()
    idps.add(store, account.slug, idp.metadata_xml(), name="test", actor="t")
    made = clients.add(store, account.slug, name="Product", redirect_uris=[REDIRECT], actor="t")
    meta = requests.get(f"{live.base_url}/.well-known/openid-configuration", timeout=10).json()
    return RP(live, store, account, made, meta, Browser(idp, live.base_url, account.slug))


class RP:
    def __init__(self, live, store, account, made, meta, browser):
        self.live, self.store, self.account, self.meta, self.browser = (
            live,
            store,
            account,
            meta,
            browser,
        )
        self.client_id, self.secret = made.client_id, made.secret

    def session(self, **kw):
        kw.setdefault("client_secret", self.secret)
        return OAuth2Session(
            self.client_id,
            scope="openid profile email",
            redirect_uri=REDIRECT,
            code_challenge_method="S256",
            **kw,
        )

    def authorize(self, session, **params):
        """Run the browser through /authorize (and the SAML login); the callback URL."""
        verifier = generate_token(48)
        url, state = session.create_authorization_url(
            self.meta["authorization_endpoint"], code_verifier=verifier, **params
        )
        landed = self.browser.follow(url, stop=lambda u: u.startswith(REDIRECT))
        assert isinstance(landed, str), getattr(landed, "text", landed)
        return landed, state, verifier

    def token(self, session, callback, verifier):
        return session.fetch_token(
            self.meta["token_endpoint"], authorization_response=callback, code_verifier=verifier
        )

    def verify(self, id_token):
        keys = KeySet.import_key_set(requests.get(self.meta["jwks_uri"], timeout=10).json())
        return jwt.decode(id_token, keys, algorithms=["ES256"])


def test_discovery_names_the_endpoints(rp):
    """Discovery gives the issuer, endpoints under it, code flow, S256 PKCE and ES256."""
    meta, base = rp.meta, rp.live.base_url
    assert meta["issuer"] == base
    assert meta["authorization_endpoint"] == f"{base}/oidc/authorize"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["id_token_signing_alg_values_supported"] == ["ES256"]
    jwks = requests.get(meta["jwks_uri"], timeout=10).json()
    assert jwks["keys"] and all("d" not in k for k in jwks["keys"])  # never a private part


def test_code_flow_with_pkce_signs_in_and_tells_who(rp, store):
    """Code + PKCE through the SAML login: an ID token signed by a JWKS key with the person's
    claims and our nonce; userinfo adds the grants."""
    session = rp.session()
    callback, state, verifier = rp.authorize(session, nonce="n-123")
    assert parse_qs(urlsplit(callback).query)["state"] == [state]
    with store.read() as db:
        user = db.scalar(select(User).where(User.account_id == rp.account.id))
        env = db.scalar(
            select(Environment).where(
                Environment.account_id == rp.account.id, Environment.name == "production"
            )
        )
    store.write(
        lambda db: db.add(
            Grant(
                account_id=rp.account.id,
                user_id=user.id,
                environment_id=env.id,
                kind="folder",
                path="films/",
                level="editor",
                provenance="manual",
            )
        )
    )
    token = rp.token(session, callback, verifier)
    claims = rp.verify(token["id_token"]).claims
    assert claims["iss"] == rp.live.base_url and claims["aud"] in (rp.client_id, [rp.client_id])
    assert claims["nonce"] == "n-123" and claims["sub"] == str(user.id)
    assert claims["email"] == "ann@example.com" and claims["account"] == rp.account.slug
    assert claims["role"] == "media_library_user" and claims["environments"] == ["production"]
    assert claims["groups"] == [] and claims["exp"] > time.time()
    info = session.get(rp.meta["userinfo_endpoint"], timeout=10).json()
    assert info["sub"] == str(user.id)
    assert info["grants"] == [
        {
            "environment": "production",
            "kind": "folder",
            "path": "films/",
            "level": "editor",
            "provenance": "manual",
        }
    ]


def test_second_authorize_uses_the_bridge_session(rp):
    """Signed in once, a second /authorize answers with a code at once (no second login)."""
    session = rp.session()
    rp.authorize(session, nonce="a")
    url, _ = session.create_authorization_url(
        rp.meta["authorization_endpoint"], code_verifier=generate_token(48), nonce="b"
    )
    response = rp.browser.http.get(url, allow_redirects=False, timeout=10)
    assert response.status_code == 302 and response.headers["Location"].startswith(REDIRECT)


def test_wrong_redirect_uri_is_refused_without_redirecting(rp, store):
    """A redirect URI that is not registered exactly: a 400 page, no redirect, no code."""
    session = OAuth2Session(
        rp.client_id, rp.secret, scope="openid", redirect_uri=REDIRECT + "/other"
    )
    url, _ = session.create_authorization_url(rp.meta["authorization_endpoint"], nonce="x")
    response = rp.browser.http.get(url, allow_redirects=False, timeout=10)
    assert response.status_code == 400 and "Location" not in response.headers
    assert "not supported" in response.text
    assert _codes(store, rp) == 0


def test_replayed_code_is_refused_and_revokes_its_token(rp, store):
    """The second redemption of a code fails, and the token the first one gave stops working."""
    session = rp.session()
    callback, _, verifier = rp.authorize(session, nonce="r")
    token = rp.token(session, callback, verifier)
    assert session.get(rp.meta["userinfo_endpoint"], timeout=10).status_code == 200
    again = requests.post(
        rp.meta["token_endpoint"],
        timeout=10,
        auth=(rp.client_id, rp.secret),
        data={
            "grant_type": "authorization_code",
            "redirect_uri": REDIRECT,
            "code": parse_qs(urlsplit(callback).query)["code"][0],
            "code_verifier": verifier,
        },
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    denied = requests.get(
        rp.meta["userinfo_endpoint"],
        timeout=10,
        headers={"Authorization": f"Bearer {token['access_token']}"},
    )
    assert denied.status_code == 401
    with store.read() as db:
        assert (
            db.scalar(
                select(func.count())
                .select_from(OidcToken)
                .where(OidcToken.revoked.is_(None), OidcToken.client_pk == _pk(db, rp))
            )
            == 0
        )


def test_expired_code_is_refused(rp, store):
    """A code older than 60 seconds is refused and issues nothing."""
    session = rp.session()
    callback, _, verifier = rp.authorize(session, nonce="e")
    store.write(lambda db: db.execute(update(OidcCode).values(expires=utcnow() - timedelta(1))))
    with pytest.raises(Exception, match="invalid_grant"):
        rp.token(session, callback, verifier)
    assert _tokens(store, rp) == 0


def test_wrong_verifier_and_other_clients_code_are_refused(rp, store):
    """PKCE: a wrong code_verifier fails; a code is bound to the client it was issued to."""
    session = rp.session()
    callback, _, _verifier = rp.authorize(session, nonce="v")
    with pytest.raises(Exception, match="invalid_grant"):
        rp.token(session, callback, generate_token(48))
    other = clients.add(store, rp.account.slug, name="Other", redirect_uris=[REDIRECT], actor="t")
    session = rp.session()
    callback, _, verifier = rp.authorize(session, nonce="w")
    stranger = OAuth2Session(other.client_id, other.secret, redirect_uri=REDIRECT)
    with pytest.raises(Exception, match="invalid_grant"):
        stranger.fetch_token(
            rp.meta["token_endpoint"], authorization_response=callback, code_verifier=verifier
        )
    assert _tokens(store, rp) == 0


def test_public_client_must_use_s256(rp, store):
    """A public client without a code_challenge, or with `plain`, gets invalid_request back."""
    public = clients.add(
        store, rp.account.slug, name="App", redirect_uris=[REDIRECT], public=True, actor="t"
    )
    session = OAuth2Session(public.client_id, scope="openid", redirect_uri=REDIRECT)
    url, _ = session.create_authorization_url(rp.meta["authorization_endpoint"], nonce="p")
    response = rp.browser.http.get(url, allow_redirects=False, timeout=10)
    assert response.status_code == 302
    assert parse_qs(urlsplit(response.headers["Location"]).query)["error"] == ["invalid_request"]
    url, _ = session.create_authorization_url(
        rp.meta["authorization_endpoint"],
        nonce="q",
        code_challenge="x" * 43,
        code_challenge_method="plain",
    )
    response = rp.browser.http.get(url, allow_redirects=False, timeout=10)
    assert parse_qs(urlsplit(response.headers["Location"]).query)["error"] == ["invalid_request"]
    session = OAuth2Session(
        public.client_id,
        scope="openid",
        redirect_uri=REDIRECT,
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    )
    verifier = generate_token(48)
    url, _ = session.create_authorization_url(
        rp.meta["authorization_endpoint"], nonce="s", code_verifier=verifier
    )
    callback = rp.browser.follow(url, stop=lambda u: u.startswith(REDIRECT))
    token = session.fetch_token(
        rp.meta["token_endpoint"], authorization_response=callback, code_verifier=verifier
    )
    assert rp.verify(token["id_token"]).claims["aud"] in (public.client_id, [public.client_id])


def test_unknown_client_gets_a_page(rp):
    """An unknown client_id is a 400 page, never a redirect."""
    response = requests.get(
        f"{rp.live.base_url}/oidc/authorize",
        timeout=10,
        allow_redirects=False,
        params={
            "client_id": "nope",
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "scope": "openid",
        },
    )
    assert response.status_code == 400 and "not registered" in response.text


def test_key_rotation_keeps_the_old_key_published(rp, store, settings):
    """After a rotation the new key signs and the previous one is still in the JWKS."""
    session = rp.session()
    callback, _, verifier = rp.authorize(session, nonce="k1")
    old_kid = jwt.decode(
        rp.token(session, callback, verifier)["id_token"],
        KeySet.import_key_set(requests.get(rp.meta["jwks_uri"], timeout=10).json()),
    ).header["kid"]
    new_kid = signing_keys.rotate(store, rp.live.app.config["SECRET_KEY"])
    kids = {k["kid"] for k in requests.get(rp.meta["jwks_uri"], timeout=10).json()["keys"]}
    assert {old_kid, new_kid} <= kids
    session = rp.session()
    callback, _, verifier = rp.authorize(session, nonce="k2")
    assert rp.verify(rp.token(session, callback, verifier)["id_token"]).header["kid"] == new_kid


def test_cli_clients_lifecycle(cli, account, store):
    """clients add prints `CLIENT_ID CLIENT_SECRET` last (only the hash kept); list, rotate,
    remove; a bad redirect URI is refused with nothing written."""
    out = cli("clients", "add", account.slug, "--name", "Product", "--redirect-uri", REDIRECT)
    assert out.exit_code == 0, out.output
    client_id, secret = out.output.strip().splitlines()[-1].split()
    with store.read() as db:
        info = clients.find(db, client_id)
    assert info.check_secret(secret) and info.secret_hash != secret
    assert client_id in cli("clients", "list", account.slug).output
    rotated = cli("clients", "rotate-secret", account.slug, client_id).output.strip().split()[-1]
    with store.read() as db:
        info = clients.find(db, client_id)
    assert info.check_secret(rotated) and not info.check_secret(secret)
    bad = cli(
        "clients", "add", account.slug, "--name", "X", "--redirect-uri", "http://evil.test/cb"
    )
    assert bad.exit_code == 1 and "must be https" in bad.output
    assert cli("clients", "remove", account.slug, client_id).exit_code == 0
    with store.read() as db:
        assert clients.list_for(db, account.slug) == []


def _pk(db, rp):
    return clients.find(db, rp.client_id).pk


def _codes(store, rp):
    with store.read() as db:
        return db.scalar(
            select(func.count()).select_from(OidcCode).where(OidcCode.client_pk == _pk(db, rp))
        )


def _tokens(store, rp):
    with store.read() as db:
        return db.scalar(
            select(func.count()).select_from(OidcToken).where(OidcToken.client_pk == _pk(db, rp))
        )


def test_purge_removes_long_expired_codes_and_tokens(rp, store):
    """Codes and tokens expired for over a day are swept (the workers do it); live ones stay."""
    session = rp.session()
    callback, _, verifier = rp.authorize(session, nonce="pg")
    rp.token(session, callback, verifier)
    authcodes.purge(store)
    assert _codes(store, rp) == 1 and _tokens(store, rp) == 1
    old = utcnow() - timedelta(days=2)
    store.write(lambda db: db.execute(update(OidcCode).values(expires=old)))
    store.write(lambda db: db.execute(update(OidcToken).values(expires=old)))
    assert authcodes.purge(store) >= 2
    assert _codes(store, rp) == 0 and _tokens(store, rp) == 0
