"""PostgreSQL restarts while SCIM creates, member adds and logins run: 503 with Retry-After
during the outage (never a 500, never a half write), recovery without restarting the app, and
every acknowledged change stored exactly once."""

from __future__ import annotations

import json
import time

import pytest

from bridge import schema
from bridge.store import Store
from tests.faults.load import BASE_URL, Load, Tenant, check_store
from tests.servers import Gunicorn

pytestmark = pytest.mark.faults


def test_database_restart_under_load(private_pg, slug, tmp_path):
    """Stop PostgreSQL for 3 s under 4 clients; the same gunicorn workers serve on afterwards."""
    store = Store(private_pg.url)
    schema.upgrade(store.engine)
    tenant = Tenant.make(store, slug)
    server = Gunicorn(
        private_pg.url, tmp_path / "instance", workers=2, env={"BRIDGE_BASE_URL": BASE_URL}
    )
    server.start()
    try:
        load = Load(tenant, [server.port])
        load.make_group()
        workers = set(server.worker_pids())
        threads = load.run(threads=4)
        time.sleep(2)
        private_pg.restart(outage=3)
        time.sleep(3)
        load.finish(threads)
        assert set(server.worker_pids()) == workers  # recovered without a restart
        after = [load.create(100_000 + n, server.port).status for n in range(3)]
        after.append(load.login(100_010, server.port).status)
        assert after == [201, 201, 201, 302]
        statuses = load.statuses()
        assert set(statuses) <= {201, 204, 302, 503}, (statuses, _bodies(load, 500))
        assert statuses[503] > 0 and statuses[201] > 0, statuses  # the outage was seen
        refused = [o for o in load.outcomes if o.status == 503]
        assert all(o.retry_after == "5" for o in refused)
        scim = [o for o in refused if o.kind != "login"]
        if scim:
            body = json.loads(scim[0].body)
            assert body["status"] == "503" and "unavailable" in body["detail"]
        sso = [o for o in refused if o.kind == "login"]
        if sso:
            assert b"briefly unavailable" in sso[0].body
        counts = check_store(store, tenant, load.outcomes)
        assert counts["users"] >= statuses[201]
        assert "database unavailable" in server.log()
    finally:
        server.stop()
        store.dispose()


def _bodies(load, status):
    return [o.body[:300] for o in load.outcomes if o.status == status][:3]
