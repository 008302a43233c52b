"""API keys: issued once and stored hashed, scoped, revocable, expiring; the key is the account;
errors are RFC 9457 problems; every write is audited with the key's id."""

import json
import logging
import re
from datetime import datetime, timedelta

from sqlalchemy import select, update

from bridge import accounts, provisioning
from bridge.models import Account, ApiKey, AuditEvent, utcnow
from tests import factories
from tests.integration.api_client import problem_type


def audit_seq(store, account):
    with store.read() as db:
        return db.get(Account, account.id).audit_seq


def make_user(store, account, name=None):
    return provisioning.provision(store, account.id, factories.profile(name), actor="test").user_id


def test_cli_issues_a_key_shown_once_and_stored_hashed(cli, store, account):
    """`api-keys issue` prints the ibk_ key alone on its last line; only its hash is stored."""
    result = cli("api-keys", "issue", account.slug, "--scope", "read", "--label", "ci")
    assert result.exit_code == 0, result.output
    raw = result.output.strip().splitlines()[-1]
    assert raw.startswith("ibk_") and len(raw) >= 4 + 43  # 256 bits, base64url
    with store.read() as db:
        row = db.scalar(select(ApiKey).where(ApiKey.account_id == account.id))
        assert row.scope == "read" and row.key_hash == accounts.hash_token(raw)
        assert raw not in str([getattr(row, c.key) for c in ApiKey.__table__.c])
    listed = cli("api-keys", "list", account.slug)
    assert "read" in listed.output and raw not in listed.output and row.prefix in listed.output


def test_cli_refuses_a_bad_scope_and_expiry(cli, account):
    """A scope outside read|write|admin and a zero expiry are refused with a message."""
    bad = cli("api-keys", "issue", account.slug, "--scope", "root")
    assert bad.exit_code != 0 and "root" in bad.output
    zero = cli("api-keys", "issue", account.slug, "--scope", "read", "--expires", "0")
    assert zero.exit_code == 1 and "expiry must be between" in zero.output


def test_missing_unknown_revoked_and_expired_keys_get_401(client, api_for, account, store, cli):
    """No key, an unknown key, a revoked key and an expired key: 401 problem JSON each."""
    r = client.get("/api/v1/users")
    assert r.status_code == 401 and problem_type(r) == "unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = client.get("/api/v1/users", headers={"Authorization": "Bearer ibk_nope"})
    assert r.status_code == 401 and r.json["detail"] == "unknown API key"
    api = api_for(account, "read")
    assert api.get("users").status_code == 200
    assert cli("api-keys", "revoke", account.slug, str(api.key_id)).exit_code == 0
    r = api.get("users")
    assert r.status_code == 401 and r.json["detail"] == "this API key was revoked"
    expiring = api_for(account, "read")
    store.write(
        lambda db: db.execute(
            update(ApiKey)
            .where(ApiKey.id == expiring.key_id)
            .values(expires=utcnow() - timedelta(seconds=1))
        )
    )
    r = expiring.get("users")
    assert r.status_code == 401 and r.json["detail"] == "this API key has expired"


def test_last_use_is_recorded(api, store):
    """A key's last use is kept (coarsely), so unused keys can be found and revoked."""
    assert api.get("users").status_code == 200
    with store.read() as db:
        assert db.get(ApiKey, api.key_id).last_used is not None


def test_read_key_cannot_write(api_for, account, store):
    """A read key gets 403 forbidden on a write, and nothing is written."""
    user_id = make_user(store, account)
    reader = api_for(account, "read")
    before = audit_seq(store, account)
    r = reader.put(f"users/{user_id}/role", json={"role": "admin"})
    assert r.status_code == 403 and problem_type(r) == "forbidden"
    assert "needs write" in r.json["detail"]
    assert audit_seq(store, account) == before
    assert reader.get(f"users/{user_id}").json["access"]["role"]["provenance"] != "manual"


def test_write_key_cannot_touch_admin_resources(api_for, account, store):
    """A write key may change access but not API keys or environments (admin)."""
    writer = api_for(account, "write")
    other = api_for(account, "admin")
    r = writer.delete(f"api-keys/{other.key_id}")
    assert r.status_code == 403 and problem_type(r) == "forbidden"
    r = writer.post("environments", json={"name": "qa"})
    assert r.status_code == 403
    assert other.get("users").status_code == 200  # the key was not revoked
    names = [e["name"] for e in writer.get("environments").json["environments"]]
    assert "qa" not in names


def test_another_accounts_key_sees_404(api_for, account, store):
    """A key of another account cannot see or change this account's users: 404, not 403."""
    user_id = make_user(store, account)
    stranger_account = accounts.create_account(
        store, f"other-{account.slug}", name="Other", actor="test"
    )
    stranger = api_for(stranger_account, "admin")
    for r in (
        stranger.get(f"users/{user_id}"),
        stranger.get(f"users/{user_id}/explain"),
        stranger.put(f"users/{user_id}/role", json={"role": "admin"}),
    ):
        assert r.status_code == 404 and problem_type(r) == "not-found", r.json
    assert stranger.get("users").json["users"] == []
    mine = api_for(account, "admin")
    r = stranger.delete(f"api-keys/{mine.key_id}")
    assert r.status_code == 404
    assert mine.get("users").status_code == 200


def test_admin_lists_and_revokes_keys_audited_with_the_key_id(api_for, account, store):
    """Revoking a key over the API is audited with the revoking key's id as the actor."""
    admin = api_for(account, "admin")
    victim = api_for(account, "read")
    listed = admin.get("api-keys").json["api_keys"]
    assert {k["id"] for k in listed} >= {admin.key_id, victim.key_id}
    assert all("key_hash" not in k and not k["prefix"].endswith("…") for k in listed)
    r = admin.delete(f"api-keys/{victim.key_id}")
    assert r.status_code == 200 and r.json["revoked"]
    assert admin.delete(f"api-keys/{victim.key_id}").status_code == 409
    with store.read() as db:
        event = db.scalars(
            select(AuditEvent).where(
                AuditEvent.account_id == account.id, AuditEvent.action == "api_key.revoke"
            )
        ).one()
    assert event.actor == f"api:key:{admin.key_id}"


def test_bad_json_and_unknown_members_are_400(api, account, store):
    """A body that is not JSON, or has unknown members, is a 400 problem; nothing written."""
    user_id = make_user(store, account)
    before = audit_seq(store, account)
    r = api.request(
        "PUT",
        f"users/{user_id}/role",
        data="{not json",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400 and problem_type(r) == "invalid-input"
    assert r.json["detail"] == "the request body is not valid JSON"
    r = api.put(f"users/{user_id}/role", json={"role": "admin", "extra": 1})
    assert r.status_code == 400 and "extra" in r.json["detail"]
    r = api.put(f"users/{user_id}/role", json={"role": "emperor"})
    assert r.status_code == 400 and "role" in r.json["detail"]
    assert audit_seq(store, account) == before


def test_unknown_api_url_is_a_problem(api):
    """Unknown URLs under /api/v1 answer problem JSON, not HTML."""
    r = api.get("nothing-here")
    assert r.status_code == 404 and problem_type(r) == "not-found"


def test_openapi_document_and_reference_need_no_key(client):
    """The OpenAPI 3.1 document and the reference page are public and self-contained."""
    doc = client.get("/api/v1/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    assert "/api/v1/users/{user_id}" in doc["paths"]
    assert doc["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    page = client.get("/api/v1/reference")
    assert page.status_code == 200 and b"/api/v1/users/{user_id}" in page.data
    assert b"<script" not in page.data and b"https://" not in page.data
    assert b'id="problem-guard-refused"' in page.data


def test_nul_characters_are_400_not_500(api, store, account):
    """NUL in a body, query or path (PostgreSQL text cannot hold it) is a 400; nothing written."""
    before = audit_seq(store, account)
    r = api.post("groups", json={"display_name": "bad\x00name"})
    assert r.status_code == 400 and problem_type(r) == "invalid-input"
    assert "NUL" in r.json["detail"]
    assert api.get("users", query_string={"q": "a\x00b"}).status_code == 400
    assert (
        api.put("users/00000000-0000-0000-0000-000000000000/environments/a%00b").status_code == 400
    )
    assert audit_seq(store, account) == before


def test_each_scope_does_exactly_what_its_rank_allows(api_for, account, store):
    """read < write < admin: a key does what its scope or a lower one needs, and anything above
    is refused 403 forbidden, naming both scopes, with nothing written."""
    user_id = make_user(store, account)
    needs = {
        "read": lambda api: api.get("environments"),
        "write": lambda api: api.put(f"users/{user_id}/role", json={"role": "billing"}),
        "admin": lambda api: api.post("environments", json={"name": f"env-{api.key_id}"}),
    }
    allowed = {("read", "read"), ("write", "read"), ("write", "write")}
    allowed |= {("admin", "read"), ("admin", "write"), ("admin", "admin")}
    for scope in ("read", "write", "admin"):
        api = api_for(account, scope)
        for needed, call in needs.items():
            before = audit_seq(store, account)
            r = call(api)
            if (scope, needed) in allowed:
                assert r.status_code in (200, 201), (scope, needed, r.json)
                continue
            assert r.status_code == 403 and problem_type(r) == "forbidden", (scope, needed)
            assert r.json["detail"] == (
                f"this API key has scope {scope}; this request needs {needed}"
            )
            assert audit_seq(store, account) == before


def test_a_key_sent_wrongly_or_a_bad_body_is_refused_before_the_route(client, api, account, store):
    """Another auth scheme or a blank key is 401; a body that is not JSON, or a NUL anywhere
    in the query or body, is 400 invalid-input; none of them writes anything."""
    how = "send an API key as `Authorization: Bearer ibk_...`"
    for header in (f"Basic {api.key}", "Bearer ", "Bearer    ", api.key):
        r = client.get("/api/v1/users", headers={"Authorization": header})
        assert r.status_code == 401 and problem_type(r) == "unauthorized", header
        assert r.json["detail"] == how
    before = audit_seq(store, account)
    r = api.post("groups", headers={"Content-Type": "application/json"}, data=b"{not json")
    assert r.status_code == 400 and problem_type(r) == "invalid-input"
    assert r.json["detail"] == "the request body is not valid JSON"
    for r in (
        api.get("users", query_string={"q": "a\x00b"}),
        api.post("groups", json={"display_name": "ok", "x": ["a\x00"]}),
        api.post("groups", json={"display_name": "ok", "x\x00": 1}),
    ):
        assert r.status_code == 400 and problem_type(r) == "invalid-input"
        assert r.json["detail"] == "NUL characters are not allowed"
    assert audit_seq(store, account) == before
    assert client.get("/api/v1/openapi.json").status_code == 200  # the document needs no key
    r = api.get("no-such-thing")
    assert r.status_code == 404, r.json


def test_a_body_or_query_that_does_not_fit_is_refused_naming_every_bad_field(
    api_for, account, store
):
    """A 400 invalid-input names each bad field (nested ones by their path, the body itself as
    `body`), all of them in one detail; nothing is written."""
    admin = api_for(account, "admin")
    before = audit_seq(store, account)
    cases = {
        "name: Field required; redirect_uris.1: Input should be a valid string": {
            "redirect_uris": ["https://app.example/cb", 5]
        },
        "body: Input should be a valid dictionary or instance of NewClient": "a string",
    }
    for detail, body in cases.items():
        r = admin.post("clients", json=body)
        assert r.status_code == 400 and problem_type(r) == "invalid-input", r.json
        assert r.json["detail"] == detail
    r = admin.get("users", query_string={"limit": "x", "active": "maybe"})
    assert r.status_code == 400 and problem_type(r) == "invalid-input"
    assert r.json["detail"] == (
        "limit: Input should be a valid integer, unable to parse string as an integer; "
        "active: Input should be a valid boolean, unable to interpret input"
    )
    assert admin.get("clients").json["clients"] == []
    assert audit_seq(store, account) == before


def test_a_patch_body_is_checked_like_any_other(api, account, store):
    """PATCH bodies get the same checks as POST and PUT: not JSON, or a NUL anywhere, is a 400
    invalid-input naming why, and the group keeps its name."""
    gid = api.post("groups", json={"display_name": "Editors"}).json["id"]
    before = audit_seq(store, account)
    r = api.patch(f"groups/{gid}", data="{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and problem_type(r) == "invalid-input"
    assert r.json["detail"] == "the request body is not valid JSON"
    r = api.patch(f"groups/{gid}", json={"display_name": "Press\x00"})
    assert r.status_code == 400 and problem_type(r) == "invalid-input"
    assert r.json["detail"] == "NUL characters are not allowed"
    assert api.get(f"groups/{gid}").json["display_name"] == "Editors"
    assert audit_seq(store, account) == before


def test_the_bearer_scheme_is_case_insensitive_and_may_be_followed_by_spaces(client, api):
    """RFC 7235 auth schemes are case-insensitive and RFC 6750 allows 1*SP before the token:
    each of these is the same key."""
    for header in (f"bearer {api.key}", f"BEARER {api.key}", f"Bearer   {api.key}"):
        r = client.get("/api/v1/users", headers={"Authorization": header})
        assert r.status_code == 200, (header, r.json)


def key_rows(cli, account):
    listed = cli("api-keys", "list", account.slug, "--json")
    assert listed.exit_code == 0, listed.output
    return json.loads(listed.output)


def test_cli_issue_limits_refuse_with_a_reason_and_write_nothing(cli, store, account):
    """An expiry of 1 to 3650 days and a label of up to 200 characters are accepted; one more
    either way is refused with the limit named, and no key is stored."""
    said = []
    for args in (("--expires", "1"), ("--expires", "3650"), ("--label", "x" * 200)):
        r = cli("api-keys", "issue", account.slug, "--scope", "read", *args)
        assert r.exit_code == 0, r.output
        said.append(r.output.strip().splitlines()[0])
    issued = key_rows(cli, account)
    for line, row in zip(said, issued, strict=True):
        until = f", expires {row['expires']}" if row["expires"] else ""
        assert line == (
            f"API key {row['id']} for {account.slug}, scope read{until} "
            "(shown once; only its hash is stored):"
        )
    assert [len(k["label"]) for k in issued] == [0, 0, 200]
    now = utcnow()
    for row, days in zip(issued, (1, 3650), strict=False):
        expires = datetime.fromisoformat(row["expires"])
        assert abs(expires - (now + timedelta(days=days))) < timedelta(minutes=5), row
    before = audit_seq(store, account)
    refusals = {
        "expiry must be between 1 and 3650 days": [("--expires", "3651"), ("--expires", "-1")],
        "a label is at most 200 characters": [("--label", "x" * 201)],
    }
    for reason, cases in refusals.items():
        for args in cases:
            r = cli("api-keys", "issue", account.slug, "--scope", "read", *args)
            assert r.exit_code == 1, (args, r.output)
            assert r.output.strip().splitlines()[-1] == f"Error: {reason}", (args, r.output)
    assert key_rows(cli, account) == issued
    assert audit_seq(store, account) == before


def test_a_key_is_256_random_bits_listed_by_its_first_characters(cli, account):
    """The key is ibk_ and 43 base64url characters (256 bits); the list shows its first ten
    characters, its label, scope, maker and dates, never the key."""
    out = cli("api-keys", "issue", account.slug, "--scope", "write", "--label", "ci").output
    raw = out.strip().splitlines()[-1]
    assert re.fullmatch(r"ibk_[A-Za-z0-9_-]{43}", raw), raw
    (row,) = key_rows(cli, account)
    assert row["prefix"] == raw[:10] and (row["label"], row["scope"]) == ("ci", "write")
    assert row["created_by"].startswith("cli:") and (row["expires"], row["revoked"]) == (None, None)
    assert raw[10:] not in json.dumps(row)


def test_issuing_and_revoking_a_key_are_audited_without_its_value(cli, store, account):
    """The audit log says which key was issued (label, prefix, scope, expiry) and when it was
    revoked; the key itself never appears. Revoking twice, or a key that is not there, is
    refused with the reason and writes nothing."""
    out = cli("api-keys", "issue", account.slug, "--scope", "admin", "--label", "deploy")
    raw = out.output.strip().splitlines()[-1]
    (row,) = key_rows(cli, account)
    assert cli("api-keys", "revoke", account.slug, str(row["id"])).exit_code == 0
    tail = cli("audit", "tail", account.slug, "-n", "2", "--json")
    assert tail.exit_code == 0 and raw[10:] not in tail.output
    issued, revoked = json.loads(tail.output)
    assert (issued["action"], issued["target"]) == ("api_key.issue", f"api_key:{row['id']}")
    assert issued["actor"] == row["created_by"]
    assert issued["after"] == {
        "label": "deploy",
        "prefix": raw[:10],
        "scope": "admin",
        "expires": None,
    }
    assert (revoked["action"], revoked["target"]) == ("api_key.revoke", f"api_key:{row['id']}")
    (now_row,) = key_rows(cli, account)
    assert revoked["before"] == {"revoked": None}
    when = datetime.fromisoformat(revoked["after"]["revoked"]).replace(microsecond=0)
    assert when == datetime.fromisoformat(now_row["revoked"])
    before = audit_seq(store, account)
    again = cli("api-keys", "revoke", account.slug, str(row["id"]))
    assert again.exit_code == 1 and f"API key {row['id']} was already revoked" in again.output
    missing = cli("api-keys", "revoke", account.slug, str(row["id"] + 1000))
    assert missing.exit_code == 1 and f"no API key {row['id'] + 1000}" in missing.output
    assert audit_seq(store, account) == before
    assert key_rows(cli, account) == [now_row]


def test_answers_that_match_their_document_log_no_error(api_for, account, store, caplog):
    """A response that does not match the OpenAPI document is logged as our bug; answers that
    match (a list, a revoke, a problem) log nothing."""
    admin = api_for(account, "admin")
    victim = api_for(account, "read")
    with caplog.at_level(logging.ERROR, logger="api.base"):
        assert admin.get("api-keys").status_code == 200
        assert admin.delete(f"api-keys/{victim.key_id}").status_code == 200
        assert admin.delete(f"api-keys/{victim.key_id}").status_code == 409
    assert [r.getMessage() for r in caplog.records] == []
