"""Two gunicorn masters on two ports over one PostgreSQL take an interleaved SCIM and login load;
the store ends as the same load leaves it on one instance."""

from __future__ import annotations

import secrets
from collections import Counter

import pytest
from sqlalchemy import select

from bridge import schema
from bridge.models import LoginAttempt
from bridge.store import Store
from tests.faults.conftest import ON_POSTGRES
from tests.faults.load import BASE_URL, Load, Tenant, check_store
from tests.servers import Gunicorn

pytestmark = pytest.mark.faults
OPERATIONS = 60
OK = {201, 204, 302}


def _fixed_load(store, tenant, ports):
    load = Load(tenant, ports, prefix="i", limit=OPERATIONS)
    load.make_group()
    load.finish(load.run(threads=4), drain=True)
    refused = [(o.kind, o.status, o.body[:200]) for o in load.outcomes if o.status not in OK]
    if refused:  # the login log says why a login was refused
        with store.read() as db:
            why = Counter(
                db.execute(
                    select(LoginAttempt.reason, LoginAttempt.detail).where(
                        LoginAttempt.account_id == tenant.account_id, LoginAttempt.ok.is_(False)
                    )
                ).all()
            )
        pytest.fail(f"{load.statuses()}: {refused[:2]}; login log: {why}")
    return load


@pytest.mark.skipif(not ON_POSTGRES, reason="scale-out is over PostgreSQL (the PostgreSQL pass)")
def test_two_instances_equal_one(empty_database_url, tmp_path):
    """Same users, memberships, logins and audit-event count; one verified chain per account."""
    url = empty_database_url()
    store = Store(url)
    schema.upgrade(store.engine)
    env = {"BRIDGE_BASE_URL": BASE_URL, "BRIDGE_SECRET_KEY": secrets.token_hex(32)}
    servers = [
        Gunicorn(url, tmp_path / f"instance{i}", workers=1, env=env).start() for i in range(3)
    ]
    try:
        two = Tenant.make(store, "two-instances")
        one = Tenant.make(store, "one-instance")
        load_two = _fixed_load(store, two, [servers[0].port, servers[1].port])
        load_one = _fixed_load(store, one, [servers[2].port])
        counts_two = check_store(store, two, load_two.outcomes)
        counts_one = check_store(store, one, load_one.outcomes)
        assert counts_two == counts_one, (counts_two, counts_one)
        assert counts_two["users"] == OPERATIONS  # two creates and one login in every three
        assert sorted(o.key for o in load_two.outcomes if o.kind != "member") == sorted(
            o.key for o in load_one.outcomes if o.kind != "member"
        )
        for server in servers[:2]:  # both instances took their share (their access logs)
            assert server.log().count('"method":"POST"') >= OPERATIONS // 3
    finally:
        for server in servers:
            server.stop()
        store.dispose()
