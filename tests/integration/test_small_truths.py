"""Small untruths of issue 8 item 8, through the CLI and SCIM: readable `policy explain`, `policy
plan` keeping group names as written and not counting a move to `all` as a loss, bodiless 204s
without a content type, and absent member display names omitted rather than null."""

import json

from tests.conformance.test_entra_replay import ENTERPRISE, GROUP, USER

BEFORE = """\
account: {slug}
environments: [production, staging]
defaults: {{role: media_library_user, environments: [production]}}
"""
AFTER = (
    BEFORE
    + """\
rules:
  - name: sales
    when: {{department: {{equals: Sales}}}}
    then:
      role: admin
      environments: all
      groups: [Marketing]
      grants: [{{environment: staging, folder: "sales/", level: editor}}]
grants:
  Marketing: [{{environment: production, collection: Brand, level: viewer}}]
"""
)


def _sales_user(scim, settings, cli, tmp_path):
    slug = scim.account.slug
    (settings.policy_dir / f"{slug}.yaml").write_text(BEFORE.format(slug=slug))
    doc = {"schemas": [USER, ENTERPRISE], "userName": "pat@example.com"}
    doc[ENTERPRISE] = {"department": "Sales"}
    assert scim.post("Users", doc).status_code == 201
    candidate = tmp_path / "after.yaml"
    candidate.write_text(AFTER.format(slug=slug))
    cli.env["BRIDGE_POLICY_DIR"] = str(settings.policy_dir)
    return slug, candidate


def test_plan_keeps_group_case_and_a_move_to_all_is_no_loss(scim, settings, cli, tmp_path):
    """production -> all is a gain only; the group reads `Marketing` as in the file."""
    slug, candidate = _sales_user(scim, settings, cli, tmp_path)
    out = cli("policy", "plan", slug, str(candidate))
    assert out.exit_code == 0, out.output
    line = next(x for x in out.stdout.splitlines() if x.startswith("pat@example.com:"))
    assert line == (
        "pat@example.com: role media_library_user -> admin; +environment all; +group Marketing; "
        "+grant staging:folder:sales/:editor"
    )
    assert "1 users: 1 gain, 0 lose, 1 change role" in out.stdout
    data = json.loads(cli("policy", "plan", slug, str(candidate), "--json").stdout)
    assert data["lose"] == 0 and data["changes"][0]["gains"]["groups"] == ["Marketing"]
    assert data["changes"][0]["losses"]["environments"] == []


def test_explain_prints_for_people(scim, settings, cli, tmp_path):
    """No Python reprs of lists or dicts in `policy explain`'s readable output."""
    slug, candidate = _sales_user(scim, settings, cli, tmp_path)
    (settings.policy_dir / f"{slug}.yaml").write_text(candidate.read_text())
    out = cli("policy", "explain", slug, "--user", "pat@example.com")
    assert out.exit_code == 0, out.output
    assert "environments: all (rule sales)" in out.stdout
    assert "grant: editor on folder sales/ in staging to the user (rule sales)" in out.stdout
    assert (
        "grant: viewer on collection Brand in production to members of group Marketing "
        "(rule grants)" in out.stdout
    )
    head = out.stdout.split("why:")[0]
    assert "['" not in head and "{'" not in head
    (settings.policy_dir / f"{slug}.yaml").write_text(BEFORE.format(slug=slug))
    listed = cli("policy", "explain", slug, "--user", "pat@example.com")
    assert "environments: production (rule defaults)" in listed.stdout


def test_bodiless_204_has_no_content_type_and_members_omit_absent_display(scim):
    """A group PATCH answering 204 carries no Content-Type (every body is scim+json); members
    and User.groups without a display name omit `display` instead of sending null."""
    user = scim.post("Users", {"schemas": [USER], "userName": "nodisplay@example.com"}).json
    group = scim.post("Groups", {"schemas": [GROUP], "displayName": "Plain"}).json
    add = {"Operations": [{"op": "add", "path": "members", "value": [{"value": user["id"]}]}]}
    resp = scim.patch(f"Groups/{group['id']}", add)
    assert resp.status_code == 204 and not resp.get_data()
    assert "Content-Type" not in resp.headers and resp.headers["ETag"]
    members = scim.get(f"Groups/{group['id']}").json["members"]
    assert members == [
        {"value": user["id"], "$ref": members[0]["$ref"], "type": "User"}
    ]  # no display: the user has no displayName
    listed = scim.get(f"Users/{user['id']}").json["groups"]
    assert listed[0]["display"] == "Plain"
    deleted = scim.delete(f"Users/{user['id']}")
    assert deleted.status_code == 204 and "Content-Type" not in deleted.headers
