"""SQLite writers queue for the write lock in short steps (issue 14): SQLite's own busy handler
sleeps up to 100 ms at a time, which made a login queued behind a 2 ms write wait 100 ms."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.engine import make_url

from bridge import store as store_module
from bridge.models import Account


def _lock_waits() -> tuple[float, float, float]:
    """bridge_sqlite_lock_wait_seconds of this process: writes, seconds waited, writes that
    waited more than 50 ms."""
    count = REGISTRY.get_sample_value("bridge_sqlite_lock_wait_seconds_count") or 0.0
    total = REGISTRY.get_sample_value("bridge_sqlite_lock_wait_seconds_sum") or 0.0
    within = REGISTRY.get_sample_value("bridge_sqlite_lock_wait_seconds_bucket", {"le": "0.05"})
    return count, total, count - (within or 0.0)


@pytest.fixture
def sqlite_path(store):
    if store.dialect != "sqlite":
        pytest.skip("SQLite's write lock (PostgreSQL writers wait on row locks, not sleeps)")
    return make_url(store.url).database


def test_writer_waits_for_the_lock_in_short_steps(store, account, sqlite_path, monkeypatch):
    """A write while another connection holds the lock waits, never sleeping more than
    LOCK_STEP at a time, and lands once the lock is free; the wait is in the lock-wait metric."""
    waits_before = _lock_waits()
    sleeps: list[float] = []
    real_sleep = time.sleep

    def recording_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(store_module.time, "sleep", recording_sleep)
    holder = sqlite3.connect(sqlite_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    done: list[str] = []

    def rename(db):
        db.get(Account, account.id).name = "renamed while queued"
        return "written"

    writer = threading.Thread(target=lambda: done.append(store.write(rename)))
    writer.start()
    real_sleep(0.08)
    assert done == [] and sleeps  # it is waiting, in steps
    holder.execute("COMMIT")
    holder.close()
    writer.join(10)
    assert done == ["written"]
    assert max(sleeps) <= store_module.LOCK_STEP
    count, total, over_50ms = (a - b for a, b in zip(_lock_waits(), waits_before, strict=True))
    # this write waited (and, now and then, a request log row an earlier test queued, written by
    # the process's writer thread while the lock was held: over_50ms 2)
    assert count >= 1 and over_50ms >= 1 and 0.08 <= total < 10
    with store.read() as db:
        assert db.scalar(select(Account.name).where(Account.id == account.id)) == (
            "renamed while queued"
        )


def test_writer_gives_up_after_the_lock_wait(store, account, sqlite_path, monkeypatch):
    """A lock held past LOCK_WAIT: the write fails as busy (the caller's 503), writing nothing."""
    monkeypatch.setattr(store_module, "LOCK_WAIT", 0.05)
    monkeypatch.setattr(store, "attempts", 1)
    holder = sqlite3.connect(sqlite_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:

        def rename(db):
            db.get(Account, account.id).name = "never"

        with pytest.raises(store_module.Unavailable, match="stayed busy"):
            store.write(rename)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with store.read() as db:
        assert db.scalar(select(Account.name).where(Account.id == account.id)) != "never"
