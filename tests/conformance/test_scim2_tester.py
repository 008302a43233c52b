"""scim2-tester's check_server against the app: zero failures is part of the suite."""

from collections import Counter

from scim2_client.engines.wsgi import WSGISCIMClient
from scim2_tester import Status, check_server

FAILING = {Status.ERROR, Status.CRITICAL}


def test_scim2_tester_finds_no_failures(app, scim):
    """Every check of scim2-tester passes (discovery, CRUD, queries, PATCH, misc)."""
    client = WSGISCIMClient(
        app, base_url="http://localhost/scim/v2", headers={"Authorization": f"Bearer {scim.token}"}
    )
    results = check_server(client, raise_exceptions=False)
    failures = [
        f"{r.status.name} {r.resource_type or '-'} {r.title}: {r.reason}"
        for r in results
        if r.status in FAILING
    ]
    assert not failures, "\n".join(failures)
    assert Counter(r.status for r in results)[Status.SUCCESS] > 50
