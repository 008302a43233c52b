"""Policy versions in the store over the API and the CLI: PUT (every error as file:line:col),
plan, apply (a guard refuses), history, diff, rollback; a second app process sees a newly
activated version on its next request; push, pull, sync."""

import textwrap

import pytest
from sqlalchemy import select

from bridge import create_app
from bridge.models import AuditEvent, PolicyVersion
from tests.integration.api_client import ApiClient, problem_type

BASE = """
account: {slug}
environments: [production, staging]
defaults: {{role: media_library_user, environments: [production]}}
rules:
  - name: admins
    when: {{groups: {{contains: cld-admins}}}}
    then: {{role: {admin_role}, environments: all}}
{guards}
"""


def source(slug, admin_role="admin", guards=""):
    return textwrap.dedent(BASE.format(slug=slug, admin_role=admin_role, guards=guards))


@pytest.fixture
def admin(api_for, account):
    return api_for(account, "admin")


@pytest.fixture
def boss(scim):
    """A user in cld-admins (SCIM)."""
    uid = scim.post("Users", json={"userName": "boss@example.com"}).json["id"]
    scim.post("Groups", json={"displayName": "cld-admins", "members": [{"value": uid}]})
    return uid


def versions(store, account):
    with store.read() as db:
        return db.scalars(
            select(PolicyVersion.number).where(PolicyVersion.account_id == account.id)
        ).all()


def test_put_refuses_a_broken_policy_naming_every_error(admin, account, store):
    """A source with two mistakes: 400 policy-invalid listing both as file:line:col; no version."""
    broken = source(account.slug).replace("role: media_library_user", "role: emperor")
    broken = broken.replace("when:", "whenn:")
    r = admin.put("policy", json={"source": broken})
    assert r.status_code == 400 and problem_type(r) == "policy-invalid"
    assert len(r.json["errors"]) >= 2
    assert all(e.startswith(f"{account.slug}.yaml:") for e in r.json["errors"])
    assert any(":4:" in e and "emperor" in e for e in r.json["errors"])
    assert versions(store, account) == []
    other = source("someone-else")
    r = admin.put("policy", json={"source": other})
    assert r.status_code == 400 and "someone-else" in r.json["errors"][0]


def test_put_plan_apply_and_read_back(admin, account, boss, store):
    """PUT stores version 1 inactive, plan says who changes, apply activates and re-evaluates;
    GET /policy shows the source and the parsed policy; the same source again makes no version."""
    r = admin.put("policy", json={"source": source(account.slug, "technical_admin")})
    assert r.status_code == 201 and r.json["number"] == 1 and r.json["active"] is False
    assert r.json["author"] == f"api:key:{admin.key_id}"
    again = admin.put("policy", json={"source": source(account.slug, "technical_admin")})
    assert again.status_code == 200 and again.json["number"] == 1
    assert admin.get("policy").status_code == 404
    plan = admin.post("policy/plan", json={"version": 1}).json
    assert plan["refused"] is None
    assert [c["role"] for c in plan["changes"] if c["id"] == boss] == [
        ["media_library_user", "technical_admin"]
    ]
    applied = admin.post("policy/apply", json={"version": 1})
    assert applied.status_code == 200 and applied.json["active"]["active"] is True
    got = admin.get("policy").json
    assert got["number"] == 1 and got["parsed"]["rules"] == ["admins"]
    assert got["source"] == source(account.slug, "technical_admin")
    role = admin.get(f"users/{boss}").json["access"]["role"]
    assert role == {"role": "technical_admin", "provenance": "policy:admins"}
    assert admin.post("policy/plan", json={"version": 1, "source": "x"}).status_code == 400


def test_guard_refusal_changes_nothing_and_rollback(admin, account, boss, store, scim):
    """Applying a version that leaves no master_admin is 409 naming the guard and leaves the
    active version; rollback returns to an earlier version; history and diff tell who and what."""
    admin.put("policy", json={"source": source(account.slug, "master_admin")})
    assert admin.post("policy/apply", json={"version": 1}).status_code == 200
    guarded = source(account.slug, "admin", "guards: {keep_at_least_one: [master_admin]}")
    assert admin.put("policy", json={"source": guarded}).json["number"] == 2
    plan = admin.post("policy/plan", json={"version": 2}).json
    assert plan["refused"] and "master_admin" in plan["refused"]
    r = admin.post("policy/apply", json={"version": 2})
    assert r.status_code == 409 and problem_type(r) == "guard-refused"
    assert r.json["guard"] == "keep_at_least_one"
    assert admin.get("policy").json["number"] == 1
    assert admin.get(f"users/{boss}").json["access"]["role"]["role"] == "master_admin"
    third = source(account.slug, "admin")
    admin.put("policy", json={"source": third})
    assert admin.post("policy/apply", json={"version": 3}).status_code == 200
    assert admin.get(f"users/{boss}").json["access"]["role"]["role"] == "admin"
    back = admin.post("policy/rollback", json={"version": 1})
    assert back.status_code == 200 and back.json["active"]["number"] == 1
    assert admin.get(f"users/{boss}").json["access"]["role"]["role"] == "master_admin"
    history = admin.get("policy/versions").json["versions"]
    assert [(v["number"], v["active"]) for v in history] == [(3, False), (2, False), (1, True)]
    diff = admin.get("policy/versions/3/diff", query_string={"against": 1}).json["diff"]
    assert "-    then: {role: master_admin, environments: all}" in diff
    assert "+    then: {role: admin, environments: all}" in diff
    with store.read() as db:
        actions = db.scalars(
            select(AuditEvent.action).where(
                AuditEvent.account_id == account.id, AuditEvent.action == "policy.activate"
            )
        ).all()
    assert len(actions) == 3  # 1, 3, back to 1: the refused apply activated nothing


def test_scopes_on_policy(api_for, account):
    """A write key may read and plan but not store or apply a policy."""
    writer = api_for(account, "write")
    r = writer.put("policy", json={"source": source(account.slug)})
    assert r.status_code == 403
    assert writer.post("policy/plan", json={"source": source(account.slug)}).status_code == 200


def test_a_second_process_sees_a_new_version_on_its_next_request(settings, admin, account, boss):
    """Two app instances on one database: a version activated through one is what the other
    applies and explains on its very next request, without a restart."""
    other_app = create_app(settings)
    try:
        other = ApiClient(other_app.test_client(), admin.key, admin.key_id)
        before = other.get(f"users/{boss}/explain").json
        admin.put("policy", json={"source": source(account.slug, "billing")})
        admin.post("policy/apply", json={"version": 1})
        after = other.get(f"users/{boss}/explain").json
        assert before["policy"] != after["policy"] and after["policy"] == "store: version 1"
        assert after["decision"]["role"] == {"value": "billing", "rule": "admins"}
        admin.put("policy", json={"source": source(account.slug, "reports")})
        admin.post("policy/apply", json={"version": 2})
        assert other.get(f"users/{boss}/explain").json["decision"]["role"]["value"] == "reports"
    finally:
        other_app.extensions["bridge.store"].dispose()


def test_cli_push_pull_sync(cli, account, boss, tmp_path, store, api_for):
    """push checks, plans and applies (--dry-run stores nothing); pull prints the active source;
    sync pushes every <slug>.yaml of a folder; a broken file names file:line."""
    path = tmp_path / f"{account.slug}.yaml"
    path.write_text(source(account.slug, "billing"))
    dry = cli("policy", "push", account.slug, str(path), "--dry-run")
    assert (
        dry.exit_code == 0 and "boss@example.com: role media_library_user -> billing" in dry.output
    )
    assert versions(store, account) == []
    pushed = cli("policy", "push", account.slug, str(path))
    assert pushed.exit_code == 0 and "new version 1 is active" in pushed.output
    assert cli("policy", "pull", account.slug).output == source(account.slug, "billing")
    path.write_text(source(account.slug, "reports"))
    synced = cli("policy", "sync", str(tmp_path))
    assert synced.exit_code == 0 and "new version 2 is active" in synced.output
    reader = api_for(account, "read")
    assert reader.get(f"users/{boss}").json["access"]["role"]["role"] == "reports"
    path.write_text(source(account.slug).replace("rules:", "rulez:"))
    broken = cli("policy", "push", account.slug, str(path))
    assert broken.exit_code == 1 and f"{account.slug}.yaml:" in broken.output
    assert sorted(versions(store, account)) == [1, 2]
