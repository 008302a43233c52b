"""Replays of the SCIM 2.0 requests Okta sends, as Okta's own documentation gives them.

Sources (the request bodies below follow them as closely as they are given):
- "SCIM 2.0 Protocol Reference" / "Okta and SCIM Version 2.0",
  https://developer.okta.com/docs/api/openapi/okta-scim/guides/scim-20
  (okta/okta-developer-docs: docs/reference/scim/scim-20/index.md)
- "Build your SCIM API service" -> "Test your SCIM API" (the Runscope "Okta SCIM 2.0 Spec Test"),
  https://developer.okta.com/docs/guides/scim-provisioning-integration-prepare/main/
- "Test your Okta SCIM integration" (the Runscope CRUD test: create, update, deactivate,
  reactivate), https://developer.okta.com/docs/guides/scim-provisioning-integration-test/main/

Each test is one independent sequence on a fresh account, with fresh names.
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.conformance.scim_checks import body_of, error_of, list_of, patched

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"

# The headers of Okta's Runscope spec test ("Okta SCIM 2.0 Spec Test"): note the charset parameter.
OKTA_HEADERS = {
    "User-Agent": "Okta SCIM Client 1.0.0",
    "Accept": "application/scim+json",
    "Accept-Charset": "utf-8",
    "Content-Type": "application/scim+json; charset=utf-8",
}


# -- helpers -----------------------------------------------------------------------------------


def user_resource(body: dict[str, Any], user_id: str | None = None) -> dict[str, Any]:
    assert USER in body["schemas"]
    assert isinstance(body["id"], str) and body["id"]
    if user_id is not None:
        assert body["id"] == user_id
    assert body["meta"]["resourceType"] == "User"
    assert "password" not in body  # RFC 7643 §4.1.1: password is returned "never"
    return body


def group_resource(body: dict[str, Any], group_id: str | None = None) -> dict[str, Any]:
    assert GROUP in body["schemas"]
    assert isinstance(body["id"], str) and body["id"]
    if group_id is not None:
        assert body["id"] == group_id
    assert body["meta"]["resourceType"] == "Group"
    return body


def member_ids(group: dict[str, Any]) -> set[str]:
    return {m["value"] for m in group.get("members") or []}


def tag() -> str:
    return uuid.uuid4().hex[:10]


def okta_user(user_name: str, given: str = "Test", family: str = "User") -> dict[str, Any]:
    """POST /Users exactly as "SCIM 2.0 Protocol Reference" > Create the User shows it."""
    return {
        "schemas": [USER],
        "userName": user_name,
        "name": {"givenName": given, "familyName": family},
        "emails": [{"primary": True, "value": user_name, "type": "work"}],
        "displayName": f"{given} {family}",
        "locale": "en-US",
        "externalId": "00u" + uuid.uuid4().hex[:17],
        "groups": [],
        "password": "1mz050nq",
        "active": True,
    }


def create_user(scim, user_name: str, **kw: str) -> dict[str, Any]:
    resp = scim.post("Users", okta_user(user_name, **kw), headers=OKTA_HEADERS)
    return user_resource(body_of(resp, 201))


def okta_filter(user_name: str) -> str:
    """Okta's lookup query, percent-encoded as it goes on the wire."""
    quoted = user_name.replace("@", "%40")
    return f"filter=userName%20eq%20%22{quoted}%22&startIndex=1&count=100"


def patch_op(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


# -- users -------------------------------------------------------------------------------------


# "SCIM 2.0 Protocol Reference": Create Users (lookup, create), Retrieve a specific User,
# Update a specific User (PUT: GET, then PUT the full body with id and meta).
def test_okta_assign_lookup_create_get_and_full_put_update(scim):
    """Okta: lookup finds nothing, create, get by id, lookup finds it, full PUT with id and meta."""
    user_name = f"test.user.{tag()}@okta.local"

    empty = list_of(scim.get("Users", query_string=okta_filter(user_name), headers=OKTA_HEADERS))
    assert empty["totalResults"] == 0
    assert empty.get("Resources", []) == []
    assert empty["startIndex"] == 1

    sent = okta_user(user_name)
    resp = scim.post("Users", sent, headers=OKTA_HEADERS)
    created = user_resource(body_of(resp, 201))
    user_id = created["id"]
    assert created["userName"] == user_name
    assert created["name"]["givenName"] == "Test"
    assert created["name"]["familyName"] == "User"
    assert created["emails"][0]["value"] == user_name
    assert created["externalId"] == sent["externalId"]
    assert created["active"] is True
    # RFC 7644 §3.3: the URI of the new resource in Location and meta.location.
    assert resp.headers["Location"].endswith(f"/scim/v2/Users/{user_id}")
    assert created["meta"]["location"].endswith(f"/scim/v2/Users/{user_id}")

    got = user_resource(body_of(scim.get(f"Users/{user_id}", headers=OKTA_HEADERS), 200), user_id)
    assert got["userName"] == user_name
    assert got["active"] is True

    found = list_of(scim.get("Users", query_string=okta_filter(user_name), headers=OKTA_HEADERS))
    assert found["totalResults"] == 1
    assert [r["id"] for r in found["Resources"]] == [user_id]

    # Okta modifies the changed attribute and PUTs the whole body back, id and meta included.
    put_body = {
        "schemas": [USER],
        "id": user_id,
        "userName": user_name,
        "name": {"givenName": "Another", "middleName": "Excited", "familyName": "User"},
        "emails": [
            {"primary": True, "value": user_name, "type": "work", "display": user_name},
        ],
        "active": True,
        "groups": [],
        "meta": {"resourceType": "User"},
    }
    put = user_resource(
        body_of(scim.put(f"Users/{user_id}", put_body, headers=OKTA_HEADERS), 200), user_id
    )
    assert put["name"]["givenName"] == "Another"
    assert put["name"]["middleName"] == "Excited"
    assert put["active"] is True

    again = user_resource(body_of(scim.get(f"Users/{user_id}"), 200), user_id)
    assert again["name"]["givenName"] == "Another"
    assert again["name"]["middleName"] == "Excited"
    assert again["name"]["familyName"] == "User"
    assert again["userName"] == user_name
    assert again["emails"][0]["value"] == user_name


# "SCIM 2.0 Protocol Reference": Update a specific User (PATCH) - deactivation; Delete Users
# ("Okta doesn't perform DELETE operations ... sends a request to set active to false").
# "Test your Okta SCIM integration": deactivate, then reactivate.
def test_okta_deactivate_by_pathless_patch_then_reactivate(scim):
    """Okta: path-less replace {active:false} deactivates; user stays readable and filterable."""
    user_name = f"leaver.{tag()}@okta.local"
    user_id = create_user(scim, user_name)["id"]

    deactivate = patch_op({"op": "replace", "value": {"active": False}})
    body = patched(scim.patch(f"Users/{user_id}", deactivate, headers=OKTA_HEADERS))
    if body is not None:
        assert user_resource(body, user_id)["active"] is False

    got = user_resource(body_of(scim.get(f"Users/{user_id}", headers=OKTA_HEADERS), 200), user_id)
    assert got["active"] is False
    assert got["userName"] == user_name

    found = list_of(scim.get("Users", query_string=okta_filter(user_name), headers=OKTA_HEADERS))
    assert found["totalResults"] == 1
    assert found["Resources"][0]["id"] == user_id
    assert found["Resources"][0]["active"] is False

    reactivate = patch_op({"op": "replace", "value": {"active": True}})
    body = patched(scim.patch(f"Users/{user_id}", reactivate, headers=OKTA_HEADERS))
    if body is not None:
        assert body["active"] is True
    assert body_of(scim.get(f"Users/{user_id}"), 200)["active"] is True


# "SCIM 2.0 Protocol Reference": custom (App Integration Wizard) integrations send every user
# update, deactivation included, as a PUT of the full user.
def test_okta_aiw_deactivate_and_reactivate_by_put(scim):
    """Okta AIW: GET, then PUT the body back with active false; then true; id and meta carried."""
    user_name = f"aiw.{tag()}@okta.local"
    user_id = create_user(scim, user_name)["id"]

    current = body_of(scim.get(f"Users/{user_id}", headers=OKTA_HEADERS), 200)
    put_body = {**current, "active": False}  # what Okta read, id and server meta included
    put = body_of(scim.put(f"Users/{user_id}", put_body, headers=OKTA_HEADERS), 200)
    assert user_resource(put, user_id)["active"] is False

    got = user_resource(body_of(scim.get(f"Users/{user_id}"), 200), user_id)
    assert got["active"] is False
    assert got["userName"] == user_name
    found = list_of(scim.get("Users", query_string=okta_filter(user_name)))
    assert [r["id"] for r in found["Resources"]] == [user_id]

    put = body_of(scim.put(f"Users/{user_id}", {**got, "active": True}, headers=OKTA_HEADERS), 200)
    assert user_resource(put, user_id)["active"] is True
    assert body_of(scim.get(f"Users/{user_id}"), 200)["active"] is True


# "Test your SCIM API" (Okta SCIM 2.0 Spec Test): "Expect failure when recreating user with same
# values" (409), "Username Case Sensitivity Check", "Test invalid User by username".
# "SCIM 2.0 Protocol Reference": "If the User object that Okta tries to create already exists ...
# respond with an error schema" (409 Conflict).
def test_okta_recreate_is_409_and_username_is_case_insensitive(scim):
    """Okta: a second create of the same userName (any case) is 409; lookups ignore case."""
    user_name = f"Runscope{tag()}Hfluaklab@okta.local"
    user_id = create_user(scim, user_name)["id"]

    again = scim.post("Users", okta_user(user_name), headers=OKTA_HEADERS)
    error_of(again, 409, "uniqueness")
    upper = scim.post("Users", okta_user(user_name.upper()), headers=OKTA_HEADERS)
    error_of(upper, 409, "uniqueness")

    caps = list_of(scim.get("Users", query_string=okta_filter(user_name.upper())))
    assert caps["totalResults"] == 1
    assert caps["Resources"][0]["id"] == user_id
    assert caps["Resources"][0]["userName"] == user_name  # stored as sent

    nobody = list_of(scim.get("Users", query_string=okta_filter(f"abcdefgh.{tag()}@example.com")))
    assert nobody["totalResults"] == 0

    only = list_of(scim.get("Users", query_string={"startIndex": "1", "count": "100"}))
    assert [r["id"] for r in only["Resources"]] == [user_id]


# "Test your SCIM API" (Okta SCIM 2.0 Spec Test): "Test invalid User by ID" and "Check status
# 404": the spec test also requires a `detail` in the error body.
def test_okta_unknown_user_id_is_scim_404(scim):
    """Okta: GET /Users/<unknown id> is a SCIM 404 error with a detail."""
    create_user(scim, f"someone.{tag()}@okta.local")  # the spec test runs against a non-empty store
    for unknown in ("010101001010101011001010101011", str(uuid.uuid4())):
        body = error_of(scim.get(f"Users/{unknown}", headers=OKTA_HEADERS), 404)
        assert isinstance(body.get("detail"), str) and body["detail"]


# "SCIM 2.0 Protocol Reference": Retrieve Users / Retrieve Groups ("count=100 ... startIndex
# becomes startIndex+100 ... must consistently return the same ordering"); the spec test's
# "Test Users endpoint" (count=1&startIndex=1) and "Verify Groups endpoint" requests.
def test_okta_import_pages_users_and_groups_in_stable_order(scim):
    """Okta import: pages with startIndex/count cover every user once, in the same order twice."""
    ids = {create_user(scim, f"import{i}.{tag()}@okta.local")["id"] for i in range(5)}

    first = list_of(scim.get("Users", query_string="count=1&startIndex=1", headers=OKTA_HEADERS))
    assert first["totalResults"] == 5
    assert len(first["Resources"]) == 1
    assert first["startIndex"] == 1
    assert first["Resources"][0]["id"] in ids

    def page_through(count: int) -> list[str]:
        seen: list[str] = []
        start = 1
        while True:
            page = list_of(scim.get("Users", query_string=f"startIndex={start}&count={count}"))
            assert page["totalResults"] == 5
            assert page["startIndex"] == start
            batch = [r["id"] for r in page.get("Resources", [])]
            assert len(batch) <= count
            assert page["itemsPerPage"] == len(batch)
            seen += batch
            start += count
            if start > page["totalResults"]:
                return seen

    by_two = page_through(2)
    assert sorted(by_two) == sorted(ids)  # every user exactly once
    assert page_through(2) == by_two  # same ordering on a second import
    assert page_through(100) == by_two  # and whatever the page size

    groups = list_of(scim.get("Groups", query_string="count=100&startIndex=1"))
    assert groups["totalResults"] == 0


# -- groups ------------------------------------------------------------------------------------


# "SCIM 2.0 Protocol Reference": Create Groups, Retrieve specific Groups, Update a specific Group
# name (path-less replace carrying id; "triggered each time there is a group membership update"),
# Update specific Group membership (remove by members[value eq ...] + add without type, in one
# request; full replace), Delete a specific Group.
def test_okta_group_push_rename_members_and_unlink(scim):
    """Okta group push: create, rename with id, add, remove+add, replace, replace [], delete."""
    u1 = create_user(scim, f"member1.{tag()}@okta.local")
    u2 = create_user(scim, f"member2.{tag()}@okta.local")
    name = f"Test SCIMv2 {tag()}"

    lookup = scim.get("Groups", query_string={"filter": f'displayName eq "{name}"'})
    assert list_of(lookup)["totalResults"] == 0

    create = {"schemas": [GROUP], "displayName": name, "members": []}
    resp = scim.post("Groups", create, headers=OKTA_HEADERS)
    group = group_resource(body_of(resp, 201))
    group_id = group["id"]
    assert group["displayName"] == name
    assert member_ids(group) == set()
    assert resp.headers["Location"].endswith(f"/scim/v2/Groups/{group_id}")

    got = group_resource(body_of(scim.get(f"Groups/{group_id}", headers=OKTA_HEADERS), 200))
    assert got["id"] == group_id and got["displayName"] == name

    # Rename: path-less replace whose value carries the group's own id.
    new_name = f"{name} renamed"
    rename = patch_op({"op": "replace", "value": {"id": group_id, "displayName": new_name}})
    body = patched(scim.patch(f"Groups/{group_id}", rename, headers=OKTA_HEADERS))
    if body is not None:
        assert group_resource(body, group_id)["displayName"] == new_name
    got = group_resource(body_of(scim.get(f"Groups/{group_id}"), 200), group_id)
    assert got["displayName"] == new_name
    old = list_of(scim.get("Groups", query_string={"filter": f'displayName eq "{name}"'}))
    assert old["totalResults"] == 0
    new = list_of(scim.get("Groups", query_string={"filter": f'displayName eq "{new_name}"'}))
    assert [r["id"] for r in new["Resources"]] == [group_id]

    # Okta re-sends the same name with every membership update: not a conflict with itself.
    patched(scim.patch(f"Groups/{group_id}", rename, headers=OKTA_HEADERS))
    assert body_of(scim.get(f"Groups/{group_id}"), 200)["displayName"] == new_name

    # Add a member: value and display, no type.
    add_u1 = patch_op(
        {"op": "add", "path": "members", "value": [{"value": u1["id"], "display": u1["userName"]}]}
    )
    patched(scim.patch(f"Groups/{group_id}", add_u1, headers=OKTA_HEADERS))
    assert member_ids(body_of(scim.get(f"Groups/{group_id}"), 200)) == {u1["id"]}

    # The documented membership update: remove one by filter, add another, in one request.
    swap = patch_op(
        {"op": "remove", "path": f'members[value eq "{u1["id"]}"]'},
        {"op": "add", "path": "members", "value": [{"value": u2["id"], "display": u2["userName"]}]},
    )
    patched(scim.patch(f"Groups/{group_id}", swap, headers=OKTA_HEADERS))
    assert member_ids(body_of(scim.get(f"Groups/{group_id}"), 200)) == {u2["id"]}

    # Full push of the membership.
    replace_all = patch_op(
        {
            "op": "replace",
            "path": "members",
            "value": [
                {"value": u1["id"], "display": u1["userName"]},
                {"value": u2["id"], "display": u2["userName"]},
            ],
        }
    )
    patched(scim.patch(f"Groups/{group_id}", replace_all, headers=OKTA_HEADERS))
    assert member_ids(body_of(scim.get(f"Groups/{group_id}"), 200)) == {u1["id"], u2["id"]}

    empty = patch_op({"op": "replace", "path": "members", "value": []})
    patched(scim.patch(f"Groups/{group_id}", empty, headers=OKTA_HEADERS))
    got = group_resource(body_of(scim.get(f"Groups/{group_id}"), 200), group_id)
    assert member_ids(got) == set()
    assert got["displayName"] == new_name

    # Unlink pushed group, "Delete the group in the target app".
    resp = scim.delete(f"Groups/{group_id}", headers=OKTA_HEADERS)
    assert resp.status_code == 204, resp.get_data(as_text=True)[:500]
    assert not resp.get_data()
    error_of(scim.get(f"Groups/{group_id}"), 404)
    gone = list_of(scim.get("Groups", query_string={"filter": f'displayName eq "{new_name}"'}))
    assert gone["totalResults"] == 0
    for user in (u1, u2):  # deleting a group never deletes its users
        assert body_of(scim.get(f"Users/{user['id']}"), 200)["active"] is True


# "SCIM 2.0 Protocol Reference": Update a specific User (PUT) sends "groups": [] in the full body;
# `groups` is readOnly (RFC 7643 §4.1.2), so it must not undo pushed memberships (RFC 7644 §3.5.1:
# readOnly values in a PUT SHALL be ignored).
def test_okta_put_with_empty_groups_keeps_group_memberships(scim):
    """Okta: a profile PUT carrying "groups": [] leaves the user's pushed memberships alone."""
    user = create_user(scim, f"keeps.{tag()}@okta.local")
    group = {"schemas": [GROUP], "displayName": f"Pushed {tag()}", "members": []}
    group_id = group_resource(body_of(scim.post("Groups", group, headers=OKTA_HEADERS), 201))["id"]
    add = patch_op({"op": "add", "path": "members", "value": [{"value": user["id"]}]})
    patched(scim.patch(f"Groups/{group_id}", add, headers=OKTA_HEADERS))

    put_body = {
        "schemas": [USER],
        "id": user["id"],
        "userName": user["userName"],
        "name": {"givenName": "Test", "middleName": "Still", "familyName": "User"},
        "emails": [{"primary": True, "value": user["userName"], "type": "work"}],
        "active": True,
        "groups": [],
        "meta": {"resourceType": "User"},
    }
    body_of(scim.put(f"Users/{user['id']}", put_body, headers=OKTA_HEADERS), 200)

    assert member_ids(body_of(scim.get(f"Groups/{group_id}"), 200)) == {user["id"]}
    got = body_of(scim.get(f"Users/{user['id']}"), 200)
    assert got["name"]["middleName"] == "Still"


# "SCIM 2.0 Protocol Reference": Update a specific Group name / membership - custom (AIW)
# integrations send these as a PUT of the group.
def test_okta_aiw_group_update_by_put(scim):
    """Okta AIW: push a group, then PUT it back with members, then with a new name and members."""
    u1 = create_user(scim, f"aiw1.{tag()}@okta.local")
    u2 = create_user(scim, f"aiw2.{tag()}@okta.local")
    name = f"AIW group {tag()}"
    create = {"schemas": [GROUP], "displayName": name, "members": []}
    group_id = group_resource(body_of(scim.post("Groups", create, headers=OKTA_HEADERS), 201))["id"]

    current = body_of(scim.get(f"Groups/{group_id}", headers=OKTA_HEADERS), 200)
    with_u1 = {**current, "members": [{"value": u1["id"], "display": u1["userName"]}]}
    put = body_of(scim.put(f"Groups/{group_id}", with_u1, headers=OKTA_HEADERS), 200)
    assert group_resource(put, group_id)["displayName"] == name
    assert member_ids(body_of(scim.get(f"Groups/{group_id}"), 200)) == {u1["id"]}

    current = body_of(scim.get(f"Groups/{group_id}", headers=OKTA_HEADERS), 200)
    renamed = {
        **current,
        "displayName": f"{name} v2",
        "members": [{"value": u2["id"], "display": u2["userName"]}],
    }
    put = body_of(scim.put(f"Groups/{group_id}", renamed, headers=OKTA_HEADERS), 200)
    assert group_resource(put, group_id)["displayName"] == f"{name} v2"

    got = body_of(scim.get(f"Groups/{group_id}"), 200)
    assert got["displayName"] == f"{name} v2"
    assert member_ids(got) == {u2["id"]}  # PUT replaces the member list
