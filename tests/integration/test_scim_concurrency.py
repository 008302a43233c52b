"""Concurrent SCIM requests settle in the database: one winner, no lost members or operations."""

from collections import Counter

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
