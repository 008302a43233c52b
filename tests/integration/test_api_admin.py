"""IdPs, SCIM tokens, logins and audit over the API: admin scope for changes, an IdP's removal
ends its sessions, a SCIM token is shown once and works, logs filter, the chain verifies."""

from datetime import timedelta

from sqlalchemy import select, update

from bridge import idps, logins, provisioning, scim_log, sessions
from bridge.models import AuditEvent, LoginSession, ScimRequest, ScimToken, utcnow
from tests import factories
from tests.integration.api_client import problem_type
from tests.saml_idp import TestIdP


def test_idp_add_list_update_refresh_remove(api_for, account, store):
    """An admin adds an IdP from XML, sees its certificate expiry and the SP values, changes a
    setting, refreshes it; removal ends the sessions it opened."""
    admin = api_for(account, "admin")
    idp = TestIdP()
    r = admin.post("idps", json={"name": "okta", "metadata_xml": idp.metadata_xml()})
    assert r.status_code == 201, r.json
    assert r.json["entity_id"] == idp.entity_id and r.json["certificates"][0]["not_after"]
    listed = admin.get("idps").json
    assert listed["service_provider"]["acs_url"].endswith(f"/saml/{account.slug}/acs")
    assert [i["name"] for i in listed["idps"]] == ["okta"]
    assert (
        admin.post("idps", json={"name": "okta", "metadata_xml": idp.metadata_xml()}).status_code
        == 409
    )
    r = admin.patch("idps/okta", json={"allow_idp_initiated": True, "match_by": "email"})
    assert r.json["allow_idp_initiated"] is True and r.json["match_by"] == "email"
    r = admin.post("idps/okta/refresh", json={})
    assert r.status_code == 400 and "send metadata_xml" in r.json["detail"]
    assert (
        admin.post("idps/okta/refresh", json={"metadata_xml": idp.metadata_xml()}).status_code
        == 200
    )
    uid = provisioning.provision(store, account.id, factories.profile(), actor="t").user_id
    with store.read() as db:
        idp_id = idps.get(db, account.id, "okta").id
    store.write(
        lambda db: sessions.start_in(db, "s3cret", account.id, uid, minutes=60, idp_id=idp_id)
    )
    r = admin.delete("idps/okta")
    assert r.status_code == 200 and r.json == {"name": "okta", "sessions_ended": 1}
    with store.read() as db:
        assert db.scalar(select(LoginSession.ended).where(LoginSession.user_id == uid)) is not None
    assert admin.get("idps/okta").status_code in (404, 405)


def test_idp_refusals(api_for, account):
    """A write key cannot add IdPs; bad XML, both sources, or a private metadata URL are 400."""
    writer, admin = api_for(account, "write"), api_for(account, "admin")
    xml = TestIdP().metadata_xml()
    r = writer.post("idps", json={"metadata_xml": xml})
    assert r.status_code == 403 and problem_type(r) == "forbidden"
    r = admin.post("idps", json={"metadata_xml": "<nope/>"})
    assert r.status_code == 400 and problem_type(r) == "invalid-input"
    r = admin.post("idps", json={"metadata_xml": xml, "metadata_url": "https://x.example/m"})
    assert r.status_code == 400 and "exactly one" in r.json["detail"]
    r = admin.post("idps", json={"metadata_url": "https://127.0.0.1/metadata"})
    assert r.status_code == 400 and problem_type(r) == "invalid-input"
    assert "127.0.0.1" in r.json["detail"]
    assert admin.get("idps").json["idps"] == []


def test_scim_token_issued_once_works_and_is_revoked(api_for, account, client):
    """A token issued over the API is shown once, authenticates SCIM, and stops on revoke."""
    admin = api_for(account, "admin")
    r = admin.post("scim-tokens", json={"label": "okta"})
    assert r.status_code == 201 and r.json["token"].startswith("ibs_")
    token, token_id = r.json["token"], r.json["id"]
    listed = admin.get("scim-tokens").json["tokens"]
    assert token_id in [t["id"] for t in listed] and token not in str(listed)
    scim = {"Authorization": f"Bearer {token}"}
    assert client.get("/scim/v2/Users", headers=scim).status_code == 200
    assert admin.delete(f"scim-tokens/{token_id}").status_code == 200
    assert client.get("/scim/v2/Users", headers=scim).status_code == 401
    r = api_for(account, "write").post("scim-tokens", json={})
    assert r.status_code == 403 and problem_type(r) == "forbidden"
    assert [t["id"] for t in admin.get("scim-tokens").json["tokens"]] == [token_id]


def test_logins_filter(api, account, store):
    """Logins filter by outcome, IdP and time, newest first, with typed reasons."""
    idps.add(store, account.slug, TestIdP().metadata_xml(), name="test", actor="t")
    with store.read() as db:
        idp_id = idps.get(db, account.id, "test").id
    logins.record(store, account.id, ok=True, reason="ok", idp_id=idp_id, name_id="a")
    logins.record(store, account.id, ok=False, reason="bad_signature", idp_id=idp_id, name_id="b")
    logins.record(store, account.id, ok=False, reason="replayed", name_id="c")
    every = api.get("logins").json["logins"]
    assert [r["reason"] for r in every] == ["replayed", "bad_signature", "ok"]
    failed = api.get("logins", query_string={"failed": "true", "idp": "test"}).json["logins"]
    assert [r["reason"] for r in failed] == ["bad_signature"]
    assert api.get("logins", query_string={"since": "2999-01-01T00:00:00Z"}).json["logins"] == []
    r = api.get("logins", query_string={"since": "yesterday"})
    assert r.status_code == 400 and problem_type(r) == "invalid-input"
    assert "since" in r.json["detail"]
    page = api.get("logins", query_string={"limit": 2}).json
    rest = api.get("logins", query_string={"cursor": page["next"]}).json["logins"]
    assert [r["reason"] for r in rest] == ["ok"]


def test_audit_cursor_filters_and_verify(api, account, store):
    """Audit pages newest first and follows after a seq; filters by user and action; verify
    finds the chain whole, then names the event that was edited."""
    uid = provisioning.provision(store, account.id, factories.profile(), actor="t").user_id
    api.post(
        f"users/{uid}/grants", json={"environment": "production", "path": "a/", "level": "viewer"}
    )
    newest = api.get("audit", query_string={"limit": 2}).json
    assert newest["events"][0]["action"] == "user.manual_access"
    older = api.get("audit", query_string={"before": newest["next"]}).json["events"]
    assert older and older[0]["seq"] == newest["events"][-1]["seq"] - 1
    follow = api.get("audit", query_string={"after": older[-1]["seq"]}).json["events"]
    assert [e["seq"] for e in follow] == sorted(e["seq"] for e in follow)
    mine = api.get("audit", query_string={"user_id": str(uid)}).json["events"]
    assert {e["action"] for e in mine} == {"user.create", "user.manual_access"}
    by_prefix = api.get("audit", query_string={"action": "environment."}).json["events"]
    assert {e["action"] for e in by_prefix} == {"environment.create"}
    assert api.post("audit/verify").json == {
        "ok": True,
        "events": newest["events"][0]["seq"],
        "broken_at": None,
        "reason": None,
    }
    store.write(
        lambda db: db.execute(
            update(AuditEvent)
            .where(AuditEvent.account_id == account.id, AuditEvent.seq == 2)
            .values(actor="mallory")
        )
    )
    broken = api.post("audit/verify").json
    assert broken["ok"] is False and broken["broken_at"] == 2 and "changed" in broken["reason"]


def test_scim_request_log(api, scim, account, store):
    """Every SCIM request is logged with status, scimType and duration; a failure keeps its body
    with the password redacted; old rows go after the retention."""
    ok = scim.post("Users", json={"userName": "log@example.com", "password": "hunter2"})
    assert ok.status_code == 201
    dup = scim.post("Users", json={"userName": "log@example.com", "password": "hunter2"})
    assert dup.status_code == 409 and dup.json["scimType"] == "uniqueness"
    scim.get("Users?filter=nope")
    rows = api.get("scim-requests").json["requests"]
    assert [(r["method"], r["status"]) for r in rows] == [
        ("GET", 400),
        ("POST", 409),
        ("POST", 201),
    ]
    bad_filter, conflict, created = rows
    assert bad_filter["path"] == "/scim/v2/Users?filter=nope"
    assert bad_filter["scim_type"] == "invalidFilter"
    assert conflict["scim_type"] == "uniqueness" and "hunter2" not in conflict["body"]
    assert '"password": "[redacted]"' in conflict["body"] and "log@example.com" in conflict["body"]
    assert created["body"] is None and created["duration_ms"] >= 0
    assert created["token"].startswith(f"{scim_token_id(store, account)} (ibs_")
    failed = api.get("scim-requests", query_string={"failed": "true", "method": "POST"}).json
    assert [r["status"] for r in failed["requests"]] == [409]
    store.write(
        lambda db: db.execute(
            update(ScimRequest)
            .where(ScimRequest.account_id == account.id)
            .values(at=utcnow() - timedelta(days=15))
        )
    )
    scim_log._purged.clear()  # the purge runs at most once a minute per process
    scim.get("Users")
    assert len(api.get("scim-requests").json["requests"]) == 1


def test_scim_request_log_keeps_a_request_with_a_nul(api, scim, account):
    """A body that is not JSON and holds NUL bytes, and a path with %00, are logged with each
    NUL as U+FFFD (PostgreSQL refuses NUL in text; the log row was lost before)."""
    raw = scim.post("Users", data=b"\x00\x01junk", content_type="application/scim+json")
    assert raw.status_code == 400 and raw.json["scimType"] == "invalidSyntax"
    missing = scim.get("Users/a%00b")
    assert missing.status_code == 404
    rows = api.get("scim-requests").json["requests"]
    assert [(r["method"], r["status"]) for r in rows] == [("GET", 404), ("POST", 400)]
    assert rows[0]["path"] == "/scim/v2/Users/a\ufffdb"
    assert rows[1]["body"] == "\ufffd\x01junk"


def scim_token_id(store, account):
    with store.read() as db:
        return db.scalar(select(ScimToken.id).where(ScimToken.account_id == account.id))
