"""Policy groups and IdP groups (issue 8 item 9), through SCIM with Okta's and Entra's request
shapes: a group only the policy manages is read-only over SCIM (403 naming the rule) until an
IdP creates a group of that name, which adopts it (201, same id); from then on each side's
memberships carry their own provenance and each side removes only its own."""

import uuid

import pytest
from sqlalchemy import select

from bridge.models import AuditEvent, Group, Membership
from tests.conformance.scim_checks import body_of, error_of, patched
from tests.conformance.test_entra_replay import AD_GROUP, ENTERPRISE, GROUP, USER
from tests.conformance.test_okta_replay import OKTA_HEADERS, PATCH_OP

POLICY = """\
account: {slug}
environments: [production, staging]
defaults: {{role: media_library_user, environments: [production]}}
rules:
  - name: marketing
    when: {{department: {{equals: Marketing}}}}
    then: {{groups: [Marketing]}}
grants:
  Marketing:
    - {{environment: production, folder: "marketing/", level: editor}}
"""


def ops(*operations):
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def user(scim, name, department=None):
    doc = {"schemas": [USER, ENTERPRISE], "userName": name, "active": True}
    if department:
        doc[ENTERPRISE] = {"department": department}
    return body_of(scim.post("Users", doc), 201)["id"]


def rows(store, group_id):
    """(user id, provenance) of every membership of the group."""
    with store.read() as db:
        return {
            (str(u), p)
            for u, p in db.execute(
                select(Membership.user_id, Membership.provenance).where(
                    Membership.group_id == uuid.UUID(group_id)
                )
            )
        }


def owner(store, group_id):
    with store.read() as db:
        return db.get(Group, uuid.UUID(group_id)).managed_by


@pytest.fixture
def policy_group(scim, store, settings):
    """A policy that puts the Marketing department into the group Marketing, and one member:
    returns (group id, that member's id)."""
    slug = scim.account.slug
    (settings.policy_dir / f"{slug}.yaml").write_text(POLICY.format(slug=slug))
    mia = user(scim, "mia@example.com", "Marketing")
    with store.read() as db:
        group = db.scalar(
            select(Group).where(
                Group.account_id == scim.account.id, Group.display_name == "Marketing"
            )
        )
    assert group is not None and group.managed_by == "policy"
    assert rows(store, str(group.id)) == {(mia, "policy:marketing")}
    return str(group.id), mia


def test_a_policy_only_group_is_read_only_over_scim(scim, store, policy_group):
    """PATCH (Okta's member add and rename), PUT, DELETE and a Bulk PATCH of a group no IdP
    adopted are 403 naming the policy rule; nothing changes."""
    group_id, mia = policy_group
    bob = user(scim, "bob@example.com")
    add = ops({"op": "add", "path": "members", "value": [{"value": bob, "display": "bob"}]})
    rename = ops({"op": "replace", "value": {"id": group_id, "displayName": "Mktg"}})
    put = {"schemas": [GROUP], "id": group_id, "displayName": "Marketing", "members": []}
    refusals = [
        scim.patch(f"Groups/{group_id}", add, headers=OKTA_HEADERS),
        scim.patch(f"Groups/{group_id}", rename, headers=OKTA_HEADERS),
        scim.put(f"Groups/{group_id}", put),
        scim.delete(f"Groups/{group_id}"),
    ]
    for resp in refusals:
        detail = error_of(resp, 403)["detail"]
        assert "rule 'marketing'" in detail and "read-only over SCIM" in detail
        assert "POST /Groups" in detail
    bulk = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "Operations": [{"method": "PATCH", "path": f"/Groups/{group_id}", "data": add}],
    }
    result = body_of(scim.post("Bulk", bulk), 200)["Operations"][0]
    assert result["status"] == "403"
    assert rows(store, group_id) == {(mia, "policy:marketing")}
    got = body_of(scim.get(f"Groups/{group_id}"), 200)
    assert got["displayName"] == "Marketing" and [m["value"] for m in got["members"]] == [mia]
    assert owner(store, group_id) == "policy"


def test_okta_push_adopts_the_policy_group(scim, store, policy_group):
    """Okta's group push of the same name: 201 with the same id; its members sit beside the
    policy's; Okta's `replace members []` removes only Okta's; the policy removes only its own."""
    group_id, mia = policy_group
    bob = user(scim, "bob@example.com")
    create = {"schemas": [GROUP], "displayName": "Marketing", "members": []}
    resp = scim.post("Groups", create, headers=OKTA_HEADERS)
    adopted = body_of(resp, 201)
    assert adopted["id"] == group_id and resp.headers["Location"].endswith(f"/Groups/{group_id}")
    assert owner(store, group_id) == "scim"

    both = ops(
        {"op": "add", "path": "members", "value": [{"value": bob, "display": "bob"}]},
        {"op": "add", "path": "members", "value": [{"value": mia, "display": "mia"}]},
    )
    patched(scim.patch(f"Groups/{group_id}", both, headers=OKTA_HEADERS))
    assert rows(store, group_id) == {(mia, "policy:marketing"), (mia, "scim"), (bob, "scim")}

    empty = ops({"op": "replace", "path": "members", "value": []})
    patched(scim.patch(f"Groups/{group_id}", empty, headers=OKTA_HEADERS))
    assert rows(store, group_id) == {(mia, "policy:marketing")}

    patched(scim.patch(f"Groups/{group_id}", both, headers=OKTA_HEADERS))
    leave = ops({"op": "replace", "path": f"{ENTERPRISE}:department", "value": "Sales"})
    body_of(scim.patch(f"Users/{mia}", leave), 200)  # the policy no longer gives Marketing
    assert rows(store, group_id) == {(mia, "scim"), (bob, "scim")}

    again = scim.post("Groups", create, headers=OKTA_HEADERS)
    error_of(again, 409, "uniqueness")  # an adopted group is the IdP's: a second push collides
    with store.read() as db:
        actions = list(
            db.scalars(
                select(AuditEvent.action).where(
                    AuditEvent.account_id == scim.account.id, AuditEvent.target_id == group_id
                )
            )
        )
    assert "group.adopt" in actions


def test_entra_adopts_then_deletes_and_the_policy_keeps_its_group(scim, store, policy_group):
    """Entra's create (its schemas, externalId, another case): 201 same id, Entra's spelling;
    capitalised Add/Remove touch only Entra's rows; DELETE hands the group back to the policy
    (its member and grant stay), after which it is read-only again."""
    group_id, mia = policy_group
    bob = user(scim, "bob@example.com")
    external_id = str(uuid.uuid4())
    create = {
        "schemas": [GROUP, AD_GROUP],
        "externalId": external_id,
        "displayName": "MARKETING",
        "meta": {"resourceType": "Group"},
    }
    adopted = body_of(scim.post("Groups", create), 201)
    assert adopted["id"] == group_id and adopted["externalId"] == external_id
    assert adopted["displayName"] == "MARKETING"

    add = ops({"op": "Add", "path": "members", "value": [{"$ref": None, "value": mia}]})
    patched(scim.patch(f"Groups/{group_id}", add))
    patched(
        scim.patch(
            f"Groups/{group_id}", ops({"op": "Add", "path": "members", "value": [{"value": bob}]})
        )
    )
    remove = ops({"op": "Remove", "path": "members", "value": [{"$ref": None, "value": mia}]})
    patched(scim.patch(f"Groups/{group_id}", remove))
    assert rows(store, group_id) == {(mia, "policy:marketing"), (bob, "scim")}
    members = {m["value"] for m in body_of(scim.get(f"Groups/{group_id}"), 200)["members"]}
    assert members == {mia, bob}  # mia is still a member: through the policy

    resp = scim.delete(f"Groups/{group_id}")
    assert resp.status_code == 204 and "Content-Type" not in resp.headers
    assert rows(store, group_id) == {(mia, "policy:marketing")}
    assert owner(store, group_id) == "policy"
    error_of(scim.patch(f"Groups/{group_id}", add), 403)
    with store.read() as db:
        from bridge.models import Grant

        kept = db.scalar(select(Grant.path).where(Grant.group_id == uuid.UUID(group_id)))
    assert kept == "marketing/"


def test_an_idp_group_the_policy_does_not_use_is_deleted(scim, store):
    """Without any policy rows, an IdP group's DELETE deletes it (today's behaviour)."""
    created = body_of(scim.post("Groups", {"schemas": [GROUP], "displayName": "Plain"}), 201)
    assert scim.delete(f"Groups/{created['id']}").status_code == 204
    error_of(scim.get(f"Groups/{created['id']}"), 404)


def test_parallel_pushes_adopt_once(scim, store, policy_group):
    """Eight IdP pushes of the policy group's name at once: one adopts it (201, its id), seven
    get 409 uniqueness, and the group is still one group with the policy's member."""
    from collections import Counter

    from tests.conftest import ScimClient
    from tests.integration.test_concurrency import THREADS, _race

    group_id, mia = policy_group
    clients = [
        ScimClient(scim.client.application.test_client(), scim.token, scim.account)
        for _ in range(THREADS)
    ]
    create = {"schemas": [GROUP], "displayName": "Marketing", "members": []}

    def push(i):
        resp = clients[i].post("Groups", create)
        return resp.status_code, resp.get_json()  # read in the thread that made the request

    results = _race(push)
    assert Counter(status for status, _ in results) == {201: 1, 409: THREADS - 1}, results
    assert [doc["id"] for status, doc in results if status == 201] == [group_id]
    with store.read() as db:
        same_name = db.scalars(
            select(Group.id).where(
                Group.account_id == scim.account.id, Group.display_name_key == "marketing"
            )
        ).all()
    assert [str(i) for i in same_name] == [group_id]
    assert rows(store, group_id) == {(mia, "policy:marketing")}
