"""Interop with an independent SAML stack: pysaml2 as the IdP of accounts with one and with two
IdPs, every URL taken from the metadata the bridge publishes for that IdP. SP- and IdP-initiated
logins (encrypted with pysaml2's own prefixes), both logout directions with persistent NameIDs
carrying every qualifier, and the refusals around them (typed reason, nothing written)."""

from __future__ import annotations

import pytest
from lxml import etree
from saml2.samlp import STATUS_SUCCESS
from sqlalchemy import func, select

from bridge import idps, logins
from bridge.models import LoginSession, User
from tests.interop.pysaml2_idp import PySaml2IdP, local, query

BASE = "http://127.0.0.1:8000"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"


class Bridge:
    """An account with pysaml2 IdPs, and what a browser and an admin would look at."""

    def __init__(self, client, store, account, idps_):
        self.client, self.store, self.account, self.idps = client, store, account, idps_

    def login(self, idp, name_id, *, encrypt=False, next_url="/welcome", client=None, **kw):
        """SP-initiated: our AuthnRequest to the IdP, its answer posted back by the browser."""
        client = client or self.client
        start = client.get(
            f"/saml/{self.account.slug}/login", query_string={"idp": idp.name, "next": next_url}
        )
        assert start.status_code == 302, start.get_data(as_text=True)
        request = idp.read_authn_request(start.headers["Location"])
        assert request.assertion_consumer_service_url == idp.acs_url()
        xml = idp.response(
            request.assertion_consumer_service_url,
            name_id,
            in_response_to=request.id,
            encrypt=encrypt,
            attributes={"email": [f"{name_id.text}@example.com"]},
            **kw,
        )
        relay = query(start.headers["Location"]).get("RelayState")
        return self.client_post(client, idp.acs_url(), idp.post_form(xml, relay)), xml

    @staticmethod
    def client_post(client, url, form):
        return client.post(local(url, BASE), data=form)

    def session(self, client=None):
        return (client or self.client).get("/session", headers={"Accept": "application/json"})

    def sign_out(self):
        """The sign-out button: POST /logout with the session's CSRF token."""
        token = self.session().json["csrf_token"]
        return self.client.post("/logout", data={"csrf_token": token})

    def users(self):
        with self.store.read() as db:
            return db.scalar(
                select(func.count()).select_from(User).where(User.account_id == self.account.id)
            )

    def live_sessions(self):
        with self.store.read() as db:
            return list(
                db.scalars(
                    select(LoginSession).where(
                        LoginSession.account_id == self.account.id, LoginSession.ended.is_(None)
                    )
                )
            )

    def last_reason(self):
        with self.store.read() as db:
            rows = logins.recent(db, self.account.id, limit=1)
        return rows[0]["reason"] if rows else None

    def allow_idp_initiated(self, idp):
        def work(db):
            idps.get(db, self.account.id, idp.name).allow_idp_initiated = True

        self.store.write(work)


@pytest.fixture(params=[1, 2], ids=["one-idp", "two-idps"])
def bridge(request, client, store, account, tmp_path):
    """An account with one or two pysaml2 IdPs, each trusting the metadata published for it;
    the flows run against the last one."""
    found = []
    for k in range(request.param):
        idp = PySaml2IdP(tmp_path / f"idp{k}", f"https://idp{k}.interop.test/idp/metadata")
        idp.name = f"idp{k}"
        idps.add(store, account.slug, idp.metadata_xml(), name=idp.name, actor="t")
        published = client.get(f"/saml/{account.slug}/metadata/{idp.name}")
        assert published.status_code == 200
        idp.trust(published.get_data(as_text=True))
        assert idp.acs_url() == f"{BASE}/saml/{account.slug}/acs/{idp.name}"
        assert idp.sls_url() == f"{BASE}/saml/{account.slug}/sls/{idp.name}"
        found.append(idp)
    return Bridge(client, store, account, found)


def test_sp_initiated_encrypted_login_with_the_idps_prefixes(bridge):
    """pysaml2 checks our signed AuthnRequest and answers with an assertion it signed, then
    encrypted under prefixes of its own (the Response's `ns0:`/`ns1:` are not the plaintext's):
    the signature verifies as the IdP made it, and the person lands on `next`."""
    idp = bridge.idps[-1]
    resp, xml = bridge.login(idp, idp.persistent("u-enc"), encrypt=True)
    root = etree.fromstring(xml.encode())
    assert root.find(f"{{{SAML}}}EncryptedAssertion") is not None
    assert root.find(f"{{{SAML}}}Assertion") is None and root.prefix == "ns0"
    assert resp.status_code == 302 and resp.headers["Location"] == "/welcome", bridge.last_reason()
    assert bridge.session().json["user"]["userName"] == "u-enc"
    assert bridge.last_reason() == "ok"


def test_idp_initiated_login_through_the_published_acs(bridge):
    """An unsolicited response to the ACS the IdP's metadata names signs in (when allowed)."""
    idp = bridge.idps[-1]
    xml = idp.response(idp.acs_url(), idp.persistent("u-idp"), encrypt=True)
    refused = bridge.client_post(bridge.client, idp.acs_url(), idp.post_form(xml))
    assert refused.status_code == 400 and bridge.last_reason() == "idp_initiated_not_allowed"
    assert bridge.users() == 0 and bridge.live_sessions() == []
    bridge.allow_idp_initiated(idp)
    xml = idp.response(idp.acs_url(), idp.persistent("u-idp"))
    resp = bridge.client_post(bridge.client, idp.acs_url(), idp.post_form(xml))
    assert resp.status_code == 302 and bridge.session().json["user"]["userName"] == "u-idp"


def test_sp_initiated_logout_names_the_whole_name_id(bridge):
    """Our LogoutRequest carries the assertion's NameID whole (Format, NameQualifier,
    SPNameQualifier, SPProvidedID) and SessionIndex; pysaml2 checks its signature, and its
    signed LogoutResponse to the published SLS is accepted."""
    idp = bridge.idps[-1]
    sent = idp.persistent("u-out")
    resp, _ = bridge.login(idp, sent)
    assert resp.status_code == 302
    (session,) = bridge.live_sessions()
    out = bridge.sign_out()
    assert out.status_code == 302 and out.headers["Location"].startswith(idp.slo_url)
    request = idp.read_logout_request(out.headers["Location"]).message
    got = request.name_id
    assert (
        got.text,
        got.format,
        got.name_qualifier,
        got.sp_name_qualifier,
        got.sp_provided_id,
    ) == (
        sent.text,
        sent.format,
        sent.name_qualifier,
        sent.sp_name_qualifier,
        sent.sp_provided_id,
    )
    assert [i.text for i in request.session_index] == [session.session_index]
    assert bridge.session().status_code == 401
    back = bridge.client.get(local(idp.logout_response(request), BASE))
    assert back.status_code == 200 and "signed out" in back.get_data(as_text=True)


def test_idp_initiated_logout_through_the_published_sls(bridge):
    """pysaml2's signed LogoutRequest, with the persistent NameID, to the SLS the metadata names
    ends the session; our signed LogoutResponse says Success."""
    idp = bridge.idps[-1]
    name_id = idp.persistent("u-slo")
    bridge.login(idp, name_id)
    (session,) = bridge.live_sessions()
    url, request_id = idp.logout_request(name_id, session.session_index)
    resp = bridge.client.get(local(url, BASE))
    assert resp.status_code == 302 and resp.headers["Location"].startswith(idp.slo_url)
    answer = idp.read_logout_response(resp.headers["Location"]).response
    assert answer.in_response_to == request_id
    assert answer.status.status_code.value == STATUS_SUCCESS
    assert bridge.session().status_code == 401 and bridge.live_sessions() == []


def test_response_signed_only_as_a_whole(bridge, store):
    """A Response whose signature covers an unsigned assertion is refused (`unsigned`) while the
    IdP is strict, as its metadata says (WantAssertionsSigned="true"); with the per-IdP setting
    it signs in and the metadata says "false"."""
    idp = bridge.idps[-1]
    meta = f"/saml/{bridge.account.slug}/metadata/{idp.name}"
    assert 'WantAssertionsSigned="true"' in bridge.client.get(meta).get_data(as_text=True)
    resp, _ = bridge.login(idp, idp.persistent("u-rs"), sign_assertion=False, sign_response=True)
    assert resp.status_code == 400 and bridge.last_reason() == "unsigned"
    assert bridge.users() == 0 and bridge.live_sessions() == []

    def relax(db):
        idps.get(db, bridge.account.id, idp.name).accept_response_signature = True

    store.write(relax)
    assert 'WantAssertionsSigned="false"' in bridge.client.get(meta).get_data(as_text=True)
    resp, _ = bridge.login(idp, idp.persistent("u-rs"), sign_assertion=False, sign_response=True)
    assert resp.status_code == 302 and bridge.session().json["user"]["userName"] == "u-rs"
    unsigned, _ = bridge.login(
        idp, idp.persistent("u-none"), sign_assertion=False, sign_response=False
    )
    assert unsigned.status_code == 400 and bridge.last_reason() == "unsigned"


def test_answer_posted_by_another_browser_is_refused(bridge, app):
    """Login CSRF: the answer to a login one browser started, posted from another browser,
    is refused (`wrong_browser`): no user, no session."""
    idp = bridge.idps[-1]
    attacker = app.test_client()
    start = attacker.get(f"/saml/{bridge.account.slug}/login", query_string={"idp": idp.name})
    request = idp.read_authn_request(start.headers["Location"])
    xml = idp.response(idp.acs_url(), idp.persistent("attacker"), in_response_to=request.id)
    victim = bridge.client
    resp = bridge.client_post(victim, idp.acs_url(), idp.post_form(xml))
    assert resp.status_code == 400 and bridge.last_reason() == "wrong_browser"
    assert bridge.users() == 0 and bridge.live_sessions() == []
    assert bridge.session(victim).status_code == 401


def test_response_for_one_acs_posted_to_another_is_refused(bridge):
    """A response addressed to another ACS (the account-wide one here) is refused at an IdP's
    own ACS: Destination must name the URL it arrives at."""
    idp = bridge.idps[-1]
    bridge.allow_idp_initiated(idp)
    other = f"{BASE}/saml/{bridge.account.slug}/acs"
    xml = idp.response(other, idp.persistent("u-x"))
    resp = bridge.client_post(bridge.client, idp.acs_url(), idp.post_form(xml))
    assert resp.status_code == 400 and bridge.last_reason() == "wrong_destination"
    assert bridge.users() == 0 and bridge.live_sessions() == []


def _reason(resp):
    """The typed reason a refusal page gives as its reference."""
    return resp.get_data(as_text=True).split("Reference: <code>")[1].split(" / ")[0]


def test_logout_messages_of_several_idps_find_their_idp(client, store, account, tmp_path):
    """Two IdPs, the first set up from the account-wide metadata (`/acs`, `/sls`): the answer
    to our LogoutRequest is found by the request it answers. A LogoutRequest at the shared SLS
    is refused (`unknown_idp`: the unsigned Issuer does not choose), one addressed to another
    IdP's SLS is refused there (`wrong_destination`), and one the wrong IdP signed too
    (`bad_logout`): the session lives on until its own IdP asks."""
    found = []
    for k, published in enumerate(["", "/idp1"]):
        idp = PySaml2IdP(tmp_path / f"idp{k}", f"https://idp{k}.interop.test/idp/metadata")
        idp.name = f"idp{k}"
        idps.add(store, account.slug, idp.metadata_xml(), name=idp.name, actor="t")
        meta = client.get(f"/saml/{account.slug}/metadata{published}").get_data(as_text=True)
        idp.trust(meta)
        found.append(idp)
    bridge = Bridge(client, store, account, found)
    first, second = found
    assert first.sls_url() == f"{BASE}/saml/{account.slug}/sls"

    def log_in(value):
        start = client.get(f"/saml/{account.slug}/login", query_string={"idp": first.name})
        request = first.read_authn_request(start.headers["Location"])
        xml = first.response(first.acs_url(), first.persistent(value), in_response_to=request.id)
        assert bridge.client_post(client, first.acs_url(), first.post_form(xml)).status_code == 302

    log_in("u-a")
    out = bridge.sign_out()
    request = first.read_logout_request(out.headers["Location"]).message
    back = client.get(local(first.logout_response(request), BASE))
    assert back.status_code == 200 and "signed out" in back.get_data(as_text=True)

    name_id = first.persistent("u-b")
    log_in("u-b")
    (session,) = bridge.live_sessions()
    url, _ = first.logout_request(name_id, session.session_index)
    shared = client.get(local(url, BASE))
    assert shared.status_code == 400 and _reason(shared) == "unknown_idp"
    elsewhere = client.get(local(url, BASE).replace("/sls?", f"/sls/{second.name}?"))
    assert elsewhere.status_code == 400 and _reason(elsewhere) == "wrong_destination"
    url, _ = first.logout_request(name_id, session.session_index, second.sls_url())
    signed_by_first = client.get(local(url, BASE))
    assert signed_by_first.status_code == 400 and _reason(signed_by_first) == "bad_logout"
    assert len(bridge.live_sessions()) == 1 and bridge.session().status_code == 200
    url, _ = first.logout_request(name_id, session.session_index)
    assert client.get(local(url, BASE).replace("/sls?", f"/sls/{first.name}?")).status_code == 400
    assert len(bridge.live_sessions()) == 1
