"""CLI parity: users list|show|explain, access grant|revoke|set-role, groups list|show, over the
same services as the API (provenance shown, guards enforced, changes audited as the CLI user)."""

import textwrap

from sqlalchemy import select

from bridge.models import AuditEvent

ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def test_grant_show_explain_and_revoke(cli, scim, store, account):
    """A manual grant given with `access grant` shows in `users show` with its provenance and in
    `users explain` with why; `access revoke` takes it away; both are audited as the CLI."""
    scim.post("Users", json={"userName": "rae@example.com"})
    r = cli(
        "access",
        "grant",
        account.slug,
        "rae@example.com",
        "--environment",
        "production",
        "--path",
        "marketing/",
        "--level",
        "editor",
    )
    assert r.exit_code == 0, r.output
    shown = cli("users", "show", account.slug, "RAE@example.com").output
    assert "grant: production folder marketing/ editor [manual]" in shown
    explained = cli("users", "explain", account.slug, "rae@example.com").output
    assert "grant production:folder:marketing/:editor: given by hand" in explained
    r = cli(
        "access",
        "revoke",
        account.slug,
        "rae@example.com",
        "--environment",
        "production",
        "--path",
        "marketing/",
    )
    assert r.exit_code == 0, r.output
    assert "marketing/" not in cli("users", "show", account.slug, "rae@example.com").output
    again = cli(
        "access",
        "revoke",
        account.slug,
        "rae@example.com",
        "--environment",
        "production",
        "--path",
        "marketing/",
    )
    assert again.exit_code == 1 and "no manual grant" in again.output
    with store.read() as db:
        actors = set(
            db.scalars(
                select(AuditEvent.actor).where(
                    AuditEvent.account_id == account.id, AuditEvent.action == "user.manual_access"
                )
            )
        )
    assert len(actors) == 1 and actors.pop().startswith("cli")


def test_set_role_and_guard(cli, scim, settings, account):
    """`access set-role` sets and clears a manual role; the guard refuses clearing the last
    master_admin, naming it, with exit status 1."""
    cli.env["BRIDGE_POLICY_DIR"] = str(settings.policy_dir)
    (settings.policy_dir / f"{account.slug}.yaml").write_text(
        textwrap.dedent(f"""
        account: {account.slug}
        environments: [production]
        defaults: {{role: media_library_user, environments: [production]}}
        guards: {{keep_at_least_one: [master_admin]}}
    """)
    )
    try:
        scim.post("Users", json={"userName": "top@example.com"})
        r = cli("access", "set-role", account.slug, "top@example.com", "master_admin")
        assert r.exit_code == 0 and "master_admin [manual]" in r.output
        r = cli("access", "set-role", account.slug, "top@example.com", "--clear")
        assert r.exit_code == 1 and "keep_at_least_one: master_admin" in r.output
        assert (
            "role: master_admin [manual]"
            in cli("users", "show", account.slug, "top@example.com").output
        )
        r = cli("access", "set-role", account.slug, "top@example.com")
        assert r.exit_code == 2  # neither a role nor --clear
    finally:
        (settings.policy_dir / f"{account.slug}.yaml").unlink()


def test_users_list_filters_and_groups(cli, scim, account):
    """`users list` filters; `groups list|show` show members with provenance; a group grant."""
    uid = scim.post("Users", json={"userName": "ola@example.com"}).json["id"]
    scim.post("Users", json={"userName": "per@example.com", "active": False})
    scim.post("Groups", json={"displayName": "Designers", "members": [{"value": uid}]})
    listed = cli("users", "list", account.slug, "--inactive").output
    assert "per@example.com" in listed and "ola@example.com" not in listed
    assert "ola@example.com" in cli("users", "list", account.slug, "--group", "designers").output
    r = cli(
        "access",
        "grant",
        account.slug,
        "--group",
        "Designers",
        "--environment",
        "staging",
        "--path",
        "assets/",
        "--level",
        "viewer",
    )
    assert r.exit_code == 0, r.output
    assert "Designers\tscim\t1 members" in cli("groups", "list", account.slug).output
    shown = cli("groups", "show", account.slug, "designers").output
    assert "member: ola@example.com [scim]" in shown
    assert "grant: staging folder assets/ viewer [manual]" in shown
    held = cli("users", "show", account.slug, "ola@example.com").output
    assert "[group:Designers] (group grant: manual)" in held
    bad = cli(
        "access",
        "grant",
        account.slug,
        "ola@example.com",
        "--group",
        "Designers",
        "--environment",
        "staging",
        "--path",
        "x/",
        "--level",
        "viewer",
    )
    assert bad.exit_code == 2 and "exactly one" in bad.output
    missing = cli("users", "show", account.slug, "ghost@example.com")
    assert missing.exit_code == 1 and "no user 'ghost@example.com'" in missing.output
