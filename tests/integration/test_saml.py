"""SAML SSO through HTTP, against an independent test IdP (tests/saml_idp): valid logins in both
flows, JIT through the policy, sessions, single logout, key rollover, and every refusal."""

import base64
import datetime as dt
import secrets
import threading

import pytest
from sqlalchemy import func, select

from bridge import accounts, idps, logins
from bridge.models import User
from tests.saml_idp import (
    TestIdP,
    base64_not_xml,
    not_base64,
    parse_authn_request,
    parse_logout_response,
    parse_sp_metadata,
    truncated,
)

BASE = "http://127.0.0.1:8000"


class Login:
    """An account with a registered test IdP, and helpers to post what the IdP would."""

    def __init__(self, client, store, account, idp, name="test"):
        self.client, self.store, self.account, self.idp, self.name = (
            client,
            store,
            account,
            idp,
            name,
        )
        slug = account.slug
        self.acs = f"{BASE}/saml/{slug}/acs"
        self.entity_id = f"{BASE}/saml/{slug}/metadata"

    def start(self, next_url="/welcome"):
        """SP-initiated: the AuthnRequest our /login sends (parsed) and its ID."""
        resp = self.client.get(f"/saml/{self.account.slug}/login", query_string={"next": next_url})
        assert resp.status_code == 302, resp.get_data(as_text=True)
        return parse_authn_request(resp.headers["Location"])

    def response(self, **kw):
        kw.setdefault("destination", self.acs)
        kw.setdefault("audience", self.entity_id)
        return self.idp.response(**kw)

    def post(self, xml, relay_state=None, path=None):
        form = self.idp.post_form(xml, relay_state) if isinstance(xml, bytes) else xml
        return self.client.post(path or f"/saml/{self.account.slug}/acs", data=form)

    def users(self):
        with self.store.read() as db:
            return db.scalar(
                select(func.count()).select_from(User).where(User.account_id == self.account.id)
            )

    def last_reason(self):
        return self.last_attempt()["reason"]

    def last_attempt(self):
        with self.store.read() as db:
            rows = logins.recent(db, self.account.id, limit=1)
        return rows[0] if rows else {"reason": None, "detail": None, "ok": None}

    def new_browser(self):
        """Go on in a browser without this one's cookies (so a refusal cannot reuse a session)."""
        self.client = self.client.application.test_client()

    def signed_in_as(self):
        """The userName of this browser's session, or None when it has none."""
        resp = self.client.get("/session")
        if resp.status_code == 401:
            return None
        assert resp.status_code == 200, resp.status_code
        return resp.json["user"]["userName"]

    def refused(self, resp, reason, detail=""):
        """A refusal: a 4xx person-facing page, the typed reason logged, no session, no user."""
        assert 400 <= resp.status_code < 500, resp.get_data(as_text=True)[:300]
        body = resp.get_data(as_text=True)
        assert "saml:" not in body and "Traceback" not in body  # a plain page, never raw XML
        attempt = self.last_attempt()
        assert (attempt["ok"], attempt["reason"]) == (False, reason), attempt
        assert detail in attempt["detail"], attempt
        assert self.signed_in_as() is None
        assert self.users() == 0


@pytest.fixture
def saml(client, store, account):
    idp = TestIdP()
    idps.add(store, account.slug, idp.metadata_xml(), name="test", actor="t")
    return Login(client, store, account, idp)


def test_sp_metadata(saml):
    """The SP metadata names our entity ID, ACS, SLS and a signing/encryption certificate."""
    resp = saml.client.get(f"/saml/{saml.account.slug}/metadata")
    assert resp.status_code == 200 and "xml" in resp.mimetype
    meta = parse_sp_metadata(resp.get_data(as_text=True))
    assert meta.entity_id == saml.entity_id
    assert saml.acs in meta.acs_urls.values() and meta.signing_certs and meta.encryption_certs


def test_sp_initiated_login_and_session(saml):
    """A signed AuthnRequest goes out; the answer signs the user in and lands on `next`."""
    request = saml.start("/welcome")
    meta = parse_sp_metadata(
        saml.client.get(f"/saml/{saml.account.slug}/metadata").get_data(as_text=True)
    )
    assert request.acs_url == f"{saml.acs}/test"  # the IdP's own ACS
    assert request.signature_valid_with(meta.signing_certs[0])
    resp = saml.post(
        saml.response(
            in_response_to=request.id,
            name_id="ann@example.com",
            attributes={"email": ["ann@example.com"], "givenName": ["Ann"]},
        )
    )
    assert resp.status_code == 302 and resp.headers["Location"] == "/welcome"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    session = saml.client.get("/session").json
    assert (
        session["user"]["userName"] == "ann@example.com" and session["role"] == "media_library_user"
    )
    assert session["environments"] == ["production"] and session["account"] == saml.account.slug
    assert saml.last_reason() == "ok"


def test_idp_initiated_only_when_allowed(saml, store):
    """An unsolicited response is refused unless the IdP is opted in; then it signs in."""
    resp = saml.post(saml.response(name_id="bob@example.com"))
    assert (
        resp.status_code == 400
        and "sign in from the application" in resp.get_data(as_text=True).lower()
    )
    assert saml.users() == 0 and saml.last_reason() == "idp_initiated_not_allowed"

    def allow(db):
        idp = idps.get(db, saml.account.id, "test")
        idp.allow_idp_initiated = True

    store.write(allow)
    resp = saml.post(saml.response(name_id="bob@example.com"))
    assert resp.status_code == 302 and saml.users() == 1


def test_session_is_401_without_login(client):
    """/session without a session is 401 JSON."""
    assert client.get("/session").status_code == 401


def _fresh(saml):
    return saml.start().id


@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        ("unsigned", "unsigned"),
        ("signed_by_other_key", "bad_signature"),
        ("tampered", "bad_signature"),
        ("expired", "expired"),
        ("not_yet_valid", "not_yet_valid"),
        ("wrong_audience", "wrong_audience"),
        ("no_audience", "wrong_audience"),
        ("prefixed_destination", "wrong_destination"),
        ("no_destination", "wrong_destination"),
        ("wrong_recipient", "wrong_recipient"),
        ("prefixed_recipient", "wrong_recipient"),
        ("unknown_in_response_to", "unknown_in_response_to"),
        ("no_expiry", "expired"),
        ("sha1", "deprecated_algorithm"),
    ],
)
def test_refused_responses(saml, attack, reason):
    """Each forged, stale or misdirected response is a 4xx, writes no user, and is logged."""
    rid = _fresh(saml)
    ok = {"in_response_to": rid, "name_id": "victim@example.com"}
    build = {
        "unsigned": lambda: saml.idp.unsigned(destination=saml.acs, audience=saml.entity_id, **ok),
        "signed_by_other_key": lambda: saml.idp.signed_by_other_key(
            destination=saml.acs, audience=saml.entity_id, **ok
        ),
        "tampered": lambda: saml.idp.tampered_after_signing(
            destination=saml.acs, audience=saml.entity_id, in_response_to=rid
        ),
        "expired": lambda: saml.response(now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2), **ok),
        "not_yet_valid": lambda: saml.response(
            now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=2), **ok
        ),
        "wrong_audience": lambda: saml.response(**{**ok, "audience": "https://other.example/sp"}),
        "no_audience": lambda: saml.response(**{**ok, "audience": None}),
        "prefixed_destination": lambda: saml.response(
            **{**ok, "destination": saml.acs + "-evil", "recipient": saml.acs}
        ),
        "no_destination": lambda: saml.response(
            **{**ok, "destination": None, "recipient": saml.acs}
        ),
        "wrong_recipient": lambda: saml.response(**{**ok, "recipient": "https://evil.example/acs"}),
        "prefixed_recipient": lambda: saml.response(
            **{**ok, "recipient": "https://evil.test/?" + saml.acs}
        ),
        "unknown_in_response_to": lambda: saml.response(**{**ok, "in_response_to": "_not_ours"}),
        "no_expiry": lambda: saml.response(
            **ok, not_on_or_after=None, subject_not_on_or_after=None
        ),
        "sha1": lambda: saml.response(
            **ok, signature_algorithm="rsa-sha1", digest_algorithm="sha1"
        ),
    }[attack]
    saml.refused(saml.post(build()), reason)


@pytest.mark.parametrize(
    "variant", ["evil_first", "evil_last", "extensions", "advice", "object", "response_wrapped"]
)
def test_signature_wrapping_refused(saml, variant):
    """Every signature-wrapping variant is refused, and the evil identity never signs in."""
    resp = saml.post(
        saml.idp.signature_wrapping(
            variant, destination=saml.acs, audience=saml.entity_id, in_response_to=_fresh(saml)
        )
    )
    saml.refused(resp, "malformed", "exactly one assertion")


def test_comment_injected_name_id_is_read_whole(saml, store):
    """admin@example.com<!---->.evil.test signs in as that whole name, never as admin."""
    accounts_ = saml.users()
    resp = saml.post(
        saml.idp.comment_injected_name_id(
            destination=saml.acs, audience=saml.entity_id, in_response_to=_fresh(saml)
        )
    )
    assert resp.status_code == 302
    assert saml.client.get("/session").json["user"]["userName"] == "admin@example.com.evil.test"
    assert saml.users() == accounts_ + 1


@pytest.mark.parametrize(
    ("payload", "reason", "detail"),
    [
        ("xxe", "malformed", "DTDs are not allowed"),
        ("entities", "malformed", "not well-formed XML"),  # lxml refuses the expansion
        ("quadratic", "malformed", "not well-formed XML"),
        ("xslt", "forbidden_transform", ""),
        ("oversized", "too_large", "larger than"),
        ("not_base64", "malformed", "not base64"),
        ("not_xml", "malformed", "not well-formed XML"),
        ("truncated", "malformed", "not well-formed XML"),
        ("empty", "malformed", "carries no SAMLResponse"),
    ],
)
def test_hostile_payloads_are_4xx(saml, tmp_path, payload, reason, detail):
    """XXE, entity expansion, XSLT transforms, huge and garbage payloads: 4xx, never a 500."""
    canary = tmp_path / "canary.txt"
    canary.write_text("CANARY-SECRET")
    ok = {"destination": saml.acs, "audience": saml.entity_id, "in_response_to": _fresh(saml)}
    form = {
        "xxe": lambda: saml.idp.post_form(saml.idp.with_xxe(system_id=canary.as_uri(), **ok)),
        "entities": lambda: saml.idp.post_form(saml.idp.with_entity_expansion(**ok)),
        "quadratic": lambda: saml.idp.post_form(saml.idp.with_quadratic_blowup(**ok)),
        "xslt": lambda: saml.idp.post_form(saml.idp.with_xslt_transform(nested_loops=4, **ok)),
        "oversized": lambda: saml.idp.post_form(saml.idp.oversized(600_000, **ok)),
        "not_base64": lambda: {"SAMLResponse": not_base64()},
        "not_xml": lambda: {"SAMLResponse": base64_not_xml()},
        "truncated": lambda: {
            "SAMLResponse": base64.b64encode(
                truncated(saml.response(**{k: v for k, v in ok.items()}))
            ).decode()
        },
        "empty": lambda: {},
    }[payload]()
    resp = saml.post(form)
    assert "CANARY" not in resp.get_data(as_text=True)
    saml.refused(resp, reason, detail)


def test_replayed_assertion_refused(saml, store):
    """The same assertion twice: the second is refused as a replay."""

    def allow(db):
        idps.get(db, saml.account.id, "test").allow_idp_initiated = True

    store.write(allow)
    xml = saml.response(name_id="once@example.com")
    assert saml.post(xml).status_code == 302
    assert saml.signed_in_as() == "once@example.com"
    saml.new_browser()
    resp = saml.post(xml)
    assert resp.status_code == 400 and saml.last_reason() == "replayed"
    assert saml.signed_in_as() is None and saml.users() == 1


def _sessions_and_seen(db, account_id):
    """The account's login sessions, and the assertions its IdP `test` has in the replay cache."""
    from bridge.models import LoginSession, SeenAssertion

    sessions = db.scalar(
        select(func.count()).select_from(LoginSession).where(LoginSession.account_id == account_id)
    )
    idp_id = idps.get(db, account_id, "test").id
    seen = db.scalar(
        select(func.count()).select_from(SeenAssertion).where(SeenAssertion.idp_id == idp_id)
    )
    return sessions, seen


def test_one_assertion_posted_at_once_from_many_browsers_signs_in_once(saml, store):
    """Six browsers post the same assertion at the same moment (a stolen response raced with
    the real one): exactly one is signed in; every other is refused as a replay, with one
    user, one session and one accepted assertion in the store."""
    from bridge.models import LoginAttempt

    def allow(db):
        idps.get(db, saml.account.id, "test").allow_idp_initiated = True

    store.write(allow)
    form = saml.idp.post_form(saml.response(name_id="race@example.com"))
    app = saml.client.application
    start = threading.Barrier(6)
    statuses: list[int] = []

    def browser():
        client = app.test_client()
        start.wait()
        statuses.append(client.post(f"/saml/{saml.account.slug}/acs", data=form).status_code)

    threads = [threading.Thread(target=browser) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [302, 400, 400, 400, 400, 400]
    with store.read() as db:
        reasons = db.scalars(
            select(LoginAttempt.reason).where(LoginAttempt.account_id == saml.account.id)
        ).all()
        sessions, seen = _sessions_and_seen(db, saml.account.id)
    assert sorted(reasons) == ["ok"] + ["replayed"] * 5, reasons
    assert saml.users() == 1 and sessions == 1 and seen == 1


def test_in_response_to_is_single_use_and_must_be_signed(saml):
    """A request ID answers once; an unsigned InResponseTo over an unsolicited assertion fails."""
    rid = _fresh(saml)
    assert saml.post(saml.response(in_response_to=rid, name_id="a@example.com")).status_code == 302
    again = saml.post(saml.response(in_response_to=rid, name_id="a@example.com"))
    assert again.status_code == 400 and saml.last_reason() == "unknown_in_response_to"
    pending = _fresh(saml)
    unsolicited = saml.response(name_id="b@example.com")
    stripped = saml.idp.rewrapped(unsolicited, in_response_to=pending)
    resp = saml.post(stripped)
    assert resp.status_code == 400 and saml.last_reason() == "idp_initiated_not_allowed"


def test_off_site_relay_state_refused(saml):
    """A RelayState pointing at another site is refused before anything is written."""
    resp = saml.post(
        saml.response(in_response_to=_fresh(saml)), relay_state="https://evil.example/steal"
    )
    assert resp.status_code == 400
    saml.refused(resp, "bad_relay_state", "https://evil.example/steal")
    login = saml.client.get(
        f"/saml/{saml.account.slug}/login", query_string={"next": "//evil.example/"}
    )
    assert login.status_code == 400


def test_refusals_keep_their_order_though_the_response_is_decoded_first(saml):
    """/acs decodes the Response before it reads the account (to read our pending request the
    Response names with it, in one statement), yet refuses in the order it did: the account,
    then the RelayState, then the Response; the Response's refusal is logged where the
    account's login log says; another account's pending request is not this one's."""
    off_site = "https://evil.example/steal"
    form = {"SAMLResponse": "not base64!", "RelayState": off_site}
    resp = saml.post(form)
    saml.refused(resp, "bad_relay_state", off_site)
    resp = saml.post({"SAMLResponse": "not base64!"})
    saml.refused(resp, "malformed", "not base64")
    unknown = saml.client.post(f"/saml/nope-{secrets.token_hex(3)}/acs", data=form)
    assert unknown.status_code == 404
    assert saml.last_reason() == "malformed"  # nothing logged in this account for that one
    # a pending request of another account answers nothing here (taken for this account's, it
    # would name that account's IdP, disabled since it was sent: refused as idp_disabled)
    other = accounts.create_account(saml.store, f"other-{secrets.token_hex(3)}", actor="t")
    theirs = Login(saml.client, saml.store, other, saml.idp)
    idps.add(saml.store, other.slug, saml.idp.metadata_xml(), name="test", actor="t")
    request_id = theirs.start().id

    def disable(db):
        idps.get(db, other.id, "test").disabled = True

    saml.store.write(disable)
    resp = saml.post(saml.response(in_response_to=request_id, name_id="a@example.com"))
    saml.refused(resp, "unknown_in_response_to")


def test_scim_only_idp_refuses_unknown_users(saml, store, scim):
    """With JIT off, only users SCIM provisioned may sign in; others are told to ask their admin."""

    def no_jit(db):
        idps.get(db, saml.account.id, "test").allow_jit = False

    store.write(no_jit)
    resp = saml.post(saml.response(in_response_to=_fresh(saml), name_id="stranger@example.com"))
    assert resp.status_code == 403 and "ask your it admin" in resp.get_data(as_text=True).lower()
    assert saml.last_reason() == "user_not_provisioned"
    scim.post("Users", json={"userName": "known@example.com"})
    resp = saml.post(saml.response(in_response_to=_fresh(saml), name_id="KNOWN@example.com"))
    assert resp.status_code == 302


def test_deactivation_ends_live_session(saml, scim):
    """A SCIM deactivation ends the user's session at once; they cannot sign in again."""
    user = scim.post("Users", json={"userName": "quit@example.com"}).json
    assert (
        saml.post(
            saml.response(in_response_to=_fresh(saml), name_id="quit@example.com")
        ).status_code
        == 302
    )
    assert saml.client.get("/session").status_code == 200
    scim.patch(
        f"Users/{user['id']}", json={"Operations": [{"op": "replace", "value": {"active": False}}]}
    )
    assert saml.client.get("/session").status_code == 401
    resp = saml.post(saml.response(in_response_to=_fresh(saml), name_id="quit@example.com"))
    assert resp.status_code == 403 and saml.last_reason() == "user_deactivated"


def test_jit_login_goes_through_policy(saml, settings):
    """A JIT login gets the policy's decision from its SAML attributes, and updates on the next."""
    (settings.policy_dir / f"{saml.account.slug}.yaml").write_text(
        f"account: {saml.account.slug}\nenvironments: [production, staging]\n"
        "defaults: {role: media_library_user, environments: [production]}\n"
        "rules:\n  - name: admins\n    when: {groups: {contains: cld-admins}}\n"
        "    then: {role: admin, environments: all}\n"
    )
    saml.post(
        saml.response(
            in_response_to=_fresh(saml),
            name_id="jit@example.com",
            attributes={"groups": ["cld-admins"]},
        )
    )
    assert saml.client.get("/session").json["role"] == "admin"
    saml.post(
        saml.response(
            in_response_to=_fresh(saml), name_id="jit@example.com", attributes={"groups": ["staff"]}
        )
    )
    assert saml.client.get("/session").json["role"] == "media_library_user"


def test_key_rollover(saml, store):
    """An IdP rolls its key: both certificates are trusted after a refresh, then only the new."""
    old = saml.idp.signing_key
    saml.idp.rollover()
    idps.refresh(store, saml.account.slug, "test", xml=saml.idp.metadata_xml(), actor="t")
    assert (
        saml.post(saml.response(in_response_to=_fresh(saml), name_id="r1@example.com")).status_code
        == 302
    )
    assert saml.signed_in_as() == "r1@example.com"
    assert (
        saml.post(
            saml.response(in_response_to=_fresh(saml), name_id="r2@example.com", key=old)
        ).status_code
        == 302
    )
    assert saml.signed_in_as() == "r2@example.com"
    saml.idp.retire(old)
    idps.refresh(store, saml.account.slug, "test", xml=saml.idp.metadata_xml(), actor="t")
    saml.new_browser()
    resp = saml.post(saml.response(in_response_to=_fresh(saml), name_id="r3@example.com", key=old))
    assert resp.status_code == 400 and saml.last_reason() == "bad_signature"
    assert saml.signed_in_as() is None and saml.users() == 2


def test_encrypted_assertion(saml):
    """An assertion encrypted to the SP's certificate is accepted."""
    meta = parse_sp_metadata(
        saml.client.get(f"/saml/{saml.account.slug}/metadata").get_data(as_text=True)
    )
    xml = saml.response(
        in_response_to=_fresh(saml),
        name_id="enc@example.com",
        encrypt_to_cert=meta.encryption_certs[0],
    )
    assert saml.post(xml).status_code == 302
    assert saml.signed_in_as() == "enc@example.com"


def _sp_metadata(saml):
    return parse_sp_metadata(
        saml.client.get(f"/saml/{saml.account.slug}/metadata").get_data(as_text=True)
    )


def test_encrypted_name_id(saml):
    """A NameID encrypted to the SP's certificate (an EncryptedID, as ADFS and Shibboleth can
    send) signs in the user it names, inside a plain or an encrypted assertion; the user is
    stored under the decrypted value."""
    cert = _sp_metadata(saml).encryption_certs[0]
    for name, whole in (("eid@example.com", None), ("eid2@example.com", cert)):
        xml = saml.response(
            in_response_to=_fresh(saml),
            name_id=name,
            encrypt_name_id_to_cert=cert,
            encrypt_to_cert=whole,
        )
        assert b"EncryptedID" in xml or whole is not None
        assert saml.post(xml).status_code == 302
        assert saml.signed_in_as() == name and saml.last_reason() == "ok"
        saml.new_browser()
    with saml.store.read() as db:
        names = db.scalars(select(User.user_name).where(User.account_id == saml.account.id))
        assert sorted(names) == ["eid2@example.com", "eid@example.com"]


@pytest.mark.parametrize(
    ("encrypted", "what"),
    [("encrypt_name_id_to_cert", "the NameID (EncryptedID)"), ("encrypt_to_cert", "the assertion")],
)
def test_encrypted_to_another_key_refused(saml, encrypted, what):
    """An EncryptedID or EncryptedAssertion the SP cannot decrypt (encrypted to someone else's
    certificate: the IdP was given the wrong one) is refused as `undecryptable`, saying what the
    admin must fix, not as a malformed or invalid message; nobody is signed in or stored."""
    stranger = TestIdP(entity_id="https://stranger.example.test/metadata")
    xml = saml.response(
        in_response_to=_fresh(saml),
        name_id="who@example.com",
        **{encrypted: stranger.signing_key.cert_pem},
    )
    saml.refused(
        saml.post(xml),
        "undecryptable",
        f"{what} is encrypted to a certificate this account does not hold: give the IdP the "
        "encryption certificate in this account's SP metadata",
    )


def test_idp_initiated_logout(saml):
    """A signed LogoutRequest from the IdP ends the session and gets a LogoutResponse."""
    saml.post(
        saml.response(in_response_to=_fresh(saml), name_id="slo@example.com", session_index="_s1")
    )
    assert saml.client.get("/session").status_code == 200
    message = saml.idp.logout_request(
        f"{BASE}/saml/{saml.account.slug}/sls", "slo@example.com", "_s1"
    )
    resp = saml.client.get(f"/saml/{saml.account.slug}/sls?{message.query_string}")
    assert resp.status_code == 302
    answer = parse_logout_response(resp.headers["Location"])
    assert answer.in_response_to == message.id and answer.status.endswith("Success")
    assert saml.client.get("/session").status_code == 401


def test_unsigned_logout_request_refused(saml):
    """An unsigned LogoutRequest ends nothing."""
    saml.post(
        saml.response(in_response_to=_fresh(saml), name_id="keep@example.com", session_index="_k")
    )
    message = saml.idp.logout_request(
        f"{BASE}/saml/{saml.account.slug}/sls", "keep@example.com", "_k", sign=False
    )
    resp = saml.client.get(f"/saml/{saml.account.slug}/sls?{message.query_string}")
    assert resp.status_code == 400
    assert saml.client.get("/session").status_code == 200


def test_sp_initiated_logout(saml):
    """/logout ends the session and sends a LogoutRequest to the IdP's SLO endpoint."""
    saml.post(saml.response(in_response_to=_fresh(saml), name_id="out@example.com"))
    token = saml.client.get("/session").json["csrf_token"]
    resp = saml.client.post("/logout", data={"csrf_token": token})
    assert resp.status_code == 302 and resp.headers["Location"].startswith(saml.idp.slo_url)
    assert saml.client.get("/session").status_code == 401


def test_idps_and_logins_cli(cli, saml, tmp_path):
    """`idps add/list/remove` and `logins --failed` as an operator uses them."""
    other = TestIdP(entity_id="https://other-idp.example.test/metadata")
    path = tmp_path / "md.xml"
    path.write_text(other.metadata_xml())
    added = cli("idps", "add", saml.account.slug, "--metadata", str(path), "--name", "other")
    assert added.exit_code == 0 and "added IdP other" in added.stdout
    assert (
        "other\thttps://other-idp.example.test/metadata"
        in cli("idps", "list", saml.account.slug).stdout
    )
    dup = cli("idps", "add", saml.account.slug, "--metadata", str(path), "--name", "again")
    assert dup.exit_code == 1 and "already has IdP" in dup.stderr
    bad = tmp_path / "bad.xml"
    bad.write_text("<nope/>")
    assert cli("idps", "add", saml.account.slug, "--metadata", str(bad)).exit_code == 1
    ssrf = cli("idps", "add", saml.account.slug, "--metadata", "https://127.0.0.1/md.xml")
    assert ssrf.exit_code == 1 and "non-public address" in ssrf.stderr
    assert (
        cli("idps", "add", saml.account.slug, "--metadata", "http://example.com/md").exit_code == 1
    )
    saml.post(saml.response(name_id="x@example.com"))
    failed = cli("logins", saml.account.slug, "--failed").stdout
    assert "REFUSED unknown_idp" in failed  # two IdPs now: unsolicited needs /acs/<idp>
    assert cli("idps", "remove", saml.account.slug, "other").exit_code == 0


def test_unknown_account_pages_are_404(client):
    """SAML URLs of an unknown account answer a 404 page, not a 500."""
    assert client.get(f"/saml/nope-{secrets.token_hex(3)}/metadata").status_code == 404
    assert (
        client.post(
            f"/saml/nope-{secrets.token_hex(3)}/acs", data={"SAMLResponse": "x"}
        ).status_code
        == 404
    )


def test_readyz_warns_of_expiring_idp_certificates(client, store, account):
    """An IdP certificate expiring within 30 days shows in /readyz (still ready)."""
    from tests.saml_idp import KeyPair

    soon = TestIdP.with_keys(KeyPair.generate(days=10), entity_id="https://soon.example.test/md")
    idps.add(store, account.slug, soon.metadata_xml(), name="soon", actor="t")
    body = client.get("/readyz").json
    assert body["status"] == "ok"
    assert any(account.slug in w and "soon" in w for w in body["certificate_warnings"])


def test_sp_key_rotation_overlaps(saml, cli):
    """After `sp-keys rotate`, both certificates are published, the new one signs requests,
    and an assertion still encrypted to the old one is accepted until it is retired."""

    def metadata():
        return parse_sp_metadata(
            saml.client.get(f"/saml/{saml.account.slug}/metadata").get_data(as_text=True)
        )

    old_cert = metadata().encryption_certs[0]
    env = {**cli.env, "BRIDGE_SECRET_KEY": saml.client.application.config["SECRET_KEY"]}
    rotated = type(cli)(env)("sp-keys", "rotate", saml.account.slug)
    assert rotated.exit_code == 0, rotated.output
    meta = metadata()
    assert len(meta.signing_certs) == 2 and old_cert in meta.encryption_certs
    new_cert = next(c for c in meta.signing_certs if c != old_cert)
    request = saml.start()
    assert request.signature_valid_with(new_cert) and not request.signature_valid_with(old_cert)
    xml = saml.response(
        in_response_to=request.id, name_id="rot@example.com", encrypt_to_cert=old_cert
    )
    assert saml.post(xml).status_code == 302
    assert saml.signed_in_as() == "rot@example.com"
    saml.new_browser()  # a NameID encrypted to the old certificate, in a plain assertion, too
    xml = saml.response(
        in_response_to=saml.start().id, name_id="rot2@example.com", encrypt_name_id_to_cert=old_cert
    )
    assert saml.post(xml).status_code == 302, saml.last_attempt()
    assert saml.signed_in_as() == "rot2@example.com"


def test_concurrent_logins_of_returning_users(saml, store, caplog):
    """Returning users signing in at the same moment all get in at once: no lock-order
    deadlock, not even one the store's retries would eventually get past."""
    import logging
    import threading

    def allow(db):
        idps.get(db, saml.account.id, "test").allow_idp_initiated = True

    store.write(allow)
    names = [f"busy{i}@example.com" for i in range(8)]
    for name in names:  # first logins, one at a time
        assert saml.post(saml.response(name_id=name)).status_code == 302
    forms = [saml.idp.post_form(saml.response(name_id=name)) for name in names]
    codes = []

    def run(k):
        client = saml.client.application.test_client()
        for form in forms[k::4]:
            codes.append(client.post(f"/saml/{saml.account.slug}/acs", data=form).status_code)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    with caplog.at_level(logging.INFO, logger="bridge.store"):
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert codes == [302] * len(names)
    assert not [r for r in caplog.records if "retrying write" in r.getMessage()]


def test_email_linking_only_on_verified_domains(saml, store, scim, api_for):
    """With link_by_email, a first login joins the user with its e-mail on a verified domain
    (set by the account's admin through the management API); on any other domain, or before
    the domain is declared, it stays a user of its own."""
    admin = api_for(saml.account, "admin")
    assert admin.patch("idps/test", json={"link_by_email": True}).status_code == 200
    made = scim.post(
        "Users", json={"userName": "ann-hr", "emails": [{"value": "ann@example.com"}]}
    ).json
    scim.post("Users", json={"userName": "bob-hr", "emails": [{"value": "bob@elsewhere.org"}]})
    scim.post("Users", json={"userName": "cy-hr", "emails": [{"value": "cy@example.com"}]})
    before = saml.users()
    assert (  # no verified domain yet: a user of its own
        saml.post(saml.response(in_response_to=_fresh(saml), name_id="cy@example.com")).status_code
        == 302
    )
    assert saml.client.get("/session").json["user"]["userName"] == "cy@example.com"
    assert saml.users() == before + 1

    r = admin.put("verified-domains", json={"domains": ["Example.COM"]})
    assert r.status_code == 200 and r.json == {"domains": ["example.com"]}
    assert (
        saml.post(saml.response(in_response_to=_fresh(saml), name_id="ann@example.com")).status_code
        == 302
    )
    session = saml.client.get("/session").json
    assert session["user"]["id"] == made["id"] and saml.users() == before + 1
    assert (
        saml.post(
            saml.response(in_response_to=_fresh(saml), name_id="bob@elsewhere.org")
        ).status_code
        == 302
    )
    assert saml.client.get("/session").json["user"]["userName"] == "bob@elsewhere.org"
    assert saml.users() == before + 2


def test_verified_domains_refusals_write_nothing(saml, store, api_for, cli):
    """Only an admin key sets verified domains; a bad domain or too many is a 400 problem naming
    what is wrong, and the list and the audit log stay as they were. The CLI shows, sets and
    clears the same list and refuses the same way."""
    from bridge.models import AuditEvent

    slug = saml.account.slug
    admin = api_for(saml.account, "admin")
    assert admin.put("verified-domains", json={"domains": ["a.example"]}).status_code == 200

    def audited():
        with store.read() as db:
            return db.scalars(
                select(AuditEvent.after)
                .where(
                    AuditEvent.account_id == saml.account.id,
                    AuditEvent.action == "account.verified_domains",
                )
                .order_by(AuditEvent.seq)
            ).all()

    assert audited() == [{"verified_domains": ["a.example"]}]
    writer = api_for(saml.account, "write")
    r = writer.put("verified-domains", json={"domains": ["b.example"]})
    assert r.status_code == 403 and "admin" in r.json["detail"]
    r = admin.put("verified-domains", json={"domains": ["b.example", "not a domain"]})
    assert r.status_code == 400 and "'not a domain'" in r.json["detail"]
    many = [f"d{i}.example" for i in range(51)]
    r = admin.put("verified-domains", json={"domains": many})
    assert r.status_code == 400 and "domains" in r.json["detail"]
    assert writer.get("verified-domains").json == {"domains": ["a.example"]}
    assert audited() == [{"verified_domains": ["a.example"]}]

    out = cli("accounts", "verified-domains", slug, "B.example", "a.example")
    assert (
        out.exit_code == 0 and out.output == f"verified domains of {slug}: a.example, b.example\n"
    )
    out = cli("accounts", "verified-domains", slug, "c.example", "192.0.2.1")
    assert out.exit_code != 0 and "'192.0.2.1' is an address" in out.output + out.stderr
    assert cli("accounts", "verified-domains", slug, "--clear", "x.example").exit_code == 2
    out = cli("accounts", "verified-domains", slug)
    assert out.output == f"verified domains of {slug}: a.example, b.example\n"
    assert cli("accounts", "verified-domains", slug, "--clear").exit_code == 0
    assert cli("accounts", "verified-domains", slug).output == f"verified domains of {slug}: none\n"
    assert audited()[-1] == {"verified_domains": []} and len(audited()) == 3


def test_login_answer_is_bound_to_the_browser_that_asked(saml):
    """Login CSRF (issue 9 item 3): the answer to a login one browser started is refused from
    a browser without its cookie, or with a forged one (`wrong_browser`), and nothing is
    written; from the browser that started it, the same answer signs in."""
    rid = _fresh(saml)  # saml.client now holds the login cookie
    xml = saml.response(in_response_to=rid, name_id="mallory@example.com")
    victim = saml.client.application.test_client()
    form = saml.idp.post_form(xml)
    refused = victim.post(f"/saml/{saml.account.slug}/acs", data=form)
    assert refused.status_code == 400 and saml.last_reason() == "wrong_browser"
    assert saml.users() == 0 and victim.get("/session").status_code == 401
    victim.set_cookie("bridge_login", "forged.value", path=f"/saml/{saml.account.slug}/")
    forged = victim.post(f"/saml/{saml.account.slug}/acs", data=form)
    assert forged.status_code == 400 and saml.last_reason() == "wrong_browser"
    assert saml.users() == 0
    resp = saml.post(xml)
    assert resp.status_code == 302 and saml.users() == 1
    cleared = [h for h in resp.headers.getlist("Set-Cookie") if h.startswith("bridge_login=")]
    assert cleared and "Max-Age=0" in cleared[0]  # the binding is used up with the request


def test_login_cookie_attributes(saml):
    """The binding cookie lives as long as a pending request, HttpOnly, on the account's SAML
    paths only."""
    resp = saml.client.get(f"/saml/{saml.account.slug}/login")
    (cookie,) = [h for h in resp.headers.getlist("Set-Cookie") if h.startswith("bridge_login=")]
    assert "HttpOnly" in cookie and "Max-Age=600" in cookie
    assert f"Path=/saml/{saml.account.slug}/" in cookie and "SameSite=Lax" in cookie


@pytest.mark.parametrize("how", ["remove", "disable"])
def test_removing_or_disabling_an_idp_ends_its_sessions(saml, cli, how):
    """Issue 9 item 5: `idps remove` or `idps disable` ends the sessions opened through the IdP
    at once; a disabled IdP signs nobody in (`idp_disabled`) until enabled again."""
    other = TestIdP(entity_id="https://keep.example.test/metadata")
    idps.add(saml.store, saml.account.slug, other.metadata_xml(), name="keep", actor="t")
    keep_client = saml.client.application.test_client()
    start = keep_client.get(f"/saml/{saml.account.slug}/login", query_string={"idp": "keep"})
    keep_request = parse_authn_request(start.headers["Location"])
    kept = keep_client.post(
        f"/saml/{saml.account.slug}/acs/keep",
        data=other.post_form(
            other.response(
                destination=keep_request.acs_url,
                audience=saml.entity_id,
                in_response_to=keep_request.id,
                name_id="kept@example.com",
            )
        ),
    )
    assert kept.status_code == 302
    start = saml.client.get(f"/saml/{saml.account.slug}/login", query_string={"idp": "test"})
    request = parse_authn_request(start.headers["Location"])
    assert saml.post(saml.response(in_response_to=request.id, name_id="gone@example.com"))
    assert saml.client.get("/session").status_code == 200
    result = cli("idps", how, saml.account.slug, "test")
    assert result.exit_code == 0 and "1 session(s) ended" in result.stdout, result.output
    assert saml.client.get("/session").status_code == 401
    assert keep_client.get("/session").status_code == 200  # another IdP's session stays
    login = saml.client.get(f"/saml/{saml.account.slug}/login", query_string={"idp": "test"})
    assert login.status_code == (404 if how == "remove" else 403)
    if how == "disable":
        assert "DISABLED" in cli("idps", "list", saml.account.slug).stdout
        before = saml.users()
        unsolicited = saml.post(
            saml.response(name_id="late@example.com", destination=f"{saml.acs}/test"),
            path=f"/saml/{saml.account.slug}/acs/test",
        )
        assert unsolicited.status_code == 403 and saml.last_reason() == "idp_disabled"
        assert saml.users() == before
        assert cli("idps", "enable", saml.account.slug, "test").exit_code == 0
        start = saml.client.get(f"/saml/{saml.account.slug}/login?idp=test")
        request = parse_authn_request(start.headers["Location"])
        back = saml.post(
            saml.response(
                in_response_to=request.id,
                name_id="gone@example.com",
                destination=f"{saml.acs}/test",
            ),
            path=f"/saml/{saml.account.slug}/acs/test",
        )
        assert back.status_code == 302, saml.last_reason()


def test_one_request_answered_twice_at_once_signs_in_once(saml, store):
    """Two different assertions answering the same AuthnRequest, posted at the same moment from
    the browser that asked (a second tab, or an IdP that answered twice): the request is used up
    by exactly one of them; the other is refused as answering no pending login, and nothing of
    it is written (one session, one accepted assertion)."""

    rid = _fresh(saml)  # saml.client now holds the login cookie
    path = f"/saml/{saml.account.slug}/"
    cookie = saml.client.get_cookie("bridge_login", path=path)
    assert cookie is not None
    forms = [
        saml.idp.post_form(saml.response(in_response_to=rid, name_id="twice@example.com"))
        for _ in range(2)
    ]
    start = threading.Barrier(2)
    statuses: list[int] = []

    def tab(form):
        client = saml.client.application.test_client()
        client.set_cookie("bridge_login", cookie.value, path=path)
        start.wait()
        statuses.append(client.post(f"/saml/{saml.account.slug}/acs", data=form).status_code)

    threads = [threading.Thread(target=tab, args=(form,)) for form in forms]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [302, 400]
    with store.read() as db:
        reasons = [row["reason"] for row in logins.recent(db, saml.account.id)]
        sessions, seen = _sessions_and_seen(db, saml.account.id)
    assert sorted(reasons) == ["ok", "unknown_in_response_to"], reasons
    assert saml.users() == 1 and sessions == 1 and seen == 1
