"""Prometheus metrics: never public by default, behind the token or on their own listener, and
counting real SCIM and SAML traffic across gunicorn workers (multiprocess mode)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from bridge import accounts, create_app, idps, schema, webhooks
from bridge.store import Store
from tests.conftest import ScimClient
from tests.receiver import Receiver
from tests.saml_idp import TestIdP
from tests.servers import GUNICORN, Gunicorn, call, free_port


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} from the text exposition format."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found, name, **labels):
    return found.get((name, frozenset(labels.items())), 0.0)


def test_no_metrics_on_the_public_app_by_default(client):
    """Without BRIDGE_METRICS_TOKEN the app has no /metrics at all."""
    resp = client.get("/metrics")
    assert resp.status_code == 404 and b"bridge_" not in resp.data


def test_metrics_need_the_token(settings):
    """With a token configured, /metrics answers 401 without it or with a wrong one."""
    token = secrets.token_urlsafe(24)
    app = create_app(replace(settings, metrics_token=token))
    try:
        client = app.test_client()
        for header in ({}, {"Authorization": "Bearer nope"}, {"Authorization": token}):
            resp = client.get("/metrics", headers=header)
            assert resp.status_code == 401 and b"bridge_" not in resp.data
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        resp = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200 and resp.mimetype == "text/plain"
        assert b"bridge_http_requests_total" in resp.data
    finally:
        app.extensions["bridge.store"].dispose()


def _now(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def test_committed_changes_count_once_and_refusals_count_none(scim):
    """A SCIM create counts its user, role and audit event; a refused duplicate counts nothing
    stored, only its operation with the status as result."""
    before_users = _now("bridge_provisioning_changes_total", kind="user", op="created")
    before_audit = _now("bridge_audit_appends_total", action="user.create")
    before_409 = _now(
        "bridge_scim_operations_total", operation="create_user", result="409", account=""
    )
    user = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "m@example.com"}
    assert scim.post("Users", json=user).status_code == 201
    assert scim.post("Users", json=user).status_code == 409
    assert _now("bridge_provisioning_changes_total", kind="user", op="created") == before_users + 1
    assert _now("bridge_audit_appends_total", action="user.create") == before_audit + 1
    assert (
        _now("bridge_scim_operations_total", operation="create_user", result="409", account="")
        == before_409 + 1
    )


@pytest.fixture
def served(database_url, store, account, tmp_path):
    """gunicorn with 2 workers, the metrics listener and the token, an account with a SCIM token
    and an IdP-initiated test IdP."""
    if not GUNICORN.exists():
        pytest.skip("gunicorn is installed by `make test`; this interpreter has none")
    scim_token = accounts.issue_token(store, account.slug, label="m", actor="t").raw
    idp = TestIdP()
    idps.add(
        store,
        account.slug,
        idp.metadata_xml(),
        name="test",
        allow_idp_initiated=True,
        actor="t",
    )
    metrics_port, metrics_token = free_port(), secrets.token_urlsafe(24)
    server = Gunicorn(
        database_url,
        tmp_path / "instance",
        workers=2,
        env={
            "BRIDGE_METRICS_BIND": f"127.0.0.1:{metrics_port}",
            "BRIDGE_METRICS_TOKEN": metrics_token,
        },
    ).start()
    yield server, scim_token, idp, metrics_port, metrics_token
    server.stop()


def _create(server, token, n):
    body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": f"u{n}@ex.com"}
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    return call(server.port, "POST", "/scim/v2/Users", body=body, headers=headers).status


def _login(server, account, idp, xml):
    from urllib.parse import urlencode

    form = urlencode(idp.post_form(xml))
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    return call(server.port, "POST", f"/saml/{account.slug}/acs", body=form, headers=headers)


def test_counters_move_under_scim_and_saml_through_two_workers(served, account):
    """The master's listener adds up both workers: exact counts of what SCIM and SAML did."""
    server, token, idp, metrics_port, metrics_token = served
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda n: _create(server, token, n), range(8)))
    assert statuses == [201] * 8 and _create(server, token, 0) == 409
    base = server.base_url
    xmls = [
        idp.response(
            destination=f"{base}/saml/{account.slug}/acs",
            audience=f"{base}/saml/{account.slug}/metadata",
            name_id=f"s{n}@ex.com",
        )
        for n in range(3)
    ]
    with ThreadPoolExecutor(3) as pool:
        logins = list(pool.map(lambda x: _login(server, account, idp, x), xmls))
    assert [r.status for r in logins] == [302] * 3, [r.body[-400:] for r in logins]
    replay = _login(server, account, idp, xmls[0])
    assert replay.status == 400

    public = call(server.port, "GET", "/metrics")
    assert public.status == 401 and b"bridge_" not in public.body
    listener = call(metrics_port, "GET", "/metrics")
    behind_token = call(
        server.port, "GET", "/metrics", headers={"Authorization": f"Bearer {metrics_token}"}
    )
    assert listener.status == 200 and behind_token.status == 200
    found = samples(listener.body.decode())
    scim_ok = dict(operation="create_user", result="ok", account="")
    assert value(found, "bridge_scim_operations_total", **scim_ok) == 8
    assert value(found, "bridge_scim_operations_total", **{**scim_ok, "result": "409"}) == 1
    login = dict(idp_kind="other", result="ok", reason="ok", account="")
    assert value(found, "bridge_saml_logins_total", **login) == 3
    refused = dict(login, result="refused", reason="replayed")
    assert value(found, "bridge_saml_logins_total", **refused) == 1
    assert value(found, "bridge_provisioning_changes_total", kind="user", op="created") == 11
    assert value(found, "bridge_provisioning_changes_total", kind="role", op="created") == 11
    assert value(found, "bridge_audit_appends_total", action="user.create") == 11
    evaluations = sum(
        v for (name, _), v in found.items() if name == "bridge_policy_evaluations_total"
    )
    assert evaluations == 11
    route = dict(method="POST", route="/scim/v2/Users", status="201")
    assert value(found, "bridge_http_requests_total", **route) == 8
    assert value(found, "bridge_http_request_duration_seconds_count", **route) == 8
    acs = dict(method="POST", route="/saml/<slug>/acs", status="302")
    assert value(found, "bridge_http_requests_total", **acs) == 3
    assert ("bridge_db_pool_connections_in_use", frozenset()) in found
    # The token route reads the same files: its counts include what the listener saw.
    again = samples(behind_token.body.decode())
    assert value(again, "bridge_scim_operations_total", **scim_ok) == 8


def test_worker_counts_deliveries_and_its_backlog(empty_database_url, settings, tmp_path):
    """`idbridge worker` with BRIDGE_WORKER_METRICS_BIND: one failed attempt then two deliveries
    counted by outcome, and the backlog back at 0 (a database of its own: no other test's
    deliveries)."""
    url = empty_database_url()
    store = Store(url)
    schema.upgrade(store.engine)
    key = settings.ensure_secret_key().secret_key
    account = accounts.create_account(store, "hooks", name="hooks", actor="t")
    accounts.add_environment(store, "hooks", "production", default=True, actor="t")
    token = accounts.issue_token(store, "hooks", label="t", actor="t").raw
    receiver = Receiver()
    added = webhooks.add(
        store,
        "hooks",
        receiver.url,
        types=["user.created"],
        secret_key=key,
        allow_private=True,
        actor="t",
    )
    receiver.secrets, receiver.fail_next = [added.secret], 1
    app = create_app(replace(settings, database_url=url, secret_key=key))
    port = free_port()
    env = {
        **os.environ,
        "BRIDGE_DATABASE_URL": url,
        "BRIDGE_SECRET_KEY": key,
        "BRIDGE_INSTANCE_PATH": str(tmp_path),
        "BRIDGE_ALLOW_PRIVATE_WEBHOOKS": "1",
        "BRIDGE_WORKER_METRICS_BIND": f"127.0.0.1:{port}",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "worker", "--threads", "2"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        scim = ScimClient(app.test_client(), token, account)
        for name in ("h1@ex.com", "h2@ex.com"):
            assert scim.post("Users", json={"schemas": [USER], "userName": name}).status_code == 201
        assert receiver.wait_for(lambda r: len(r.counts) == 2, timeout=60)
        webhook = dict(kind="webhook")
        deadline, found = time.monotonic() + 30, {}
        while time.monotonic() < deadline:
            try:
                found = samples(call(port, "GET", "/metrics").body.decode())
            except OSError:
                found = {}
            done = value(found, "bridge_webhook_deliveries_total", **webhook, outcome="delivered")
            if done == 2 and value(found, "bridge_webhook_backlog") == 0:
                break
            time.sleep(0.5)
        assert value(found, "bridge_webhook_deliveries_total", **webhook, outcome="delivered") == 2
        assert value(found, "bridge_webhook_deliveries_total", **webhook, outcome="retrying") == 1
        assert value(found, "bridge_webhook_backlog") == 0
        assert value(found, "bridge_webhook_oldest_pending_seconds") == 0
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        receiver.close()
        app.extensions["bridge.store"].dispose()
        store.dispose()
