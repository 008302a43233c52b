"""The policy in the service: SCIM and SAML get the same decisions, losses remove access,
manual rows survive, plan matches apply, guards refuse, edits reload only when valid."""

import gc
import json
import os
import textwrap
import uuid

import pytest
from sqlalchemy import select

from bridge import events, idps, manual, planning, provisioning
from bridge.models import AuditEvent, Environment, Grant, User
from policies import IdpLink, Profile, Source
from tests.saml_idp import TestIdP

POLICY = """
account: {slug}
environments: [production, staging]
defaults: {{role: media_library_user, environments: [production]}}
roles: {{precedence: highest}}
rules:
  - name: admins
    when: {{groups: {{contains: cld-admins}}}}
    then: {{role: admin, environments: all, groups: [Platform]}}
  - name: marketing
    when: {{department: {{equals: Marketing}}}}
    then:
      groups: [Marketing]
      environments: [production, staging]
      grants: [{{environment: production, folder: "marketing/", level: editor}}]
grants:
  Marketing:
    - {{environment: production, folder: "brand/", level: viewer}}
{extra}
"""
ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


@pytest.fixture
def policy_file(settings, account):
    """Writes the account's policy file; returns a writer for later edits."""
    path = settings.policy_dir / f"{account.slug}.yaml"

    def write(text=None, extra=""):
        body = text if text is not None else POLICY.format(slug=account.slug, extra=extra)
        path.write_text(textwrap.dedent(body))
        stat = path.stat()  # make every edit visible even within one mtime tick
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        return path

    write()
    yield write
    path.unlink(missing_ok=True)


@pytest.fixture
def scim_acct(scim, account):
    assert scim.account.id == account.id
    return scim


def access(store, user_id):
    with store.read() as db:
        return provisioning.access_of(db, db.get(User, uuid.UUID(str(user_id))))


def test_scim_and_saml_profiles_get_the_same_decision(scim_acct, store, account, policy_file):
    """A SCIM group membership and a SAML groups attribute lead to the same access."""
    scim = scim_acct
    user = scim.post("Users", json={"userName": "scim-admin@example.com"}).json
    scim.post("Groups", json={"displayName": "cld-admins", "members": [{"value": user["id"]}]})
    saml = provisioning.provision(
        store,
        account.id,
        Profile(
            source=Source.SAML,
            user_name="saml-admin@example.com",
            attributes={
                "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups": ("cld-admins",)
            },
        ),
        actor="test",
    )
    via_scim, via_saml = access(store, user["id"]), access(store, saml.user_id)
    assert via_scim["role"] == via_saml["role"] == {"role": "admin", "provenance": "policy:admins"}
    assert (
        via_scim["environments"]
        == via_saml["environments"]
        == [{"environment": "all", "provenance": "policy:admins"}]
    )
    assert {"group": "Platform", "provenance": "policy:admins"} in via_scim["groups"]
    assert {"group": "Platform", "provenance": "policy:admins"} in via_saml["groups"]


def test_losing_the_idp_group_removes_what_it_gave(scim_acct, store, policy_file):
    """Removing a member from the IdP group takes away exactly the access that group gave."""
    scim = scim_acct
    user = scim.post("Users", json={"userName": "leaver@example.com"}).json
    group = scim.post(
        "Groups", json={"displayName": "cld-admins", "members": [{"value": user["id"]}]}
    ).json
    assert access(store, user["id"])["role"]["role"] == "admin"
    scim.patch(
        f"Groups/{group['id']}",
        json={"Operations": [{"op": "remove", "path": f'members[value eq "{user["id"]}"]'}]},
    )
    after = access(store, user["id"])
    assert after["role"] == {"role": "media_library_user", "provenance": "policy:defaults"}
    assert after["environments"] == [{"environment": "production", "provenance": "policy:defaults"}]
    assert all(g["group"] != "Platform" for g in after["groups"])


def test_membership_change_reevaluates_only_changed_members(scim_acct, store, account, policy_file):
    """Adding one member re-evaluates that member, not the group's other members."""
    scim = scim_acct
    first = scim.post("Users", json={"userName": "first@example.com"}).json
    second = scim.post("Users", json={"userName": "second@example.com"}).json
    group = scim.post(
        "Groups", json={"displayName": "cld-admins", "members": [{"value": first["id"]}]}
    ).json
    with store.read() as db:
        mark = db.scalar(
            select(AuditEvent.seq)
            .where(AuditEvent.account_id == account.id)
            .order_by(AuditEvent.seq.desc())
            .limit(1)
        )
    scim.patch(
        f"Groups/{group['id']}",
        json={"Operations": [{"op": "add", "path": "members", "value": [{"value": second["id"]}]}]},
    )
    with store.read() as db:
        events = db.scalars(
            select(AuditEvent).where(AuditEvent.account_id == account.id, AuditEvent.seq > mark)
        ).all()
    reevaluated = {e.target_id for e in events if e.action == "user.reevaluate"}
    assert reevaluated == {second["id"]}


def test_department_rule_with_grants_and_group_grants(scim_acct, store, account, policy_file, cli):
    """A rule's user grants apply at once; group grants land with `policy apply`."""
    scim = scim_acct
    user = scim.post(
        "Users", json={"userName": "mia@example.com", ENT: {"department": "Marketing"}}
    ).json
    got = access(store, user["id"])
    assert {
        "environment": "production",
        "kind": "folder",
        "path": "marketing/",
        "level": "editor",
        "provenance": "policy:marketing",
    } in got["grants"]
    assert {e["environment"] for e in got["environments"]} == {"production", "staging"}
    env = {**cli.env, "BRIDGE_POLICY_DIR": str(policy_file().parent)}
    result = type(cli)(env)("policy", "apply", account.slug)
    assert result.exit_code == 0, result.output
    with store.read() as db:
        grants = db.scalars(
            select(Grant).where(Grant.account_id == account.id, Grant.group_id.is_not(None))
        ).all()
    assert [(g.path, g.level, g.provenance) for g in grants] == [
        ("brand/", "viewer", "policy:grants")
    ]


def test_a_policy_that_changes_a_grant_level_changes_that_grant(
    scim_acct, store, account, policy_file, cli
):
    """Raising a rule's grant level in the policy: the user's next SCIM change answers 200 (it
    was a 409: the new row was inserted beside the old one, against the unique index) and leaves
    one row at the new level, with an access.changed event saying before and after. Lowering it
    again goes back. `policy apply` does the same for every user it reaches."""
    scim = scim_acct
    user = scim.post(
        "Users", json={"userName": "mia@example.com", ENT: {"department": "Marketing"}}
    ).json
    other = scim.post(
        "Users", json={"userName": "max@example.com", ENT: {"department": "Marketing"}}
    ).json

    def grants(user_id):
        return [(g["path"], g["level"]) for g in access(store, user_id)["grants"]]

    assert grants(user["id"]) == [("marketing/", "editor")]
    raised = POLICY.format(slug=account.slug, extra="")
    policy_file(raised.replace("level: editor", "level: manager"))
    patch = {"Operations": [{"op": "replace", "path": "title", "value": "Lead"}]}
    r = scim.patch(f"Users/{user['id']}", json=patch)
    assert r.status_code == 200, r.json
    assert grants(user["id"]) == [("marketing/", "manager")]
    with store.read() as db:
        found, _ = events.page(db, account.id, types=frozenset({"access.changed"}), limit=1000)
    (changed,) = [e for e in found if e.data["user"]["id"] == user["id"]]
    assert [g["level"] for g in changed.data["before"]["grants"]] == ["editor"]
    assert [g["level"] for g in changed.data["after"]["grants"]] == ["manager"]

    policy_file(raised.replace("level: editor", "level: viewer"))  # lowered: no more than viewer
    assert scim.patch(f"Users/{user['id']}", json=patch).status_code == 200
    assert grants(user["id"]) == [("marketing/", "viewer")]
    assert grants(other["id"]) == [("marketing/", "editor")]  # not yet reached
    env = {**cli.env, "BRIDGE_POLICY_DIR": str(policy_file().parent)}
    policy_file(raised.replace("level: editor", "level: viewer"))  # (policy_file() rewrote it)
    result = type(cli)(env)("policy", "apply", account.slug)
    assert result.exit_code == 0, result.output
    assert grants(other["id"]) == [("marketing/", "viewer")]
    with store.read() as db:
        rows = db.scalars(
            select(Grant.level).where(Grant.account_id == account.id, Grant.user_id.is_not(None))
        ).all()
    assert sorted(rows) == ["viewer", "viewer"]  # one row each, never two


def test_policy_apply_changes_a_group_grant_level(
    scim_acct, store, account, policy_file, cli, api_for, tmp_path
):
    """A group grant whose level the policy changes: `policy apply` updates the group's row in
    place (it failed on the unique index, retrying until it gave up), and the event feed says
    what the group's members now hold (group.grants_changed, before and after). A second apply
    changes and announces nothing."""
    scim = scim_acct
    scim.post("Users", json={"userName": "mia@example.com", ENT: {"department": "Marketing"}})
    env = {**cli.env, "BRIDGE_POLICY_DIR": str(policy_file().parent)}
    run = type(cli)(env)
    assert run("policy", "apply", account.slug).exit_code == 0

    def group_rows():
        with store.read() as db:
            return db.execute(
                select(Grant.path, Grant.level, Grant.provenance).where(
                    Grant.account_id == account.id, Grant.group_id.is_not(None)
                )
            ).all()

    def feed():
        r = api_for(account, "read").get("events", query_string={"type": "group.grants_changed"})
        assert r.status_code == 200, r.json
        return r.json["events"]

    assert group_rows() == [("brand/", "viewer", "policy:grants")]
    (first,) = feed()  # the SCIM create that put mia in Marketing brought the group's grant
    assert first["data"]["group"]["displayName"] == "Marketing"
    assert first["data"]["before"] == [] and first["actor"].startswith("scim:token:")
    edited = POLICY.format(slug=account.slug, extra="")
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(edited.replace("level: viewer", "level: editor"))
    planned = run("policy", "plan", account.slug, str(candidate))  # the preview says so first
    assert planned.exit_code == 0, planned.output
    line = "group Marketing (members now: 1): production folder brand/ viewer -> editor"
    assert f"{line} [policy:grants]\n1 users: 0 gain, 0 lose" in planned.output
    as_json = json.loads(run("policy", "plan", account.slug, str(candidate), "--json").stdout)
    assert as_json["group_grants"] == [
        {
            "group": "Marketing",
            "members": 1,
            "environment": "production",
            "kind": "folder",
            "path": "brand/",
            "before": "viewer",
            "after": "editor",
            "provenance": "policy:grants",
        }
    ]
    assert group_rows() == [("brand/", "viewer", "policy:grants")]  # planning wrote nothing
    policy_file(edited.replace("level: viewer", "level: editor"))
    result = run("policy", "apply", account.slug)
    assert result.exit_code == 0, result.output + result.stderr
    assert group_rows() == [("brand/", "editor", "policy:grants")]
    _, changed = feed()
    grant = {"environment": "production", "kind": "folder", "path": "brand/"}
    assert changed["data"]["group"] == first["data"]["group"]
    assert changed["data"]["before"] == [
        {**grant, "level": "viewer", "provenance": "policy:grants"}
    ]
    assert changed["data"]["after"] == [{**grant, "level": "editor", "provenance": "policy:grants"}]
    assert run("policy", "apply", account.slug).exit_code == 0
    assert len(feed()) == 2
    assert json.loads(run("policy", "plan", account.slug, "--json").stdout)["group_grants"] == []


def test_manual_rows_survive_reevaluation(scim_acct, store, account, policy_file, cli):
    """A manual grant and a manual role are untouched by apply and by SCIM changes."""
    scim = scim_acct
    user = scim.post("Users", json={"userName": "manual@example.com"}).json

    def manual(db):
        env = db.scalar(
            select(Environment).where(
                Environment.account_id == account.id, Environment.name == "staging"
            )
        )
        db.add(
            Grant(
                account_id=account.id,
                user_id=uuid.UUID(user["id"]),
                environment_id=env.id,
                kind="collection",
                path="Special",
                level="manager",
                provenance="manual",
            )
        )

    store.write(manual)
    scim.patch(
        f"Users/{user['id']}",
        json={"Operations": [{"op": "replace", "path": "title", "value": "x"}]},
    )
    env = {**cli.env, "BRIDGE_POLICY_DIR": str(policy_file().parent)}
    assert type(cli)(env)("policy", "apply", account.slug).exit_code == 0
    grants = access(store, user["id"])["grants"]
    assert {
        "environment": "staging",
        "kind": "collection",
        "path": "Special",
        "level": "manager",
        "provenance": "manual",
    } in grants


def test_plan_matches_what_apply_does(scim_acct, store, account, policy_file, cli, tmp_path):
    """`policy plan FILE` lists exactly the gains and losses `policy apply` then makes."""
    scim = scim_acct
    users = {
        name: scim.post(
            "Users", json={"userName": f"{name}@example.com", ENT: {"department": dept}}
        ).json["id"]
        for name, dept in (("ann", "Marketing"), ("ben", "Sales"), ("cy", "Marketing"))
    }
    scim.post("Groups", json={"displayName": "cld-admins", "members": [{"value": users["ben"]}]})
    new = POLICY.format(slug=account.slug, extra="").replace("equals: Marketing", "equals: Sales")
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(new)
    env = {**cli.env, "BRIDGE_POLICY_DIR": str(policy_file().parent)}
    run = type(cli)(env)
    planned = json.loads(run("policy", "plan", account.slug, str(candidate), "--json").stdout)
    assert planned["users"] == 3 and planned["refused"] is None
    before = {n: access(store, i) for n, i in users.items()}
    policy_file(new)
    assert run("policy", "apply", account.slug).exit_code == 0
    after = {n: access(store, i) for n, i in users.items()}

    def envs(a):
        return {e["environment"] for e in a["environments"]}

    for change in planned["changes"]:
        name = change["user"].split("@")[0]
        assert sorted(envs(after[name]) - envs(before[name])) == change["gains"]["environments"]
        assert sorted(envs(before[name]) - envs(after[name])) == change["losses"]["environments"]
    changed = {c["user"].split("@")[0] for c in planned["changes"]}
    assert changed == {"ann", "cy", "ben"}
    assert all(before[n] == after[n] for n in users if n not in changed)
    text = run("policy", "plan", account.slug).stdout
    assert "0 gain, 0 lose, 0 change role" in text  # applied: nothing left to do
    with store.read() as db:  # the event feed: policy.applied, then each user's access.changed
        wanted = frozenset({"policy.applied", "access.changed"})
        found, _ = events.page(db, account.id, types=wanted, limit=1000)
    last_apply = max(i for i, e in enumerate(found) if e.type == "policy.applied")
    assert found[last_apply].data["users_changing"] == 3
    assert {e.data["user"]["id"] for e in found[last_apply + 1 :]} == set(users.values())


CANDIDATE = """
account: {slug}
environments: [production, staging]
defaults: {{role: media_library_user, environments: [production]}}
roles: {{precedence: highest}}
rules:
  - name: admins
    when: {{groups: {{contains: CLD-Admins}}}}
    then: {{role: admin, environments: all, groups: [platform]}}
  - name: sales
    when: {{department: {{equals: Sales}}}}
    then:
      groups: [Marketing]
      environments: [staging]
      grants: [{{environment: staging, folder: "sales/", level: viewer}}]
  - name: pattern
    when: {{email: {{matches: "a.*b"}}}}
    then: {{role: billing}}
grants:
  Marketing:
    - {{environment: production, folder: "brand/", level: viewer}}
"""


def test_plan_lists_every_change_apply_makes(scim_acct, store, account, policy_file, tmp_path):
    """Over users of every shape (SCIM, stored SAML attributes, manual rows, inactive, a rule
    that errors, unchanged), each planned change is exactly what `apply` then does."""
    scim = scim_acct

    def user(name, **extra):
        return scim.post("Users", json={"userName": f"{name}@example.com", **extra}).json["id"]

    ids = {
        "ann": user("ann", **{ENT: {"department": "Marketing"}}),
        "ben": user("ben", **{ENT: {"department": "Sales"}}),
        "cy": user("cy", title="Clerk", phoneNumbers=[{"value": "+1 555 0100"}]),
        "dee": user("dee", active=False),
        "eve": user("eve", **{ENT: {"department": "Sales"}}),
        "fay": user("fay"),
    }
    for name, attributes in (
        ("sam", {"department": ("Sales",)}),  # a SAML login's attributes, kept on the user
        ("zed", {"email": ("a" * 5000 + "@x.com",)}),  # too long for `matches`: an error
    ):
        out = provisioning.provision(
            store,
            account.id,
            Profile(source=Source.SAML, user_name=f"{name}@example.com", attributes=attributes),
            actor="t",
        )
        ids[name] = str(out.user_id)
    scim.post(
        "Groups",
        json={
            "displayName": "cld-admins",
            "members": [{"value": ids[n]} for n in ("ben", "dee", "eve")],
        },
    )
    eve = uuid.UUID(ids["eve"])
    manual.set_role(store, account.id, eve, "technical_admin", actor="t")
    manual.set_environment(store, account.id, eve, "staging", present=True, actor="t")
    manual.set_user_grant(
        store,
        account.id,
        eve,
        manual.GrantSpec("production", "collection", "Special", "manager"),
        present=True,
        actor="t",
    )
    by_name = plan_then_apply(store, account, policy_file, tmp_path, CANDIDATE, ids)
    assert set(by_name) == {"ann", "ben", "eve", "sam", "zed"}
    assert by_name["zed"].errors
    assert by_name["eve"].role is None  # a manual role outranks the policy's
    assert planning.plan(store, account.slug).errors == 1


def plan_then_apply(store, account, policy_file, tmp_path, text, ids):
    """Plans `text` over the account, applies it, and checks that each planned Change is
    exactly what apply did and that users with no Change (or errors) kept their access;
    returns the changes by user name (before the @)."""
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(textwrap.dedent(text.format(slug=account.slug)))
    changes, collector = [], []
    frozen = gc.get_freeze_count()

    def found(change):
        changes.append(change)
        collector.append((gc.isenabled(), gc.get_freeze_count()))

    planned = planning.plan(
        store,
        account.slug,
        planning.load_candidate(str(candidate), account.slug),
        on_change=found,
    )
    assert planned.users == len(ids) and planned.refused is None
    assert planned.gaining == sum(any(c.gains.values()) for c in changes)
    assert planned.losing == sum(any(c.losses.values()) for c in changes)
    assert planned.role_changes == sum(c.role is not None for c in changes)
    assert planned.errors == sum(bool(c.errors) for c in changes)
    assert sorted(planned.changed_ids) == sorted(c.user_id for c in changes if not c.errors)
    # while plan runs, the collector runs too (for every thread) but the objects made before
    # plan began are set aside (frozen); after it, they are back
    assert collector and all(on and count > frozen for on, count in collector)
    assert gc.isenabled() and gc.get_freeze_count() == frozen
    before = {n: access(store, i) for n, i in ids.items()}
    policy_file(candidate.read_text())
    planning.apply(store, account.slug, actor="t")
    after = {n: access(store, i) for n, i in ids.items()}

    def rows(a):
        return {
            "environments": {e["environment"] for e in a["environments"]},
            "groups": {g["group"] for g in a["groups"]},
            "grants": {
                f"{g['environment']}:{g['kind']}:{g['path']}:{g['level']}" for g in a["grants"]
            },
        }

    by_name = {c.user_name.split("@")[0]: c for c in changes}
    assert len(by_name) == len(changes)
    for name in ids:
        change = by_name.get(name)
        if change is None or change.errors:  # no Change, no write; errors keep access
            assert before[name] == after[name], name
            continue
        was, now = rows(before[name]), rows(after[name])
        role = (before[name]["role"] or {}).get("role"), (after[name]["role"] or {}).get("role")
        assert change.role == (role if role[0] != role[1] else None), name
        for kind in ("environments", "groups", "grants"):
            assert change.gains[kind] == sorted(now[kind] - was[kind]), (name, kind)
            lost = was[kind] - now[kind]
            if kind == "environments" and "all" in now[kind]:
                lost = set()  # `all` covers every environment: plan shows no loss
            assert change.losses[kind] == sorted(lost), (name, kind)
    return by_name


def test_plans_at_once_thaw_the_heap_once_and_a_frozen_heap_stays_frozen(
    scim_acct, store, account, policy_file, tmp_path
):
    """The first plan to start freezes the older objects and the last to end thaws them (a
    plan started inside another keeps them frozen); a heap frozen before any plan (a
    pre-fork server's) is neither frozen further nor thawed."""
    for name in ("a", "b"):
        scim_acct.post("Users", json={"userName": f"{name}@example.com"})
    path = tmp_path / "candidate.yaml"  # every user changes role
    path.write_text(
        textwrap.dedent(POLICY.format(slug=account.slug, extra="")).replace(
            "role: media_library_user", "role: billing"
        )
    )
    candidate = planning.load_candidate(str(path), account.slug)
    inner = []

    def nested(change):
        if not inner:
            inner.append(planning.plan(store, account.slug, candidate).users)
            inner.append(gc.get_freeze_count() > 0)  # still frozen: the outer plan runs

    assert gc.get_freeze_count() == 0
    assert planning.plan(store, account.slug, candidate, on_change=nested).users == 2
    assert inner == [2, True] and gc.get_freeze_count() == 0
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        seen = []
        planning.plan(
            store, account.slug, candidate, on_change=lambda c: seen.append(gc.get_freeze_count())
        )
        # not frozen further (the count only falls, as frozen objects are freed), nor thawed
        assert seen and max(seen) <= frozen and 0 < gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()


INPUTS = """
account: {slug}
environments: [production, staging]
defaults: {{role: media_library_user, environments: [production]}}
roles: {{precedence: highest}}
inputs:
  phone: {{scim: phoneNumbers.value}}
  state: {{scim: active}}
  team: {{saml: {{from: [team], split: ","}}, scim: title}}
rules:
  - name: partner
    when: {{email_domain: {{in: [partner.example]}}}}
    then: {{role: billing, environments: [staging]}}
  - name: uk
    when: {{phone: {{glob: "+44*"}}}}
    then: {{groups: [UK]}}
  - name: okta
    when: {{all: [{{idp: {{equals: "http://www.okta.com/exk1"}}}}, {{source: {{equals: saml}}}}]}}
    then: {{role: admin}}
  - name: ops
    when: {{team: {{contains: Ops}}}}
    then:
      role: technical_admin
      grants: [{{environment: staging, folder: "ops/", level: editor}}]
  - name: inactive
    when: {{state: {{equals: "false"}}}}
    then: {{environments: [staging]}}
  - name: x-names
    when: {{userName: {{matches: "x.*"}}}}
    then: {{environments: all}}
"""


def test_plan_reads_each_input_as_apply_does(scim_acct, store, account, policy_file, tmp_path):
    """Inputs read from every place a stored user keeps them (e-mails in primary-then-position
    order or none, phone numbers, active, title, stored SAML attributes and IdP, userName):
    each planned change is exactly what apply then does."""
    scim = scim_acct

    def user(name, **extra):
        made = scim.post("Users", json={"userName": name, **extra})
        assert made.status_code == 201, made.json
        return made.json["id"]

    def mail(*values, primary=None):
        return [{"value": v, "primary": i == primary} for i, v in enumerate(values)]

    ids = {
        "pri": user(
            "pri@acme.example", emails=mail("a@other.example", "b@partner.example", primary=1)
        ),
        "first": user("first@acme.example", emails=mail("c@partner.example", "d@other.example")),
        "second": user("second@acme.example", emails=mail("e@other.example", "f@partner.example")),
        "fallback": user("fallback@partner.example"),  # no e-mail: userName's domain
        "xavier": user("xavier"),  # no e-mail and no @: no email_domain at all
        "mixed": user("mixed@acme.example", emails=mail("G@PARTNER.EXAMPLE")),
        "uk": user("uk@acme.example", phoneNumbers=[{"value": "+1 555"}, {"value": "+44 20 7"}]),
        "us": user("us@acme.example", phoneNumbers=[{"value": "+1 555"}]),
        "ops": user("ops@acme.example", title=" Ops "),
        "off": user("off@acme.example", active=False),
    }
    for i, entity_id in enumerate(("http://www.okta.com/exk1", "http://idp.other.example")):
        idps.add(store, account.slug, TestIdP(entity_id).metadata_xml(), name=f"i{i}", actor="t")
    for name, attributes, idp in (
        ("okta", {"team": ("Dev,Ops",)}, "http://www.okta.com/exk1"),
        ("other", {"email": ("h@partner.example",)}, "http://idp.other.example"),
        ("plainsaml", {"title": ("Ops",)}, None),  # the SAML name is also team's SCIM path
    ):
        out = provisioning.provision(
            store,
            account.id,
            Profile(
                source=Source.SAML,
                user_name=f"{name}@acme.example",
                idp=IdpLink(idp, f"{name}@acme.example") if idp else None,
                attributes=attributes,
            ),
            actor="t",
        )
        ids[name] = str(out.user_id)
    policy_file(f"account: {account.slug}\nenvironments: [production, staging]\n")
    by_name = plan_then_apply(store, account, policy_file, tmp_path, INPUTS, ids)
    roles = {n: access(store, i)["role"]["role"] for n, i in ids.items()}
    for partner in ("pri", "first", "fallback", "mixed", "other"):
        assert roles[partner] == "billing", partner
    for name in ("second", "xavier", "us"):  # no partner first e-mail
        assert roles[name] == "media_library_user", name
    assert roles["okta"] == "admin" and roles["ops"] == roles["plainsaml"] == "technical_admin"
    assert by_name["uk"].gains["groups"] == ["UK"] and "us" not in by_name
    assert by_name["xavier"].gains["environments"] == ["all"]
    assert "staging" in by_name["off"].gains["environments"]
    assert not any(c.errors for c in by_name.values())
    assert planning.plan(store, account.slug).users == len(ids)


def test_guard_refuses_plan_and_apply(store, account, policy_file, cli):
    """A policy that would leave no master_admin is refused by plan and by apply."""
    path = policy_file(extra="guards: {keep_at_least_one: master_admin}")
    provisioning.provision(
        store, account.id, Profile(source=Source.SCIM, user_name="someone@example.com"), actor="t"
    )
    run = type(cli)({**cli.env, "BRIDGE_POLICY_DIR": str(path.parent)})
    plan = run("policy", "plan", account.slug)
    assert plan.exit_code == 1 and "keep_at_least_one" in plan.stderr
    applied = run("policy", "apply", account.slug)
    assert applied.exit_code == 1 and "not applied" in applied.stderr


def test_broken_edit_keeps_last_good_policy(scim_acct, store, account, policy_file, client):
    """An invalid edit is ignored (and reported by /readyz); a valid one is picked up live."""
    scim = scim_acct
    policy_file(POLICY.format(slug=account.slug, extra="").replace("cld-admins", "ops-admins"))
    assert f"{account.slug}.yaml" not in client.get("/readyz").json.get("policy_errors", {})
    policy_file("account: [this is not\n")
    ready = client.get("/readyz").json
    assert f"{account.slug}.yaml" in ready["policy_errors"] and ready["status"] == "ok"
    user = scim.post("Users", json={"userName": "ops@example.com"}).json
    scim.post("Groups", json={"displayName": "ops-admins", "members": [{"value": user["id"]}]})
    assert access(store, user["id"])["role"]["role"] == "admin"  # the last good version decided
    policy_file()  # valid again, and different: admins are cld-admins once more
    assert f"{account.slug}.yaml" not in client.get("/readyz").json.get("policy_errors", {})
    scim.patch(
        f"Users/{user['id']}",
        json={"Operations": [{"op": "replace", "path": "title", "value": "t"}]},
    )
    assert access(store, user["id"])["role"]["role"] == "media_library_user"


def test_evaluation_error_keeps_access_and_says_why(store, account, policy_file):
    """A rule that errors for one user leaves that user's access as it was, and records why."""
    policy_file(
        POLICY.format(slug=account.slug, extra="").replace(
            "when: {groups: {contains: cld-admins}}", 'when: {email: {matches: "a.*b"}}'
        )
    )
    first = provisioning.provision(
        store, account.id, Profile(source=Source.SCIM, user_name="long@example.com"), actor="t"
    )
    before = access(store, first.user_id)
    huge = Profile(
        source=Source.SAML,
        user_name="long@example.com",
        attributes={"email": ("a" * 5000 + "@x.com",)},
    )
    out = provisioning.provision(store, account.id, huge, actor="t")
    assert out.decision is not None and not out.decision.ok
    assert access(store, first.user_id) == before
    with store.read() as db:
        event = db.scalars(
            select(AuditEvent)
            .where(AuditEvent.account_id == account.id, AuditEvent.action == "user.policy_error")
            .order_by(AuditEvent.seq)
        ).all()[-1]
    assert event.after["access"] == "kept" and event.after["errors"]


def test_policy_check_cli(cli, tmp_path):
    """`policy check` passes a valid file with passing tests and names file:line:col otherwise."""
    good = tmp_path / "good.yaml"
    good.write_text(POLICY.format(slug="good", extra=""))
    ok = cli("policy", "check", str(good))
    assert ok.exit_code == 0 and "valid" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(POLICY.format(slug="bad", extra="").replace("role: admin", "role: admn"))
    broken = cli("policy", "check", str(bad))
    assert broken.exit_code == 1
    assert (
        f"{bad}:" in broken.stderr and "admn" in broken.stderr and "did you mean" in broken.stderr
    )
    failing = tmp_path / "failing.yaml"
    failing.write_text(
        POLICY.format(
            slug="failing",
            extra=textwrap.dedent("""
        tests:
          - name: wrong expectation
            profile: {userName: x@example.com, groups: [cld-admins]}
            expect: {role: billing}
        """),
        )
    )
    result = cli("policy", "check", str(failing))
    assert result.exit_code == 1 and "wrong expectation" in result.stderr


def test_policy_explain_cli(scim_acct, account, policy_file, cli, tmp_path):
    """`policy explain` shows the decision and each rule's reason, for a user or a profile."""
    scim = scim_acct
    scim.post("Users", json={"userName": "exp@example.com", ENT: {"department": "Marketing"}})
    run = type(cli)({**cli.env, "BRIDGE_POLICY_DIR": str(policy_file().parent)})
    text = run("policy", "explain", account.slug, "--user", "EXP@example.com").stdout
    assert "role: media_library_user (rule defaults)" in text
    assert "group: Marketing (rule marketing)" in text
    profile = tmp_path / "p.json"
    profile.write_text(
        json.dumps(
            {
                "source": "saml",
                "userName": "p@example.com",
                "attributes": {"groups": ["cld-admins"]},
            }
        )
    )
    data = json.loads(
        run("policy", "explain", account.slug, "--profile", str(profile), "--json").stdout
    )
    assert data["role"] == {"value": "admin", "rule": "admins"}
    assert run("policy", "explain", account.slug, "--user", "nobody@example.com").exit_code == 1
    missing = run("policy", "explain", account.slug)
    assert missing.exit_code == 2


def test_broken_file_without_good_version_grants_nothing(store, account, policy_file):
    """A policy that never loaded gives new users no access at all, never the defaults."""
    policy_file("rules: [\n")
    out = provisioning.provision(
        store, account.id, Profile(source=Source.SCIM, user_name="nobody@example.com"), actor="t"
    )
    got = access(store, out.user_id)
    assert got["role"] is None and got["environments"] == [] and got["grants"] == []


def test_membership_change_skips_policies_that_ignore_groups(scim_acct, store, account):
    """Without a policy that reads groups, a membership change re-evaluates nobody."""
    scim = scim_acct
    user = scim.post("Users", json={"userName": "plain@example.com"}).json
    scim.post("Groups", json={"displayName": "Any", "members": [{"value": user["id"]}]})
    with store.read() as db:
        actions = db.scalars(
            select(AuditEvent.action).where(AuditEvent.account_id == account.id)
        ).all()
    assert "group.create" in actions and "user.reevaluate" not in actions
