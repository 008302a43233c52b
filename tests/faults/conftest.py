"""Fault tests: real gunicorn servers under load while the database restarts, workers die, the
master reloads or the SQLite file turns read-only. Marked `faults` (a quick local run skips them
with `-m "not faults"`; `make test` and .ci/run run them)."""

from __future__ import annotations

import os
import secrets

import pytest

from tests.faults.private_pg import PrivatePostgres
from tests.servers import GUNICORN

ON_POSTGRES = bool(os.environ.get("BRIDGE_TEST_DATABASE_URL"))


@pytest.fixture(autouse=True)
def _needs_gunicorn():
    if not GUNICORN.exists():
        pytest.skip("gunicorn is installed by `make test`; this interpreter has none")


@pytest.fixture
def private_pg():
    """A PostgreSQL server of this test's own, which it may stop and start."""
    if not ON_POSTGRES:
        pytest.skip("a PostgreSQL fault: runs in the PostgreSQL pass (BRIDGE_TEST_DATABASE_URL)")
    pg = PrivatePostgres().init()
    try:
        yield pg
    finally:
        pg.remove()


@pytest.fixture
def slug():
    return f"fault-{secrets.token_hex(4)}"
