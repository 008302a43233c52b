"""SCIM Bulk through HTTP: bulkId references, failOnErrors, and the advertised limits."""

import secrets

from bridge import accounts
from tests.integration.test_scim_protocol import scim_error

BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


def test_bulk_with_bulk_id_references(scim):
    """A user created in one operation is added to a group in a later one by bulkId."""
    resp = scim.post(
        "Bulk",
        json={
            "schemas": [BULK],
            "Operations": [
                {
                    "method": "POST",
                    "path": "/Users",
                    "bulkId": "u1",
                    "data": {"userName": "bulk1@example.com"},
                },
                {
                    "method": "POST",
                    "path": "/Groups",
                    "bulkId": "g1",
                    "data": {"displayName": "Bulkers", "members": [{"value": "bulkId:u1"}]},
                },
                {
                    "method": "PATCH",
                    "path": "/Users/bulkId:u1",
                    "data": {"Operations": [{"op": "replace", "path": "title", "value": "Bulked"}]},
                },
            ],
        },
    )
    assert resp.status_code == 200
    ops = resp.json["Operations"]
    assert [o["status"] for o in ops] == ["201", "201", "200"]
    assert ops[0]["bulkId"] == "u1" and ops[0]["location"].endswith(
        "/Users/" + ops[0]["location"].rsplit("/", 1)[1]
    )
    user_id = ops[0]["location"].rsplit("/", 1)[1]
    group = scim.get(ops[1]["location"].split("/scim/v2/")[1]).json
    assert [m["value"] for m in group["members"]] == [user_id]
    assert scim.get(f"Users/{user_id}").json["title"] == "Bulked"


def test_bulk_errors_and_fail_on_errors(scim):
    """Failed operations carry a SCIM error; failOnErrors stops the run after that many."""
    resp = scim.post(
        "Bulk",
        json={
            "schemas": [BULK],
            "failOnErrors": 1,
            "Operations": [
                {
                    "method": "POST",
                    "path": "/Users",
                    "bulkId": "a",
                    "data": {"userName": "dupe@example.com"},
                },
                {
                    "method": "POST",
                    "path": "/Users",
                    "bulkId": "b",
                    "data": {"userName": "DUPE@example.com"},
                },
                {
                    "method": "POST",
                    "path": "/Users",
                    "bulkId": "c",
                    "data": {"userName": "never@example.com"},
                },
            ],
        },
    )
    ops = resp.json["Operations"]
    assert [o["status"] for o in ops] == ["201", "409"]
    assert ops[1]["response"]["scimType"] == "uniqueness"
    assert (
        scim.get("Users", query_string={"filter": 'userName eq "never@example.com"'}).json[
            "totalResults"
        ]
        == 0
    )


def test_unresolvable_bulk_id(scim):
    """A reference to a bulkId no earlier POST created fails that operation only."""
    resp = scim.post(
        "Bulk",
        json={"Operations": [{"method": "DELETE", "path": "/Users/bulkId:nope"}]},
    )
    assert resp.json["Operations"][0]["status"] == "409"


def test_too_many_operations_is_413(scim):
    """More operations than maxOperations is refused whole with 413."""
    op = {"method": "DELETE", "path": "/Users/x"}
    scim_error(scim.post("Bulk", json={"schemas": [BULK], "Operations": [op] * 1001}), 413)


def test_bulk_delete_and_version(scim):
    """DELETE in bulk honours version (If-Match): a stale version is 412."""
    user = scim.post("Users", json={"userName": "vers@example.com"}).json
    resp = scim.post(
        "Bulk",
        json={
            "Operations": [
                {"method": "DELETE", "path": f"/Users/{user['id']}", "version": 'W/"9"'},
                {"method": "DELETE", "path": f"/Users/{user['id']}", "version": 'W/"1"'},
            ]
        },
    )
    assert [o["status"] for o in resp.json["Operations"]] == ["412", "204"]


def test_after_a_bulk_request_the_thread_reads_fresh(scim, app, store):
    """Each Bulk operation is a request inside the Bulk request. When the Bulk is done, work
    outside a request on the same thread reads the database as it is now: the Bulk's own
    session was once left open, its transaction's snapshot read for the life of the thread."""
    op = {"method": "POST", "path": "/Users", "bulkId": "c1", "data": {"userName": "c@x.test"}}
    resp = scim.post("Bulk", json={"schemas": [BULK], "Operations": [op, {**op, "bulkId": "c2"}]})
    assert [o["status"] for o in resp.json["Operations"]] == ["201", "409"]
    bridge_store = app.extensions["bridge.store"]
    with bridge_store.read() as db:
        accounts.get_account(db, scim.account.slug)
    made = accounts.create_account(store, f"later-{secrets.token_hex(3)}", name="L", actor="t")
    with bridge_store.read() as db:
        assert accounts.get_account(db, made.slug).id == made.id
