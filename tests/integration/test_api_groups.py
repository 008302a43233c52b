"""Groups over the API: list, members with provenance (paginated), manual groups made, renamed
and deleted by hand (never SCIM's), manual group grants held by members."""

import uuid

from sqlalchemy import select

from bridge import accounts
from bridge.models import Account, Group
from tests.integration.api_client import problem_type


def audit_seq(store, account):
    with store.read() as db:
        return db.get(Account, account.id).audit_seq


def test_manual_group_lifecycle_with_members_and_grants(api, scim, store, account):
    """A manual group is made, gets a member and a grant the member then holds, is renamed and
    deleted, taking the grant with it."""
    uid = scim.post("Users", json={"userName": "gail@example.com"}).json["id"]
    r = api.post("groups", json={"display_name": "Editors"})
    assert r.status_code == 201 and r.json["managed_by"] == "manual"
    gid = r.json["id"]
    r = api.post("groups", json={"display_name": "editors"})
    assert r.status_code == 409 and problem_type(r) == "conflict"
    assert [g["display_name"] for g in api.get("groups").json["groups"]] == ["Editors"]
    assert api.put(f"users/{uid}/groups/{gid}").status_code == 200
    r = api.post(
        f"groups/{gid}/grants",
        json={"environment": "production", "path": "press/", "level": "editor"},
    )
    assert r.json["grants"] == [
        {
            "environment": "production",
            "kind": "folder",
            "path": "press/",
            "level": "editor",
            "provenance": "manual",
        }
    ]
    assert r.json["members"] == 1
    feed = api.get("events", query_string={"type": "group.grants_changed"}).json["events"]
    assert [(e["data"]["group"], e["data"]["before"], e["data"]["after"]) for e in feed] == [
        ({"id": gid, "displayName": "Editors"}, [], r.json["grants"])
    ]
    held = api.get(f"users/{uid}").json["access"]["grants"]
    assert {(g["path"], g["provenance"], g["source"]) for g in held} == {
        ("press/", "group:Editors", "manual")
    }
    r = api.patch(f"groups/{gid}", json={"display_name": "Press editors"})
    assert r.status_code == 200 and r.json["display_name"] == "Press editors"
    members = api.get(f"groups/{gid}/members").json["members"]
    assert [(m["user_name"], m["provenance"]) for m in members] == [("gail@example.com", "manual")]
    assert api.delete(f"groups/{gid}").status_code == 204
    assert api.get(f"groups/{gid}").status_code == 404
    assert api.get(f"users/{uid}").json["access"]["grants"] == []


def test_scim_groups_cannot_be_renamed_or_deleted_by_hand(api, scim, store, account):
    """A SCIM group belongs to the IdP: rename and delete are 409 naming who manages it, and
    nothing changes; a manual grant on it is allowed."""
    gid = scim.post("Groups", json={"displayName": "Okta-Sales"}).json["id"]
    before = audit_seq(store, account)
    r = api.patch(f"groups/{gid}", json={"display_name": "Renamed"})
    assert r.status_code == 409 and problem_type(r) == "conflict"
    assert "managed by scim" in r.json["detail"]
    r = api.delete(f"groups/{gid}")
    assert r.status_code == 409 and problem_type(r) == "conflict"
    assert audit_seq(store, account) == before
    with store.read() as db:
        assert db.get(Group, uuid.UUID(gid)).display_name == "Okta-Sales"
    r = api.post(
        f"groups/{gid}/grants",
        json={"environment": "staging", "path": "deals", "level": "viewer", "kind": "collection"},
    )
    assert r.status_code == 200 and r.json["grants"][0]["kind"] == "collection"


def test_members_page_with_provenance(api, scim, store, account):
    """Members come a page at a time; a user in by SCIM and by hand appears once per provenance."""
    ids = [scim.post("Users", json={"userName": f"m{i}@example.com"}).json["id"] for i in range(5)]
    gid = scim.post(
        "Groups", json={"displayName": "Crew", "members": [{"value": i} for i in ids]}
    ).json["id"]
    api.put(f"users/{ids[0]}/groups/{gid}")
    seen, cursor = [], None
    while True:
        page = api.get(
            f"groups/{gid}/members",
            query_string={"limit": 2, **({"cursor": cursor} if cursor else {})},
        ).json
        seen += [(m["user_name"], m["provenance"]) for m in page["members"]]
        cursor = page["next"]
        if not cursor:
            break
    assert seen == [("m0@example.com", "manual"), ("m0@example.com", "scim")] + [
        (f"m{i}@example.com", "scim") for i in range(1, 5)
    ]
    listed = api.get("groups", query_string={"q": "cre"}).json["groups"]
    assert [(g["display_name"], g["members"], g["managed_by"]) for g in listed] == [
        ("Crew", 5, "scim")
    ]


def test_group_of_another_account_is_404(api_for, scim, store, account):
    """Another account's key cannot see or change this account's groups."""

    gid = scim.post("Groups", json={"displayName": "Mine"}).json["id"]
    other = accounts.create_account(store, f"o-{account.slug}", actor="test")
    stranger = api_for(other, "admin")
    for r in (
        stranger.get(f"groups/{gid}"),
        stranger.get(f"groups/{gid}/members"),
        stranger.delete(f"groups/{gid}"),
        stranger.post(
            f"groups/{gid}/grants",
            json={"environment": "production", "path": "x/", "level": "viewer"},
        ),
    ):
        assert r.status_code == 404, r.json
    with store.read() as db:
        assert db.scalar(select(Group.display_name).where(Group.id == uuid.UUID(gid)))
