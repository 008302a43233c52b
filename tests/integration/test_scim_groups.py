"""SCIM Groups through HTTP: members as deltas, renames, uniqueness, projection, streaming."""

from sqlalchemy import select

from bridge.models import Group
from tests.integration.test_scim_protocol import scim_error
from tests.integration.test_scim_users import create as create_user

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def users(scim, n, prefix="m"):
    return [create_user(scim, f"{prefix}{i}@example.com")["id"] for i in range(n)]


def patch(scim, group, *ops):
    return scim.patch(
        f"Groups/{group['id']}", json={"schemas": [PATCH_OP], "Operations": list(ops)}
    )


def member_ids(scim, group):
    doc = scim.get(f"Groups/{group['id']}").json
    return sorted(m["value"] for m in doc.get("members", []))


def test_create_with_members_and_read_back(scim):
    """A group created with members lists them with value, $ref and type."""
    ids = users(scim, 2)
    resp = scim.post("Groups", json={"displayName": "Team", "members": [{"value": i} for i in ids]})
    assert resp.status_code == 201
    assert resp.headers["Location"].endswith(resp.json["id"])
    doc = scim.get(f"Groups/{resp.json['id']}").json
    assert sorted(m["value"] for m in doc["members"]) == sorted(ids)
    assert all(m["type"] == "User" and m["$ref"].endswith(m["value"]) for m in doc["members"])
    user = scim.get(f"Users/{ids[0]}").json
    assert user["groups"] == [
        {"value": doc["id"], "$ref": doc["meta"]["location"], "display": "Team", "type": "direct"}
    ]


def test_display_name_unique_in_any_case(scim):
    """A second group with the same displayName in another case, or a rename onto it, is 409."""
    scim.post("Groups", json={"displayName": "Admins"})
    other = scim.post("Groups", json={"displayName": "Other"}).json
    scim_error(scim.post("Groups", json={"displayName": "ADMINS"}), 409, "uniqueness")
    scim_error(
        patch(scim, other, {"op": "replace", "path": "displayName", "value": "admins"}),
        409,
        "uniqueness",
    )


def test_rename_pathless_echoing_id(scim):
    """Okta renames with a path-less replace that carries the group's id; re-sending is harmless."""
    group = scim.post("Groups", json={"displayName": "Old"}).json
    op = {"op": "replace", "value": {"id": group["id"], "displayName": "New"}}
    first = patch(scim, group, op)
    assert first.status_code == 204 and first.headers["ETag"] == 'W/"2"'
    assert scim.get(f"Groups/{group['id']}").json["displayName"] == "New"
    again = patch(scim, group, op)
    assert again.status_code == 204 and again.headers["ETag"] == 'W/"2"'


def test_member_add_remove_replace(scim):
    """add without type, remove by members[value eq], Entra's Remove with a value list, replace."""
    a, b, c = users(scim, 3)
    group = scim.post("Groups", json={"displayName": "Ops"}).json
    patch(
        scim,
        group,
        {"op": "add", "path": "members", "value": [{"value": a}, {"value": b}, {"value": c}]},
    )
    assert member_ids(scim, group) == sorted([a, b, c])
    patch(scim, group, {"op": "remove", "path": f'members[value eq "{a}"]'})
    assert member_ids(scim, group) == sorted([b, c])
    patch(scim, group, {"op": "Remove", "path": "members", "value": [{"value": b}]})
    assert member_ids(scim, group) == [c]
    patch(scim, group, {"op": "replace", "path": "members", "value": [{"value": a}]})
    assert member_ids(scim, group) == [a]
    patch(scim, group, {"op": "replace", "path": "members", "value": []})
    assert member_ids(scim, group) == []


def test_remove_members_without_value_empties_group(scim):
    """remove with path members and no value removes every member (RFC 7644 §3.5.2.2)."""
    ids = users(scim, 2)
    group = scim.post(
        "Groups", json={"displayName": "All", "members": [{"value": i} for i in ids]}
    ).json
    patch(scim, group, {"op": "remove", "path": "members"})
    assert member_ids(scim, group) == []


def test_remove_and_add_in_one_request(scim):
    """Okta sends a remove and an add in one PATCH; both apply, in order."""
    a, b = users(scim, 2)
    group = scim.post("Groups", json={"displayName": "Swap", "members": [{"value": a}]}).json
    patch(
        scim,
        group,
        {"op": "remove", "path": f'members[value eq "{a}"]'},
        {"op": "add", "path": "members", "value": [{"value": b, "display": "B"}]},
    )
    assert member_ids(scim, group) == [b]


def test_unknown_member_is_invalid_value_and_changes_nothing(scim):
    """Adding an id that is no user of the account is 400 invalidValue; nothing changes."""
    (a,) = users(scim, 1)
    group = scim.post("Groups", json={"displayName": "Strict"}).json
    resp = patch(
        scim,
        group,
        {"op": "add", "path": "members", "value": [{"value": a}]},
        {
            "op": "add",
            "path": "members",
            "value": [{"value": "8c6a1d1e-0000-4000-8000-000000000000"}],
        },
    )
    scim_error(resp, 400, "invalidValue")
    assert member_ids(scim, group) == []


def test_nested_groups_are_refused(scim):
    """A member of type Group is refused (nested groups are not supported)."""
    inner = scim.post("Groups", json={"displayName": "Inner"}).json
    resp = scim.post(
        "Groups",
        json={"displayName": "Outer", "members": [{"value": inner["id"], "type": "Group"}]},
    )
    scim_error(resp, 400, "invalidValue")


def test_excluded_members_and_attributes(scim):
    """excludedAttributes=members drops members; attributes=displayName keeps id and schemas."""
    ids = users(scim, 2)
    group = scim.post(
        "Groups", json={"displayName": "Proj", "members": [{"value": i} for i in ids]}
    ).json
    doc = scim.get(f"Groups/{group['id']}", query_string={"excludedAttributes": "members"}).json
    assert "members" not in doc and doc["displayName"] == "Proj"
    doc = scim.get(f"Groups/{group['id']}", query_string={"attributes": "displayName"}).json
    assert set(doc) == {"schemas", "id", "displayName"}
    listed = scim.get(
        "Groups", query_string={"filter": 'displayName eq "proj"', "excludedAttributes": "members"}
    ).json
    assert listed["totalResults"] == 1 and "members" not in listed["Resources"][0]
    doc = scim.get(f"Groups/{group['id']}", query_string={"attributes": "members.value"}).json
    assert all(set(m) == {"value"} for m in doc["members"]) and len(doc["members"]) == 2


def test_large_group_streams_every_member(scim):
    """A group of several hundred members reads back whole, as valid JSON."""
    ids = users(scim, 250, prefix="big")
    group = scim.post(
        "Groups", json={"displayName": "Big", "members": [{"value": i} for i in ids]}
    ).json
    assert member_ids(scim, group) == sorted(ids)
    one = patch(scim, group, {"op": "remove", "path": f'members[value eq "{ids[0]}"]'})
    assert one.status_code == 204 and not one.get_data()  # no 249-member echo
    assert member_ids(scim, group) == sorted(ids[1:])


def test_put_replaces_members_and_name(scim):
    """PUT replaces displayName and the member list (Okta's custom integrations)."""
    a, b = users(scim, 2)
    group = scim.post("Groups", json={"displayName": "Put", "members": [{"value": a}]}).json
    resp = scim.put(
        f"Groups/{group['id']}", json={**group, "displayName": "Put2", "members": [{"value": b}]}
    )
    assert resp.json["displayName"] == "Put2"
    assert member_ids(scim, group) == [b]


def test_delete_group_keeps_users(scim):
    """DELETE removes the group and its memberships, not its members."""
    (a,) = users(scim, 1)
    group = scim.post("Groups", json={"displayName": "Tmp", "members": [{"value": a}]}).json
    assert scim.delete(f"Groups/{group['id']}").status_code == 204
    scim_error(scim.get(f"Groups/{group['id']}"), 404)
    assert "groups" not in scim.get(f"Users/{a}").json


def test_patch_answers_204_unless_attributes_are_asked(scim):
    """A group PATCH answers 204 with the ETag; with `attributes` it answers the resource."""
    (a,) = users(scim, 1)
    group = scim.post("Groups", json={"displayName": "Quiet"}).json
    op = {"op": "add", "path": "members", "value": [{"value": a}]}
    resp = scim.patch(f"Groups/{group['id']}", json={"Operations": [op]})
    assert resp.status_code == 204 and resp.headers["ETag"] == 'W/"2"'
    op = {"op": "replace", "path": "displayName", "value": "Loud"}
    resp = scim.patch(
        f"Groups/{group['id']}",
        json={"Operations": [op]},
        query_string={"attributes": "displayName"},
    )
    assert resp.status_code == 200 and resp.json["displayName"] == "Loud"


def test_group_etags(scim):
    """Groups carry weak ETags; a stale If-Match is 412 and If-None-Match gives 304."""
    group = scim.post("Groups", json={"displayName": "Tagged"}).json
    assert scim.get(f"Groups/{group['id']}", headers={"If-None-Match": 'W/"1"'}).status_code == 304
    stale = scim.patch(
        f"Groups/{group['id']}",
        json={"Operations": [{"op": "replace", "path": "displayName", "value": "x"}]},
        headers={"If-Match": 'W/"5"'},
    )
    scim_error(stale, 412)


def test_a_blank_external_id_is_no_external_id(scim, store):
    """An externalId sent blank (on create, by PUT or by PATCH) is no value (RFC 7644 §3.4.2.2
    `pr`: a non-empty value), as a user's is: not stored, not in the group's document, and
    `externalId pr` finds only the group that has one. A number is kept as its text, as a
    user's is; anything else is refused."""
    blank = scim.post("Groups", json={"displayName": "Blank", "externalId": ""})
    assert blank.status_code == 201 and "externalId" not in blank.json
    patched = scim.post("Groups", json={"displayName": "Patched", "externalId": "p-1"}).json
    op = {"op": "replace", "path": "externalId", "value": ""}
    body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [op]}
    assert scim.patch(f"Groups/{patched['id']}", json=body).status_code in (200, 204)
    assert "externalId" not in scim.get(f"Groups/{patched['id']}").json
    put = scim.post("Groups", json={"displayName": "Put", "externalId": "u-1"}).json
    replaced = scim.put(f"Groups/{put['id']}", json={"displayName": "Put", "externalId": ""})
    assert replaced.status_code == 200 and "externalId" not in replaced.json
    numbered = scim.post("Groups", json={"displayName": "Numbered", "externalId": 42})
    assert numbered.status_code == 201 and numbered.json["externalId"] == "42"
    refused = scim.post("Groups", json={"displayName": "Listed", "externalId": ["x"]})
    assert scim_error(refused, 400, "invalidValue")["detail"] == "externalId must be a string"
    scim.post("Groups", json={"displayName": "Set", "externalId": "s-1"})

    def names(flt):
        resp = scim.get("Groups", query_string={"filter": flt, "excludedAttributes": "members"})
        assert resp.status_code == 200, resp.json
        return sorted(g["displayName"] for g in resp.json["Resources"])

    assert names("externalId pr") == ["Numbered", "Set"]
    assert names("externalId eq null") == ["Blank", "Patched", "Put"]
    assert names("not (externalId pr)") == ["Blank", "Patched", "Put"]
    with store.read() as db:  # stored as no value at all
        kept = db.execute(
            select(Group.display_name, Group.external_id).where(Group.account_id == scim.account.id)
        ).all()
    assert sorted(kept) == [
        ("Blank", None),
        ("Numbered", "42"),
        ("Patched", None),
        ("Put", None),
        ("Set", "s-1"),
    ]


SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


def test_a_page_of_groups_read_with_the_token_is_what_a_search_answers(scim, client):
    """GET /Groups reads its page with the request's token, in one statement (scim.views);
    POST /Groups/.search reads it apart. Both answer the same: documents, totals, members,
    pages past the end; and a bad token reads no page."""
    members = users(scim, 2, prefix="paged")
    for i in range(3):
        body = {"displayName": f"Paged {i}", "members": [{"value": m} for m in members[:i]]}
        assert scim.post("Groups", json=body).status_code == 201
    paged = 'displayName sw "paged"'
    for query in (
        {"filter": paged, "count": 2},
        {"filter": paged, "startIndex": 2, "count": 2},
        {"filter": paged, "startIndex": 9},  # past the end: the total all the same
        {"filter": 'displayName eq "nobody"'},
        {"filter": paged, "sortBy": "displayName", "sortOrder": "descending"},
        {"filter": paged, "excludedAttributes": "members"},
    ):
        got = scim.get("Groups", query_string=query)
        assert got.status_code == 200, got.get_data(as_text=True)
        page = got.json  # read before the next request (the reply streams in its context)
        searched = scim.post("Groups/.search", json={"schemas": [SEARCH], **query})
        assert searched.status_code == 200 and searched.json == page, query
    assert (
        scim.get("Groups", query_string={"filter": paged, "startIndex": 9}).json["totalResults"]
        == 3
    )
    refused = client.get(
        "/scim/v2/Groups",
        query_string={"filter": paged},
        headers={"Authorization": "Bearer not-a-token"},
    )
    assert refused.status_code == 401 and "Resources" not in refused.get_data(as_text=True)
