"""SCIM requests and SAML logins read without a transaction on PostgreSQL (bridge.store,
`scope(snapshot=False)`): their reads each stand alone (a SCIM request's token, then one
resource, or both in one statement; a login's account, then its pending request), so no BEGIN
and no ROLLBACK are sent for them: two round trips per request. Their writes keep their
transactions, and a request that needs one snapshot for its reads keeps it (SCIM `/.search`,
whose groups' members stream through a server-side cursor, which only lives in a transaction).

Told from psycopg's own view of its connection after each statement: IDLE (no transaction
open) or INTRANS (inside one)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from tests.integration.test_scim_users import create
from tests.integration.test_statement_counts import Logins


@pytest.fixture
def engine(app, store):
    if store.dialect != "postgresql":
        pytest.skip("SQLite's transactions cost no round trip: its reads keep one")
    return app.extensions["bridge.store"].engine


@contextmanager
def states(engine) -> Iterator[list[str]]:
    """psycopg's transaction status after each statement on the engine, with its verb (INSERT
    for a statement that inserts in a data-modifying CTE: a new user's rows go with the audit
    event's, bridge.values)."""
    seen: list[str] = []

    def after(conn, cursor, statement, parameters, context, executemany):
        status = conn.connection.dbapi_connection.info.transaction_status.name
        verb = "INSERT" if "INSERT INTO" in statement else statement.split()[0]
        seen.append(f"{verb} {status}")

    event.listen(engine, "after_cursor_execute", after)
    try:
        yield seen
    finally:
        event.remove(engine, "after_cursor_execute", after)


def test_a_scim_read_sends_no_transaction(scim, engine):
    """GET by id and a filter (each the token with the user or the page, one statement): each
    read on its own."""
    made = create(scim, "alone@example.com")
    with states(engine) as seen:
        assert scim.get(f"Users/{made['id']}").status_code == 200
        found = scim.get("Users", query_string={"filter": 'userName eq "alone@example.com"'})
        assert found.status_code == 200 and found.json["totalResults"] == 1
    assert len(seen) == 2 and all(s.endswith(" IDLE") for s in seen), seen


def test_a_scim_write_keeps_its_transaction(scim, engine):
    """A create: the token read alone, the user written in one transaction as ever."""
    assert scim.get("Users", query_string={"count": 0}).status_code == 200  # the token's use,
    # the log's purge (a write each, at most once a minute) are behind us
    with states(engine) as seen:
        assert scim.post("Users", json={"userName": "written@example.com"}).status_code == 201
    assert seen[0] == "SELECT IDLE", seen
    assert seen[1:] and all(s.endswith("INTRANS") for s in seen[1:]), seen
    assert any(s.startswith("INSERT") for s in seen), seen


def test_a_search_across_resources_keeps_one_snapshot(scim, engine):
    """`/.search` reads users, groups and members (a server-side cursor) in one transaction."""
    member = create(scim, "member@example.com")
    group = scim.post(
        "Groups", json={"displayName": "Searched", "members": [{"value": member["id"]}]}
    )
    assert group.status_code == 201
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": 'displayName eq "Searched"',
    }
    with states(engine) as seen:
        resp = scim.post(".search", json=body)
    assert resp.status_code == 200, resp.json
    groups = [r for r in resp.json["Resources"] if r.get("displayName") == "Searched"]
    assert [m["value"] for m in groups[0]["members"]] == [member["id"]]
    assert seen[1:] and all(s.endswith("INTRANS") for s in seen[1:]), seen


def test_a_saml_login_reads_alone_and_writes_in_one_transaction(client, store, account, engine):
    """SP-initiated: /login reads the account alone and writes the pending request in one
    transaction; the ACS reads the account with that request alone (one statement), then writes
    the login (the request used up, the user, the session, the log) in one."""
    logins = Logins(client, store, account)
    assert logins.post("warm@example.com").status_code == 302  # the SP key is made
    with states(engine) as started:
        request_id = logins.start()
    with states(engine) as seen:
        resp = logins.post("ann@example.com", in_response_to=request_id)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    for steps, reads in ((started, 1), (seen, 1)):
        assert [s.split()[1] for s in steps[:reads]] == ["IDLE"] * reads, steps
        writes = steps[reads:]
        assert writes and all(s.endswith(" INTRANS") for s in writes), steps
        assert any(s.startswith("INSERT") for s in writes), steps
    with states(engine) as seen:
        assert client.get(f"/saml/{account.slug}/metadata").status_code == 200
    assert seen == ["SELECT IDLE"]
