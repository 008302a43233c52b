"""SIGHUP (gunicorn's graceful reload, what a rolling deploy does to each instance) while
clients send creates and logins: every request is answered, none dropped."""

from __future__ import annotations

import signal
import time

import pytest

from bridge.store import Store
from tests.faults.load import BASE_URL, Load, Tenant, check_store
from tests.servers import Gunicorn

pytestmark = pytest.mark.faults


def test_sighup_drops_no_request(database_url, slug, tmp_path):
    """Two reloads under 4 clients: all workers replaced, every request got its 2xx."""
    store = Store(database_url)
    tenant = Tenant.make(store, slug)
    server = Gunicorn(
        database_url, tmp_path / "instance", workers=2, env={"BRIDGE_BASE_URL": BASE_URL}
    ).start()
    try:
        load = Load(tenant, [server.port])
        load.make_group()
        before = set(server.worker_pids())
        threads = load.run(threads=4)
        for _ in range(2):
            time.sleep(1.5)
            server.proc.send_signal(signal.SIGHUP)
        time.sleep(3)
        load.finish(threads)
        assert not before & set(server.worker_pids())  # every worker was replaced
        statuses = load.statuses()
        assert set(statuses) <= {201, 204, 302}, statuses
        assert statuses[201] >= 3 and statuses[302] >= 1, statuses
        check_store(store, tenant, load.outcomes)
    finally:
        server.stop()
        store.dispose()
