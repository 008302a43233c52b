"""The SQLite file turns read-only or the disk fills: each request gets a clear 503 with
Retry-After and a log line names the cause; nothing half-written, the file stays intact, and
writes work again once the fault is gone (no restart)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url

from bridge import accounts, audit, create_app, schema
from bridge.models import User
from bridge.store import Store
from tests.conftest import ScimClient
from tests.faults.conftest import ON_POSTGRES

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(ON_POSTGRES, reason="SQLite file faults (the SQLite pass)"),
]
USER = "urn:ietf:params:scim:schemas:core:2.0:User"


@pytest.fixture
def sqlite_app(empty_database_url, settings, slug):
    """An app on a database file of its own, an account and a SCIM client."""
    url = empty_database_url()
    store = Store(url)
    schema.upgrade(store.engine)
    account = accounts.create_account(store, slug, name=slug, actor="t")
    accounts.add_environment(store, slug, "production", default=True, actor="t")
    token = accounts.issue_token(store, slug, label="t", actor="t").raw
    store.dispose()
    app = create_app(replace(settings, database_url=url))
    yield app, ScimClient(app.test_client(), token, account), Path(make_url(url).database)
    app.extensions["bridge.store"].dispose()


def _create(scim, name):
    return scim.post("Users", json={"schemas": [USER], "userName": name})


def _check_intact(app, account_id, created):
    store = app.extensions["bridge.store"]
    with store.read() as db:
        assert db.connection().exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        stored = db.scalar(
            select(func.count()).select_from(User).where(User.account_id == account_id)
        )
        _, broken = audit.verify(db, account_id)
    assert stored == created and broken is None


def _refused(resp):
    assert resp.status_code == 503, resp.get_data(as_text=True)
    assert resp.headers["Retry-After"] == "5"
    assert resp.json["status"] == "503" and "unavailable" in resp.json["detail"]


def test_disk_full(sqlite_app, caplog):
    """SQLITE_FULL (the file may not grow: max_page_count, SQLite's own disk-full path)."""
    app, scim, _path = sqlite_app
    store = app.extensions["bridge.store"]
    assert _create(scim, "first@ex.com").status_code == 201

    def cap(dbapi_conn, _record):
        pages = dbapi_conn.execute("PRAGMA page_count").fetchone()[0]
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages}")

    event.listen(store.engine, "connect", cap)
    store.dispose()
    created, refused = 1, None
    with caplog.at_level(logging.ERROR, logger="bridge.web"):
        for n in range(300):
            resp = _create(scim, f"fill{n}@ex.com")
            if resp.status_code != 201:
                refused = resp
                break
            created += 1
    assert refused is not None, "the file never filled"
    _refused(refused)
    assert any("database or disk is full" in r.getMessage() for r in caplog.records)
    event.remove(store.engine, "connect", cap)
    store.dispose()
    _check_intact(app, scim.account.id, created)
    assert _create(scim, "after@ex.com").status_code == 201


def _immutable(paths, on):
    flag = "+i" if on else "-i"
    for path in paths:
        subprocess.run(["chattr", flag, str(path)], check=True, capture_output=True)


def test_read_only_file(sqlite_app, caplog):
    """The database file and its folder turn read-only (chattr +i: root ignores permissions)."""
    app, scim, path = sqlite_app
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr to make a file read-only for root")
    store = app.extensions["bridge.store"]
    assert _create(scim, "first@ex.com").status_code == 201
    store.dispose()  # the last connection closes: SQLite checkpoints and drops -wal/-shm
    frozen = [path, path.parent]
    try:
        _immutable(frozen, True)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"chattr +i is not permitted here: {exc.stderr.decode().strip()}")
    try:
        with caplog.at_level(logging.ERROR, logger="bridge.web"):
            _refused(_create(scim, "refused@ex.com"))
            _refused(scim.get("Users"))
        assert any("database unavailable" in r.getMessage() for r in caplog.records)
    finally:
        _immutable(frozen, False)
    store.dispose()
    _check_intact(app, scim.account.id, 1)
    assert _create(scim, "after@ex.com").status_code == 201
