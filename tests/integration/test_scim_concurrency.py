"""Concurrent SCIM requests settle in the database: one winner, no lost members or operations."""

from collections import Counter

from sqlalchemy import select

from bridge.models import User
from tests.conftest import ScimClient
from tests.integration.test_concurrency import THREADS, _race


def _client(scim):
    """Each thread gets its own test client on the same app, with the same token."""
    return ScimClient(scim.client.application.test_client(), scim.token, scim.account)


def test_parallel_creates_of_one_user_name(scim):
    """Eight parallel POSTs of one userName give one 201 and seven 409s."""
    clients = [_client(scim) for _ in range(THREADS)]
    results = _race(
        lambda i: clients[i].post("Users", json={"userName": "race@example.com"}).status_code
    )
    assert Counter(results) == {201: 1, 409: THREADS - 1}, results
    assert (
        scim.get("Users", query_string={"filter": 'userName eq "race@example.com"'}).json[
            "totalResults"
        ]
        == 1
    )


def test_parallel_member_adds_all_land(scim):
    """Eight parallel PATCHes, each adding a different member to one group, all land."""
    users = [
        scim.post("Users", json={"userName": f"m{i}@example.com"}).json["id"]
        for i in range(THREADS)
    ]
    group = scim.post("Groups", json={"displayName": "Crowd"}).json
    clients = [_client(scim) for _ in range(THREADS)]
    results = _race(
        lambda i: (
            clients[i]
            .patch(
                f"Groups/{group['id']}",
                json={
                    "Operations": [{"op": "add", "path": "members", "value": [{"value": users[i]}]}]
                },
            )
            .status_code
        )
    )
    assert results == [204] * THREADS
    doc = scim.get(f"Groups/{group['id']}").json
    assert sorted(m["value"] for m in doc["members"]) == sorted(users)
    assert doc["meta"]["version"] == f'W/"{1 + THREADS}"'


def test_parallel_patches_of_one_user_lose_nothing(scim):
    """Eight parallel PATCHes of one user, each adding its own e-mail, all land."""
    user = scim.post("Users", json={"userName": "busy@example.com"}).json
    clients = [_client(scim) for _ in range(THREADS)]
    results = _race(
        lambda i: (
            clients[i]
            .patch(
                f"Users/{user['id']}",
                json={
                    "Operations": [
                        {"op": "add", "path": "emails", "value": [{"value": f"e{i}@example.com"}]}
                    ]
                },
            )
            .status_code
        )
    )
    assert results == [200] * THREADS
    emails = sorted(e["value"] for e in scim.get(f"Users/{user['id']}").json["emails"])
    assert emails == sorted(f"e{i}@example.com" for i in range(THREADS))


def test_parallel_creates_with_one_new_external_id(scim, store):
    """Eight parallel POSTs of different userNames with one new externalId: one 201, seven 409
    uniqueness (the unique index settles what the in-transaction check cannot), one row."""
    clients = [_client(scim) for _ in range(THREADS)]
    results = _race(
        lambda i: clients[i].post(
            "Users", json={"userName": f"ext{i}@example.com", "externalId": "okta-00u1"}
        )
    )
    assert Counter(r.status_code for r in results) == {201: 1, 409: THREADS - 1}, results
    for r in results:
        if r.status_code == 409:
            assert r.json["scimType"] == "uniqueness" and "externalId" in r.json["detail"]
    with store.read() as db:
        rows = db.scalars(
            select(User.user_name).where(
                User.account_id == scim.account.id, User.external_id == "okta-00u1"
            )
        ).all()
    (winner,) = [r.json for r in results if r.status_code == 201]
    assert rows == [winner["userName"]]
    found = scim.get("Users", query_string={"filter": 'externalId eq "okta-00u1"'}).json
    assert found["totalResults"] == 1


def test_parallel_patches_to_one_new_external_id(scim, store):
    """Eight users PATCHed at once to one new externalId: one 200, seven 409 uniqueness, and
    exactly one user holds it."""
    ids = [
        scim.post("Users", json={"userName": f"p{i}@example.com"}).json["id"]
        for i in range(THREADS)
    ]
    clients = [_client(scim) for _ in range(THREADS)]
    change = {"Operations": [{"op": "replace", "path": "externalId", "value": "entra-42"}]}
    results = _race(lambda i: clients[i].patch(f"Users/{ids[i]}", json=change))
    assert Counter(r.status_code for r in results) == {200: 1, 409: THREADS - 1}, results
    assert all(r.json["scimType"] == "uniqueness" for r in results if r.status_code == 409)
    with store.read() as db:
        holders = db.scalars(
            select(User.id).where(
                User.account_id == scim.account.id, User.external_id == "entra-42"
            )
        ).all()
    assert len(holders) == 1
