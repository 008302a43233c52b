"""The sample product in examples/product (Authlib's Flask client, the standardwebhooks
verifier) signs a person in through the bridge, shows their role and grants, and drops its
session when the IdP deactivates them over SCIM (back-channel logout, and the webhook)."""

import importlib.util
import threading
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from bridge import clients, delivery, idps, webhooks
from bridge.models import Environment, Grant
from tests.browser_flow import Browser
from tests.saml_idp import TestIdP

APP = Path(__file__).parents[2] / "examples" / "product" / "app.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("example_product", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def product(live, store, scim):
    """The example product served on its own loopback port, registered with the account as an
    OIDC client (with back-channel logout) and a webhook endpoint; a delivery worker running."""
    example = _load_example()
    holder = {}
    server = make_server("127.0.0.1", 0, lambda e, s: holder["app"](e, s), threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    slug = scim.account.slug
    made = clients.add(
        store,
        slug,
        name="Product",
        redirect_uris=[f"{base}/callback"],
        backchannel_logout_uri=f"{base}/backchannel-logout",
        actor="t",
    )
    key = live.app.config["SECRET_KEY"]
    hook = webhooks.add(
        store,
        slug,
        f"{base}/webhooks",
        types=["user.deactivated"],
        secret_key=key,
        allow_private=True,
        actor="t",
    )
    holder["app"] = example.create_app(
        {
            "BRIDGE_URL": live.base_url,
            "CLIENT_ID": made.client_id,
            "CLIENT_SECRET": made.secret,
            "WEBHOOK_SECRET": hook.secret,
        }
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop = threading.Event()
    tuning = delivery.Tuning(threads=2, poll_seconds=0.05)
    sender = delivery.Sender(store, key, live.base_url, True, tuning)
    worker = threading.Thread(
        target=delivery.run, args=(store, sender), kwargs={"stop": stop}, daemon=True
    )
    worker.start()
    yield base, example
    stop.set()
    worker.join(timeout=15)
    server.shutdown()


def test_product_signs_in_shows_access_and_drops_deactivated_people(product, live, store, scim):
    """Sign-in through the bridge (SAML behind it); role, environments and grants shown; a SCIM
    deactivation ends the product's session within seconds."""
    base, example = product
    idp = TestIdP()
    idps.add(store, scim.account.slug, idp.metadata_xml(), name="okta", actor="t")
    user = scim.post(
        "Users",
        {"userName": "ann@example.com", "emails": [{"value": "ann@example.com", "primary": True}]},
    ).json
    with store.read() as db:
        env = db.scalar(
            select(Environment).where(
                Environment.account_id == scim.account.id, Environment.name == "production"
            )
        )
    store.write(
        lambda db: db.add(
            Grant(
                account_id=scim.account.id,
                user_id=uuid.UUID(user["id"]),
                environment_id=env.id,
                kind="collection",
                path="launch",
                level="viewer",
                provenance="manual",
            )
        )
    )
    browser = Browser(idp, live.base_url, scim.account.slug)
    page = browser.follow(f"{base}/login", stop=lambda url: False)
    assert page.status_code == 200, page.text
    shown = page.json()
    assert shown["sub"] == user["id"] and shown["role"] == "media_library_user"
    assert shown["environments"] == ["production"]
    assert shown["grants"] == [
        {
            "environment": "production",
            "kind": "collection",
            "path": "launch",
            "level": "viewer",
            "provenance": "manual",
        }
    ]
    assert len(example.SESSIONS) == 1

    scim.patch(
        f"Users/{user['id']}", {"Operations": [{"op": "replace", "value": {"active": False}}]}
    )
    deadline = time.monotonic() + 10
    while example.SESSIONS and time.monotonic() < deadline:
        time.sleep(0.05)
    assert example.SESSIONS == {}
    again = browser.http.get(f"{base}/", allow_redirects=False, timeout=10)
    assert again.status_code == 302 and again.headers["Location"].endswith("/login")
