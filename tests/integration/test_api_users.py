"""Users over the API: effective access with the provenance of every row, explain, manual access
that survives SCIM changes and policy applies, guards, who-has queries, stable pagination."""

import textwrap

import pytest
from sqlalchemy import select

from bridge import planning, provisioning
from bridge.models import Account, AuditEvent
from tests import factories
from tests.integration.api_client import problem_type

ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
POLICY = """
account: {slug}
environments: [production, staging]
defaults: {{role: media_library_user, environments: [production]}}
roles: {{precedence: highest}}
rules:
  - name: admins
    when: {{groups: {{contains: cld-admins}}}}
    then: {{role: admin, environments: all}}
  - name: marketing
    when: {{department: {{equals: Marketing}}}}
    then:
      groups: [Marketing]
      environments: [production, staging]
      grants: [{{environment: production, folder: "marketing/campaigns/", level: editor}}]
grants:
  Marketing:
    - {{environment: production, folder: "marketing/", level: viewer}}
{guards}
"""


@pytest.fixture
def policy(settings, account):
    path = settings.policy_dir / f"{account.slug}.yaml"

    def write(guards=""):
        path.write_text(textwrap.dedent(POLICY.format(slug=account.slug, guards=guards)))
        return path

    write()
    yield write
    path.unlink(missing_ok=True)


def rows(doc, kind):
    return {(r.get("environment") or r.get("group"), r["provenance"]) for r in doc["access"][kind]}


def audit_seq(store, account):
    with store.read() as db:
        return db.get(Account, account.id).audit_seq


def test_every_row_carries_its_provenance(api, scim, policy, store, account):
    """A user's document shows each row with where it came from: policy rules, SCIM, manual,
    and grants held through a group as group:<name> with the group grant's provenance."""
    user = scim.post(
        "Users", json={"userName": "mia@example.com", ENT: {"department": "Marketing"}}
    )
    uid = user.json["id"]
    scim.post("Groups", json={"displayName": "cld-admins", "members": [{"value": uid}]})
    planning.apply(store, account.slug, actor="test")  # the policy's group grants exist
    assert (
        api.post(
            f"users/{uid}/grants",
            json={"environment": "staging", "path": "drafts/", "level": "contributor"},
        ).status_code
        == 200
    )
    doc = api.get(f"users/{uid}").json
    assert doc["access"]["role"] == {"role": "admin", "provenance": "policy:admins"}
    assert rows(doc, "environments") >= {("all", "policy:admins")}
    assert ("cld-admins", "scim") in rows(doc, "groups")
    assert ("Marketing", "policy:marketing") in rows(doc, "groups")
    grants = {
        (g["path"], g["level"], g["provenance"], g["source"]) for g in doc["access"]["grants"]
    }
    assert grants == {
        ("marketing/campaigns/", "editor", "policy:marketing", None),
        ("drafts/", "contributor", "manual", None),
        ("marketing/", "viewer", "group:Marketing", "policy:grants"),
    }


def test_access_rows_are_listed_by_name_then_provenance(api, api_for, scim, policy, store, account):
    """A user's environments and own grants come in a stable order, by environment name (then
    kind, path, level) and then provenance, not in the order they were given or created."""
    uid = scim.post(
        "Users", json={"userName": "ida@example.com", ENT: {"department": "Marketing"}}
    ).json["id"]
    planning.apply(store, account.slug, actor="test")
    api.put(f"users/{uid}/environments/production")  # the same environment, given by hand later
    r = api_for(account, "admin").post("environments", json={"name": "alpha"})  # created last
    assert r.status_code == 201, r.json
    for env, path in (("production", "zz/"), ("production", "aa/"), ("alpha", "zz/")):
        grant = {"environment": env, "path": path, "level": "viewer"}
        assert api.post(f"users/{uid}/grants", json=grant).status_code == 200
    access = api.get(f"users/{uid}").json["access"]
    assert access["environments"] == [
        {"environment": "production", "provenance": "manual"},
        {"environment": "production", "provenance": "policy:marketing"},
        {"environment": "staging", "provenance": "policy:marketing"},
    ]
    own = [
        (g["environment"], g["path"], g["provenance"])
        for g in access["grants"]
        if g["source"] is None
    ]
    assert own == [
        ("alpha", "zz/", "manual"),
        ("production", "aa/", "manual"),
        ("production", "marketing/campaigns/", "policy:marketing"),
        ("production", "zz/", "manual"),
    ]


def test_a_grant_in_an_environment_the_account_lacks_gives_nothing_and_skips_nothing(
    api, scim, policy, settings, account
):
    """A rule granting in an environment the policy names but the account lacks gives nothing
    there, and the rule's other grants are still given (the file replaces `policy`'s, which
    removes it after the test)."""
    (settings.policy_dir / f"{account.slug}.yaml").write_text(
        textwrap.dedent(
            f"""
            account: {account.slug}
            environments: [production, qa]
            defaults: {{role: media_library_user, environments: [production]}}
            rules:
              - name: testers
                when: {{department: {{equals: QA}}}}
                then:
                  grants:
                    - {{environment: qa, folder: "runs/", level: editor}}
                    - {{environment: production, folder: "reports/", level: viewer}}
            """
        )
    )
    uid = scim.post("Users", json={"userName": "quinn@example.com", ENT: {"department": "QA"}})
    access = api.get(f"users/{uid.json['id']}").json["access"]
    assert [
        (g["environment"], g["path"], g["level"], g["provenance"]) for g in access["grants"]
    ] == [("production", "reports/", "viewer", "policy:testers")]
    assert access["environments"] == [
        {"environment": "production", "provenance": "policy:defaults"}
    ]


def test_a_group_the_policy_gives_brings_its_grants_with_the_first_member(api, scim, policy):
    """The first user the policy puts in a group brings the group's declared grants into being
    at once, without a policy apply across the account."""
    uid = scim.post(
        "Users", json={"userName": "gus@example.com", ENT: {"department": "Marketing"}}
    ).json["id"]
    grants = api.get(f"users/{uid}").json["access"]["grants"]
    assert {(g["path"], g["level"], g["provenance"], g["source"]) for g in grants} == {
        ("marketing/campaigns/", "editor", "policy:marketing", None),
        ("marketing/", "viewer", "group:Marketing", "policy:grants"),
    }


def test_each_declared_group_grant_is_its_own_row(api, scim, policy, settings, account):
    """Group grants that differ only in group, environment, kind or path are each given when
    the first member arrives; the groups the policy creates are shown as policy-managed."""
    (settings.policy_dir / f"{account.slug}.yaml").write_text(
        textwrap.dedent(
            f"""
            account: {account.slug}
            environments: [production, staging]
            defaults: {{role: media_library_user, environments: [production]}}
            rules:
              - name: marketing
                when: {{department: {{equals: Marketing}}}}
                then: {{groups: [Marketing, Design]}}
            grants:
              Marketing:
                - {{environment: production, folder: "marketing/", level: viewer}}
                - {{environment: production, folder: "brand/", level: viewer}}
                - {{environment: staging, folder: "marketing/", level: viewer}}
                - {{environment: production, collection: "marketing/", level: viewer}}
              Design:
                - {{environment: production, folder: "marketing/", level: viewer}}
            """
        )
    )
    uid = scim.post(
        "Users", json={"userName": "hal@example.com", ENT: {"department": "Marketing"}}
    ).json["id"]
    grants = api.get(f"users/{uid}").json["access"]["grants"]
    assert sorted((g["provenance"], g["environment"], g["kind"], g["path"]) for g in grants) == [
        ("group:Design", "production", "folder", "marketing/"),
        ("group:Marketing", "production", "collection", "marketing/"),
        ("group:Marketing", "production", "folder", "brand/"),
        ("group:Marketing", "production", "folder", "marketing/"),
        ("group:Marketing", "staging", "folder", "marketing/"),
    ]
    listed = api.get("groups").json["groups"]
    assert {(g["display_name"], g["managed_by"]) for g in listed} == {
        ("Design", "policy"),
        ("Marketing", "policy"),
    }


def test_a_manual_group_grant_does_not_stand_in_for_the_policys(api, scim, settings, account):
    """A group's manual grant on a folder the policy then also grants does not stand in for
    the policy's own row: the next member's evaluation adds it, each with its provenance."""
    path = settings.policy_dir / f"{account.slug}.yaml"

    def write(folder):
        path.write_text(
            textwrap.dedent(
                f"""
                account: {account.slug}
                environments: [production]
                defaults: {{role: media_library_user, environments: [production]}}
                rules:
                  - name: marketing
                    when: {{department: {{equals: Marketing}}}}
                    then: {{groups: [Marketing]}}
                grants:
                  Marketing:
                    - {{environment: production, folder: "{folder}", level: viewer}}
                """
            )
        )

    def member(name):
        doc = {"userName": f"{name}@example.com", ENT: {"department": "Marketing"}}
        return scim.post("Users", json=doc).json["id"]

    def rows_of(uid):
        grants = api.get(f"users/{uid}").json["access"]["grants"]
        return sorted((g["path"], g["level"], g["source"]) for g in grants)

    write("brand/")
    first = member("ann")  # the policy makes the group, with its grant on brand/
    group = next(g for g in api.get("groups").json["groups"] if g["display_name"] == "Marketing")
    manual = {"environment": "production", "path": "marketing/", "level": "manager"}
    assert api.post(f"groups/{group['id']}/grants", json=manual).status_code in (200, 201)
    write("marketing/")  # another length: the file is read again
    member("bo")
    assert rows_of(first) == [
        ("brand/", "viewer", "policy:grants"),
        ("marketing/", "manager", "manual"),
        ("marketing/", "viewer", "policy:grants"),
    ]


def test_explain_gives_the_rules_and_every_stored_row(api, scim, policy, account):
    """explain answers rule by rule, and says why each stored row is there."""
    uid = scim.post(
        "Users", json={"userName": "eve@example.com", ENT: {"department": "Marketing"}}
    ).json["id"]
    api.put(f"users/{uid}/environments/staging")
    body = api.get(f"users/{uid}/explain").json
    assert body["policy"].endswith(f"{account.slug}.yaml")
    steps = {s["rule"]: s["matched"] for s in body["decision"]["explanation"]}
    assert steps["marketing"] is True and steps["admins"] is False
    reasons = {(r["what"], r["value"], r["why"]) for r in body["rows"]}
    assert ("environment", "staging", "given by hand (API, console or CLI)") in reasons
    assert ("group", "Marketing", "policy rule 'marketing'") in reasons


def test_manual_access_survives_scim_changes_and_policy_apply(api, scim, policy, store, account):
    """Manual role, environment and grant stay through a SCIM update and a policy apply."""
    uid = scim.post("Users", json={"userName": "sam@example.com"}).json["id"]
    api.put(f"users/{uid}/role", json={"role": "reports"})
    api.put(f"users/{uid}/environments/staging")
    api.post(
        f"users/{uid}/grants",
        json={"environment": "production", "path": "legal/", "level": "manager"},
    )
    scim.patch(
        f"Users/{uid}",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "value": {ENT + ":department": "Marketing"}}],
        },
    )
    planning.apply(store, account.slug, actor="test")
    doc = api.get(f"users/{uid}").json
    assert doc["access"]["role"] == {"role": "reports", "provenance": "manual"}
    assert ("staging", "manual") in rows(doc, "environments")
    assert ("Marketing", "policy:marketing") in rows(doc, "groups")  # the SCIM change applied
    assert ("legal/", "manual") in {(g["path"], g["provenance"]) for g in doc["access"]["grants"]}
    # Clearing the manual role hands the role back to the policy at once.
    cleared = api.delete(f"users/{uid}/role").json
    assert cleared["access"]["role"] == {
        "role": "media_library_user",
        "provenance": "policy:defaults",
    }


def test_guard_refuses_removing_the_last_master_admin(api, scim, policy, store, account):
    """Clearing the only master_admin's manual role is a 409 naming the guard; nothing changes."""
    policy(guards="guards: {keep_at_least_one: [master_admin]}")
    uid = scim.post("Users", json={"userName": "boss@example.com"}).json["id"]
    other = scim.post("Users", json={"userName": "deputy@example.com"}).json["id"]
    assert api.put(f"users/{uid}/role", json={"role": "master_admin"}).status_code == 200
    before = audit_seq(store, account)
    for r in (
        api.delete(f"users/{uid}/role"),
        api.put(f"users/{uid}/role", json={"role": "admin"}),
    ):
        assert r.status_code == 409 and problem_type(r) == "guard-refused"
        assert r.json["guard"] == "keep_at_least_one: master_admin"
    assert audit_seq(store, account) == before
    assert api.get(f"users/{uid}").json["access"]["role"]["role"] == "master_admin"
    api.put(f"users/{other}/role", json={"role": "master_admin"})
    assert api.delete(f"users/{uid}/role").status_code == 200  # another one is left now


def test_guard_lets_changes_through_that_take_no_holder_away(api, scim, policy, store, account):
    """The guard declared and nobody holding master_admin (a new account): manual changes that
    take no holder away go through (a grant, another role, naming the first master_admin);
    taking the role from its only holder is then refused, and nothing is written."""
    policy(guards="guards: {keep_at_least_one: [master_admin]}")
    uid = scim.post("Users", json={"userName": "ann@example.com"}).json["id"]
    boss = scim.post("Users", json={"userName": "boss@example.com"}).json["id"]
    grant = {"environment": "production", "path": "a/", "level": "viewer"}
    assert api.post(f"users/{uid}/grants", json=grant).status_code in (200, 201)
    assert api.put(f"users/{uid}/role", json={"role": "admin"}).status_code == 200
    assert api.put(f"users/{boss}/role", json={"role": "master_admin"}).status_code == 200
    before = audit_seq(store, account)
    refused = api.put(f"users/{boss}/role", json={"role": "admin"})
    assert refused.status_code == 409 and refused.json["guard"] == "keep_at_least_one: master_admin"
    assert audit_seq(store, account) == before
    assert api.get(f"users/{boss}").json["access"]["role"]["role"] == "master_admin"


def test_manual_changes_are_audited_with_the_key(api, store, account):
    """A manual grant is one audit event, actor api:key:<id>, with before and after."""
    uid = provisioning.provision(store, account.id, factories.profile(), actor="t").user_id
    api.post(
        f"users/{uid}/grants", json={"environment": "production", "path": "a/", "level": "viewer"}
    )
    with store.read() as db:
        event = db.scalars(
            select(AuditEvent).where(
                AuditEvent.account_id == account.id, AuditEvent.action == "user.manual_access"
            )
        ).one()
    assert event.actor == f"api:key:{api.key_id}"
    assert (
        event.after["access"]["grants"][0]["path"] == "a/" and not event.before["access"]["grants"]
    )


def test_removing_what_is_not_manual_is_refused(api, scim, policy):
    """Removing a grant or environment the user holds only through the policy is a 404: the
    policy's rows are the policy's."""
    uid = scim.post(
        "Users", json={"userName": "pol@example.com", ENT: {"department": "Marketing"}}
    ).json["id"]
    r = api.delete(
        f"users/{uid}/grants",
        query_string={"environment": "production", "path": "marketing/campaigns/"},
    )
    assert r.status_code == 404 and "no manual grant" in r.json["detail"]
    r = api.delete(f"users/{uid}/environments/production")
    assert r.status_code == 404
    r = api.put(f"users/{uid}/environments/moon")
    assert r.status_code == 404 and "moon" in r.json["detail"]


def test_who_has_access_to_a_folder_and_why(api, scim, policy, store, account):
    """Who can reach marketing/ in production: through the group, and by a manual grant."""
    mia = scim.post(
        "Users", json={"userName": "mia@example.com", ENT: {"department": "Marketing"}}
    ).json["id"]
    bob = scim.post("Users", json={"userName": "bob@example.com"}).json["id"]
    scim.post("Users", json={"userName": "nobody@example.com"})
    planning.apply(store, account.slug, actor="test")
    api.post(
        f"users/{bob}/grants",
        json={"environment": "production", "path": "marketing/", "level": "editor"},
    )
    body = api.get("access", query_string={"environment": "production", "path": "marketing/"}).json
    got = {
        (h["user_name"], h["path"], h["level"], h["provenance"], h["source"])
        for h in body["holders"]
    }
    assert got == {
        ("bob@example.com", "marketing/", "editor", "manual", None),
        ("mia@example.com", "marketing/", "viewer", "group:Marketing", "policy:grants"),
    }
    deeper = api.get(
        "access", query_string={"environment": "production", "path": "marketing/campaigns/x"}
    ).json
    assert ("mia@example.com", "marketing/campaigns/", "editor") in {
        (h["user_name"], h["path"], h["level"]) for h in deeper["holders"]
    }
    api.delete(
        f"users/{bob}/grants", query_string={"environment": "production", "path": "marketing/"}
    )
    body = api.get("access", query_string={"environment": "production", "path": "marketing/"}).json
    assert {h["user_id"] for h in body["holders"]} == {mia}


def test_filters(api, scim, policy, store, account):
    """Users filter by text, role, group, environment, active and provenance."""
    a = scim.post(
        "Users", json={"userName": "ann@example.com", ENT: {"department": "Marketing"}}
    ).json["id"]
    b = scim.post("Users", json={"userName": "ben@example.com", "active": False}).json["id"]
    c = scim.post("Users", json={"userName": "cat@example.com"}).json["id"]
    scim.post("Groups", json={"displayName": "cld-admins", "members": [{"value": c}]})
    api.put(f"users/{b}/role", json={"role": "billing"})

    def ids(**query):
        r = api.get("users", query_string=query)
        assert r.status_code == 200, r.json
        return {u["id"] for u in r.json["users"]}

    assert ids(q="ANN") == {a}
    assert ids(role="billing") == {b}
    assert ids(role="admin") == {c}
    assert ids(group="marketing") == {a}
    assert ids(environment="staging") == {a, c}  # c has all environments
    assert ids(active="false") == {b}
    assert ids(active="true") == {a, c}
    assert ids(provenance="manual") == {b}
    assert ids(provenance="policy:admins") == {c}
    assert ids(provenance="scim") == {c}
    assert api.get("users", query_string={"role": "emperor"}).status_code == 400


def test_pagination_is_stable_under_inserts(api, store, account):
    """Walking pages while users are added before and after the cursor sees every original user
    exactly once."""
    for name in ("b1", "b2", "b3", "b4", "b5", "b6"):
        provisioning.provision(store, account.id, factories.profile(f"{name}@x.test"), actor="t")
    seen, cursor, inserted = [], None, 0
    while True:
        query = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("users", query_string=query).json
        seen += [u["user_name"] for u in page["users"]]
        for name in (f"a{inserted}@x.test", f"c{inserted}@x.test"):  # before and after
            provisioning.provision(store, account.id, factories.profile(name), actor="t")
        inserted += 1
        cursor = page["next"]
        if not cursor:
            break
    originals = [s for s in seen if s.startswith("b")]
    assert originals == [f"b{i}@x.test" for i in range(1, 7)]
    assert len(seen) == len(set(seen))
    assert not any(s.startswith("a") for s in seen)  # inserted behind the cursor
    r = api.get("users", query_string={"cursor": "garbage!"})
    assert r.status_code == 400 and problem_type(r) == "invalid-input"
