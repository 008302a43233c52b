"""/oidc/authorize picks the IdP by the login_hint's e-mail domain among the client's account's
IdPs (declared with `idbridge idps domains` or the API), driven by a stock relying party
(Authlib's requests client) over real HTTP; other hints get the chooser, never another account's
IdP."""

import secrets
import threading
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import func, select

from bridge import accounts, clients, idp_domains, idps
from bridge.errors import Conflict
from bridge.models import AuditEvent, IdpDomain
from tests.browser_flow import Browser
from tests.integration.api_client import problem_type
from tests.saml_idp import TestIdP

REDIRECT = "https://product.example.test/callback"


def _idp(host: str) -> TestIdP:
    return TestIdP(entity_id=f"https://{host}/metadata", sso_url=f"https://{host}/sso")


@pytest.fixture
def two(live, store, account):
    """An account with IdPs `corp` and `partners` (no domains yet) and a confidential client."""
    corp, partners = _idp("corp-idp.test"), _idp("partners-idp.test")
    idps.add(store, account.slug, corp.metadata_xml(), name="corp", actor="t")
    idps.add(store, account.slug, partners.metadata_xml(), name="partners", actor="t")
    made = clients.add(store, account.slug, name="Product", redirect_uris=[REDIRECT], actor="t")
    meta = requests.get(f"{live.base_url}/.well-known/openid-configuration", timeout=10).json()
    return Setup(live, account, made, meta, corp, partners)


class Setup:
    def __init__(self, live, account, made, meta, corp, partners):
        self.live, self.account, self.made, self.meta = live, account, made, meta
        self.corp, self.partners = corp, partners

    def session(self):
        return OAuth2Session(
            self.made.client_id,
            self.made.secret,
            scope="openid email",
            redirect_uri=REDIRECT,
            code_challenge_method="S256",
        )

    def first_hop(self, **params):
        """The answer of /authorize (not followed) for a fresh browser."""
        url, _ = self.session().create_authorization_url(
            self.meta["authorization_endpoint"], code_verifier=generate_token(48), **params
        )
        return requests.get(url, allow_redirects=False, timeout=10)


def _domains(store, account, name):
    with store.read() as db:
        return idp_domains.of_idp(db, idps.get(db, account.id, name).id)


def _audit_count(store, account):
    with store.read() as db:
        return db.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.account_id == account.id)
        )


def _is_chooser(response, *names):
    assert response.status_code == 200 and "Location" not in response.headers
    assert "Choose how to sign in" in response.text
    for name in names:
        assert f">{name}</a>" in response.text
    return True


def test_login_hint_domain_signs_in_through_its_idp(two, cli):
    """With two IdPs, a hint on corp's declared domain (any case) goes straight to corp: the
    whole flow ends in an ID token for the person corp signed in."""
    out = cli("idps", "domains", two.account.slug, "corp", "Corp.Example", "corp-eu.example")
    assert out.exit_code == 0, out.output
    assert "corp-eu.example, corp.example" in out.output
    session = two.session()
    verifier = generate_token(48)
    url, state = session.create_authorization_url(
        two.meta["authorization_endpoint"],
        code_verifier=verifier,
        nonce="n-route",
        login_hint="ann@CORP.example",
    )
    browser = Browser(two.corp, two.live.base_url, two.account.slug)
    callback = browser.follow(url, stop=lambda u: u.startswith(REDIRECT))
    assert isinstance(callback, str), getattr(callback, "text", callback)
    assert parse_qs(urlsplit(callback).query)["state"] == [state]
    token = session.fetch_token(
        two.meta["token_endpoint"], authorization_response=callback, code_verifier=verifier
    )
    keys = KeySet.import_key_set(requests.get(two.meta["jwks_uri"], timeout=10).json())
    claims = jwt.decode(token["id_token"], keys, algorithms=["ES256"]).claims
    assert claims["email"] == "ann@example.com" and claims["nonce"] == "n-route"
    first = two.first_hop(login_hint="bob@corp-eu.example")
    assert first.status_code == 302
    assert parse_qs(urlsplit(first.headers["Location"]).query)["idp"] == ["corp"]


def test_no_hint_unknown_or_malformed_hint_shows_the_chooser(two, store):
    """No hint, a domain nobody declared, or a hint that is no e-mail address: the chooser with
    both IdPs, never a redirect (and never a 500)."""
    idps.change_settings(store, two.account.id, "corp", {"domains": ["corp.example"]}, actor="t")
    hints = [
        None,
        "ann@elsewhere.example",
        "ann",
        "ann@",
        "@@",
        "ann@corp.example.",
        "ann@sub.corp.example",
        "ann@corp_example",
        "ann@127.0.0.1",
        "ann@" + "x" * 400 + ".example",
        "ann@corp.example\x00",
        "ann@\udcff.example".encode("utf-8", "surrogateescape").decode("latin-1"),
    ]
    for hint in hints:
        params = {} if hint is None else {"login_hint": hint}
        assert _is_chooser(two.first_hop(**params), "corp", "partners"), hint


def test_a_domain_never_routes_to_another_accounts_idp(two, store, api_for):
    """Another account's IdP declaring a domain changes nothing for this account's clients; this
    account may declare the same domain for its own IdP, and then the hint goes there."""
    slug = f"other-{secrets.token_hex(4)}"
    other = accounts.create_account(store, slug, name="Other", actor="t")
    idps.add(store, slug, _idp("other-idp.test").metadata_xml(), name="theirs", actor="t")
    r = api_for(other, "admin").patch("idps/theirs", json={"domains": ["shared.example"]})
    assert r.status_code == 200 and r.json["domains"] == ["shared.example"]
    answer = two.first_hop(login_hint="ann@shared.example")
    assert _is_chooser(answer, "corp", "partners") and "theirs" not in answer.text
    assert f"/saml/{slug}/" not in answer.text
    idps.change_settings(
        store, two.account.id, "partners", {"domains": ["shared.example"]}, actor="t"
    )
    moved = two.first_hop(login_hint="ann@shared.example")
    assert moved.status_code == 302
    location = urlsplit(moved.headers["Location"])
    assert location.path == f"/saml/{two.account.slug}/login"
    assert parse_qs(location.query)["idp"] == ["partners"]
    assert _domains(store, other, "theirs") == ["shared.example"]


def test_a_disabled_idp_is_not_routed_to(two, store):
    """A hint on a disabled IdP's domain does not send people to it (it would refuse them)."""
    third = _idp("third-idp.test")
    idps.add(store, two.account.slug, third.metadata_xml(), name="third", actor="t")
    idps.change_settings(store, two.account.id, "corp", {"domains": ["corp.example"]}, actor="t")
    idps.set_disabled(store, two.account.slug, "corp", True, actor="t")
    answer = two.first_hop(login_hint="ann@corp.example")
    assert _is_chooser(answer, "partners", "third") and ">corp</a>" not in answer.text


def test_cli_refuses_bad_and_taken_domains_and_writes_nothing(two, cli, store):
    """A domain another IdP of the account has, a malformed domain, an unknown IdP, or domains
    with --clear: exit 1 with the reason, the lists and the audit log unchanged."""
    slug = two.account.slug
    assert cli("idps", "domains", slug, "corp", "corp.example").exit_code == 0
    before = _audit_count(store, two.account)
    taken = cli("idps", "domains", slug, "partners", "partners.example", "CORP.example")
    assert taken.exit_code == 1 and "domain corp.example is already IdP 'corp''s" in taken.output
    for bad, reason in [
        ("*.corp.example", "must be a domain name"),
        ("corp", "must be a domain name"),
        ("exa_mple.com", "must be a domain name"),
        ("10.0.0.1", "is an address"),
        ("a" * 64 + ".example", "not a valid domain name"),
    ]:
        out = cli("idps", "domains", slug, "partners", "ok.example", bad)
        assert out.exit_code == 1 and reason in out.output, (bad, out.output)
    unknown = cli("idps", "domains", slug, "nope", "x.example")
    assert unknown.exit_code == 1 and "no IdP 'nope'" in unknown.output
    both = cli("idps", "domains", slug, "corp", "x.example", "--clear")
    assert both.exit_code == 2 and "not both" in both.output
    assert _domains(store, two.account, "partners") == []
    assert _domains(store, two.account, "corp") == ["corp.example"]
    assert _audit_count(store, two.account) == before
    listed = cli("idps", "list", slug)
    assert "  domains: corp.example" in listed.output
    cleared = cli("idps", "domains", slug, "corp", "--clear")
    assert cleared.exit_code == 0 and "no domains" in cleared.output
    assert _domains(store, two.account, "corp") == []


def test_api_sets_domains_atomically_and_audits(two, api_for, store):
    """PATCH /idps/{name} sets the whole list (IDNA form); a taken domain is a 409 that leaves
    the other settings in the same request unapplied; a bad one is a 400; each change is an
    idp.update audit event with the lists before and after."""
    admin = api_for(two.account, "admin")
    r = admin.patch("idps/corp", json={"domains": ["Corp.Example", "bücher.example"]})
    assert r.status_code == 200, r.json
    assert r.json["domains"] == ["corp.example", "xn--bcher-kva.example"]
    assert [i["domains"] for i in admin.get("idps").json["idps"]] == [
        ["corp.example", "xn--bcher-kva.example"],
        [],
    ]
    before = _audit_count(store, two.account)
    r = admin.patch("idps/partners", json={"allow_jit": False, "domains": ["bücher.example"]})
    assert r.status_code == 409 and problem_type(r) == "conflict"
    assert "already IdP 'corp'" in r.json["detail"]
    r = admin.patch("idps/partners", json={"allow_jit": False, "domains": ["not a domain"]})
    assert r.status_code == 400 and problem_type(r) == "invalid-input"
    assert admin.get("idps").json["idps"][1]["allow_jit"] is True
    assert _audit_count(store, two.account) == before
    assert _domains(store, two.account, "partners") == []
    r = admin.patch("idps/corp", json={"domains": ["corp.example"]})
    assert r.status_code == 200 and r.json["domains"] == ["corp.example"]
    with store.read() as db:
        event = db.scalars(
            select(AuditEvent)
            .where(AuditEvent.account_id == two.account.id)
            .order_by(AuditEvent.seq.desc())
        ).first()
    assert event.action == "idp.update" and event.target_id == "corp"
    assert event.before["domains"] == ["corp.example", "xn--bcher-kva.example"]
    assert event.after["domains"] == ["corp.example"]
    reader = api_for(two.account, "read")
    assert reader.patch("idps/corp", json={"domains": []}).status_code == 403


def test_concurrent_claims_of_one_domain_leave_one_owner(two, store):
    """Two writers giving one domain to two IdPs at once: one wins, the other gets Conflict, one
    row exists (the unique constraint and the retried transaction settle it)."""
    results: list[object] = []
    barrier = threading.Barrier(2)

    def claim(name):
        barrier.wait()
        try:
            idps.change_settings(
                store, two.account.id, name, {"domains": ["race.example"]}, actor="t"
            )
            results.append(name)
        except Conflict as exc:
            results.append(exc)

    threads = [threading.Thread(target=claim, args=(n,)) for n in ("corp", "partners")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if isinstance(r, str)]
    assert len(winners) == 1 and sum(isinstance(r, Conflict) for r in results) == 1
    with store.read() as db:
        rows = db.scalars(
            select(IdpDomain).where(
                IdpDomain.account_id == two.account.id, IdpDomain.domain == "race.example"
            )
        ).all()
    assert len(rows) == 1
    assert _domains(store, two.account, winners[0]) == ["race.example"]
