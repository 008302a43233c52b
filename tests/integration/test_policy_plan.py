"""`policy plan` reads each kind of row (users with their e-mails, what they hold) from one
statement sorted by user id and takes a user's rows as the users go by: whatever a user has or
lacks, with another account's users in between and fetches that cut a user's rows in two,
each planned change is exactly what apply then does."""

import os
import secrets
import uuid

from sqlalchemy import delete

from bridge import accounts, manual, planning
from bridge.models import EnvironmentAccess, RoleAssignment
from tests.conftest import ScimClient
from tests.integration.test_policy_service import ENT, POLICY, access, plan_then_apply

CANDIDATE = """
account: {slug}
environments: [production, staging]
defaults: {{role: media_library_user, environments: [production]}}
roles: {{precedence: highest}}
inputs:
  addresses: {{scim: emails.value}}   # every e-mail, not only the first
rules:
  - name: second-address
    when: {{addresses: {{contains: b@other.example}}}}
    then: {{grants: [{{environment: production, collection: Second, level: viewer}}]}}
  - name: partners
    when: {{email_domain: {{in: [partner.example]}}}}
    then: {{role: billing, groups: [Partners], environments: [staging]}}
  - name: admins
    when: {{groups: {{contains: cld-admins}}}}
    then: {{role: admin, environments: all}}
  - name: marketing
    when: {{department: {{equals: Marketing}}}}
    then:
      groups: [Marketing]
      grants: [{{environment: staging, folder: "marketing/", level: manager}}]
"""


def mail(*values, primary=None):
    return [{"value": v, "primary": i == primary} for i, v in enumerate(values)]


def test_plan_matches_apply_for_users_of_every_shape_among_another_accounts(
    client, store, settings, account, tmp_path, monkeypatch
):
    """Users with three e-mails (the primary last, or first), with rows from SCIM, a policy
    and by hand, with nothing at all; another account's users, holding much, sorted among
    them; two rows fetched at a time: plan reads each user as apply does."""
    monkeypatch.setattr(planning, "BATCH", 2)  # a user's e-mails and held rows span fetches
    path = settings.policy_dir / f"{account.slug}.yaml"

    def policy_file(text):
        path.write_text(text)
        stat = path.stat()  # every edit visible even within one mtime tick
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    def scim_of(acct):
        token = accounts.issue_token(store, acct.slug, label="t", actor="t")
        return ScimClient(client, token.raw, acct)

    def user(scim, name, **extra):
        made = scim.post("Users", json={"userName": name, **extra})
        assert made.status_code == 201, made.json
        return made.json["id"]

    other = accounts.create_account(store, f"other-{secrets.token_hex(4)}", actor="t")
    accounts.add_environment(store, other.slug, "staging", actor="t")
    theirs, mine = scim_of(other), scim_of(account)
    admins = []
    for n in range(12):  # partner e-mails, admins, a manual role: none of it is ours
        made = user(theirs, f"t{n}@partner.example", emails=mail(f"t{n}@partner.example"))
        manual.set_role(store, other.id, uuid.UUID(made), "reports", actor="t")
        admins.append({"value": made})
    made = theirs.post("Groups", json={"displayName": "cld-admins", "members": admins})
    assert made.status_code == 201

    ids = {"none": user(mine, "none")}  # no e-mail, no group and (below) no access at all
    none = uuid.UUID(ids["none"])

    def strip(db):  # as a user stored before the bridge gave every user a role
        for model in (RoleAssignment, EnvironmentAccess):
            db.execute(delete(model).where(model.user_id == none))

    store.write(strip)
    policy_file(POLICY.format(slug=account.slug, extra=""))
    ids |= {
        "last": user(  # the primary is the last e-mail: a partner
            mine,
            "last@acme.example",
            emails=mail("a@other.example", "b@other.example", "c@partner.example", primary=2),
        ),
        "first": user(  # the primary comes first; the partner address is not it
            mine,
            "first@acme.example",
            emails=mail("d@other.example", "e@partner.example", "f@partner.example", primary=0),
        ),
        "unmarked": user(  # no primary: by position
            mine, "unmarked@acme.example", emails=mail("g@partner.example", "h@other.example")
        ),
        "sources": user(mine, "sources@acme.example", **{ENT: {"department": "Marketing"}}),
    }
    for n in range(10):
        ids[f"m{n}"] = user(mine, f"m{n}@acme.example", **{ENT: {"department": "Marketing"}})
    group = {"displayName": "cld-admins", "members": [{"value": ids["sources"]}]}
    assert mine.post("Groups", json=group).status_code == 201
    sources = uuid.UUID(ids["sources"])
    manual.set_environment(store, account.id, sources, "staging", present=True, actor="t")
    manual.set_user_grant(
        store,
        account.id,
        sources,
        manual.GrantSpec("production", "folder", "marketing/", "viewer"),
        present=True,
        actor="t",
    )
    held = access(store, ids["sources"])  # SCIM, the policy and by hand
    assert {g["provenance"] for g in held["groups"]} == {
        "scim",
        "policy:admins",
        "policy:marketing",
    }
    assert {e["provenance"] for e in held["environments"]} >= {"manual", "policy:admins"}
    assert {g["provenance"] for g in held["grants"]} == {"manual", "policy:marketing"}
    nothing = access(store, ids["none"])
    assert not nothing["role"] and not any(nothing[k] for k in ("environments", "groups", "grants"))

    by_name = plan_then_apply(store, account, policy_file, tmp_path, CANDIDATE, ids)

    assert by_name["last"].role == ("media_library_user", "billing")
    assert by_name["last"].gains["grants"] == ["production:collection:Second:viewer"]
    assert by_name["unmarked"].gains["groups"] == ["Partners"]
    assert "first" not in by_name  # its primary address is not a partner's: no change
    assert by_name["none"].role == (None, "media_library_user")
    assert by_name["none"].gains["environments"] == ["production"]
    assert by_name["sources"].losses["groups"] == ["Platform"]
    assert by_name["sources"].gains["grants"] == ["staging:folder:marketing/:manager"]
    assert access(store, ids["sources"])["role"]["role"] == "admin"
    theirs_now = theirs.get("Users?count=50").json["Resources"]
    assert len(theirs_now) == 12 and not any(n.startswith("t") for n in by_name)
