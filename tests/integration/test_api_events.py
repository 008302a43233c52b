"""The management API's event feed, webhook endpoints and OIDC clients: scoped, per account,
RFC 9457 problems for bad input, nothing written when refused."""

import secrets

from sqlalchemy import func, select

from bridge import accounts, events, provisioning
from bridge.models import OidcClient, WebhookEndpoint
from tests import factories
from tests.integration.api_client import problem_type


def _churn(scim):
    user = scim.post("Users", {"userName": "ev@example.com"}).json
    scim.patch(
        f"Users/{user['id']}", {"Operations": [{"op": "replace", "value": {"active": False}}]}
    )
    scim.delete(f"Users/{user['id']}")


def test_events_page_by_cursor_complete_and_in_order(api_for, scim, store):
    """GET /events pages through exactly what the feed holds; `type` filters."""
    _churn(scim)
    api = api_for(scim.account, "read")
    with store.read() as db:
        want, _ = events.page(db, scim.account.id, limit=1000)
    seen, after = [], "0"
    for _ in range(50):
        page = api.get("events", query_string={"after": after, "limit": 2})
        assert page.status_code == 200, page.json
        if not page.json["events"]:
            break
        seen += page.json["events"]
        after = page.json["next"]
    assert seen == [e.as_json() for e in want]
    only = api.get("events", query_string={"type": "user.deactivated,user.deleted"}).json
    assert [e["type"] for e in only["events"]] == ["user.deactivated", "user.deleted"]


def test_events_refuse_unknown_types_and_stay_in_the_account(api_for, scim, store):
    """An unknown type is a 400 problem; another account's key sees none of these events."""
    _churn(scim)
    api = api_for(scim.account, "read")
    bad = api.get("events", query_string={"type": "user.exploded"})
    assert bad.status_code == 400 and "unknown event type" in bad.json["detail"]
    assert problem_type(bad)
    other = accounts.create_account(store, f"other-{secrets.token_hex(4)}", actor="t")
    theirs = provisioning.provision(
        store, other.id, factories.profile("x@example.com"), actor="t"
    ).user_id
    seen = api_for(other, "read").get("events").json["events"]
    assert [(e["type"], e["data"]["user"]["id"]) for e in seen] == [("user.created", str(theirs))]


def test_webhooks_need_admin_and_https(api_for, account, store):
    """A write key may not add webhooks (403); an admin's plain-http or private URL is a 400;
    nothing is written."""
    write = api_for(account, "write")
    assert write.post("webhooks", {"url": "https://hooks.example.com/x"}).status_code == 403
    admin = api_for(account, "admin")
    for url, reason in (
        ("http://hooks.example.com/x", "must be https"),
        ("https://127.0.0.1/x", "non-public address"),
    ):
        refused = admin.post("webhooks", {"url": url})
        assert refused.status_code == 400 and reason in refused.json["detail"]
    unknown = admin.post("webhooks", {"url": "https://127.0.0.1/x", "events": ["nope"]})
    assert unknown.status_code == 400 and "unknown event type" in unknown.json["detail"]
    with store.read() as db:
        assert (
            db.scalar(
                select(func.count())
                .select_from(WebhookEndpoint)
                .where(WebhookEndpoint.account_id == account.id)
            )
            == 0
        )
    assert admin.get("webhooks").json == {"webhooks": []}


def test_clients_lifecycle_over_the_api(api_for, account, store):
    """Add (secret shown once, only its hash kept), list, rotate, remove; a bad redirect URI is
    a 400 with nothing written."""
    admin = api_for(account, "admin")
    made = admin.post(
        "clients", {"name": "Product", "redirect_uris": ["https://product.example.com/cb"]}
    )
    assert made.status_code == 201
    client_id, secret = made.json["client_id"], made.json["client_secret"]
    listed = admin.get("clients").json["clients"]
    assert [c["client_id"] for c in listed] == [client_id] and secret not in str(listed)
    with store.read() as db:
        row = db.scalar(select(OidcClient).where(OidcClient.client_id == client_id))
        assert row.secret_hash != secret
    rotated = admin.post(f"clients/{client_id}/rotate-secret").json["client_secret"]
    assert rotated and rotated != secret
    bad = admin.post("clients", {"name": "X", "redirect_uris": ["http://evil.example/cb"]})
    assert bad.status_code == 400 and "must be https" in bad.json["detail"]
    assert admin.delete(f"clients/{client_id}").status_code == 204
    assert admin.get("clients").json == {"clients": []}
    assert admin.delete(f"clients/{client_id}").status_code == 404
