"""SQLite's WAL is checkpointed by a thread of the process, not inside a request's commit
(bridge.store._Checkpoints): the commit that passed SQLite's threshold used to wait for the copy
and two fsyncs (issue 14's login p99)."""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import REGISTRY
from sqlalchemy import text

from bridge import store as store_module
from bridge.store import Store


def _checkpoints_done(mode: str = "passive") -> float:
    return (
        REGISTRY.get_sample_value("bridge_sqlite_checkpoint_seconds_count", {"mode": mode}) or 0.0
    )


def _wal_restarts(path) -> int:
    """The WAL header's checkpoint sequence number: SQLite adds one each time the WAL starts
    over from its beginning (sqlite.org/fileformat.html, WAL file format)."""
    with open(f"{path}-wal", "rb") as wal:
        return int.from_bytes(wal.read(16)[12:16], "big")


def test_wal_is_checkpointed_in_the_background(tmp_path, monkeypatch):
    """Writes through the store keep the WAL small although no commit checkpoints (SQLite's own
    waits for WAL_BACKSTOP pages): the checkpoints run on the process's checkpoint thread, and
    when back-to-back writes never let the WAL start over, a RESTART checkpoint does."""
    monkeypatch.setattr(store_module, "CHECKPOINT_EVERY", 10)
    monkeypatch.setattr(store_module, "WAL_RESTART", 200)
    threads: list[str] = []
    real = store_module.checkpoint

    def recording(path: str) -> None:
        threads.append(threading.current_thread().name)
        real(path)

    monkeypatch.setattr(store_module, "checkpoint", recording)
    path = tmp_path / "wal.db"
    store = Store(f"sqlite:///{path}")
    try:
        with store.engine.connect() as conn:
            backstop = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
            assert backstop == store_module.WAL_BACKSTOP  # a request's commit never copies
        store.write(lambda db: db.execute(text("CREATE TABLE scratch (v BLOB)")))
        before, restarts = _checkpoints_done(), _checkpoints_done("restart")
        restarted = _wal_restarts(path)
        for _ in range(400):  # ~4 pages each: 1,600 pages would stay in an unchecked WAL
            store.write(
                lambda db: db.execute(text("INSERT INTO scratch VALUES (randomblob(15000))"))
            )
        deadline = time.monotonic() + 10
        while _checkpoints_done("restart") < restarts + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _checkpoints_done() >= before + 1  # asked 40 times; a request while one runs waits
        # writes one after another leave the WAL no moment to start over: RESTART did it
        assert _checkpoints_done("restart") >= restarts + 1
        assert threads and set(threads) == {"sqlite-checkpoint"}
        # the next write after a complete checkpoint starts the WAL over (its header says so)
        for _ in range(50):
            store.write(lambda db: db.execute(text("INSERT INTO scratch VALUES (x'00')")))
            if _wal_restarts(path) > restarted:
                break
            time.sleep(0.02)  # a checkpoint still running: the next write may find it done
        assert _wal_restarts(path) > restarted
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM scratch").scalar() >= 401
    finally:
        store.dispose()


def test_a_checkpoint_of_a_file_that_is_gone_makes_nothing(tmp_path, caplog):
    """A store's file removed meanwhile (a test's, a deleted account store): the checkpoint is
    logged as not done and no empty database is left in its place."""
    caplog.set_level(logging.INFO, "bridge.store")
    gone = tmp_path / "gone.db"
    store_module.checkpoint(str(gone))
    assert not gone.exists()
    assert "not done" in caplog.text


def test_in_memory_and_postgresql_stores_ask_for_none(monkeypatch):
    """Only a SQLite file has a WAL to checkpoint."""
    asked: list[str] = []
    monkeypatch.setattr(store_module._checkpoints, "request", asked.append)
    monkeypatch.setattr(store_module, "CHECKPOINT_EVERY", 1)
    memory = Store("sqlite://")
    try:
        memory.write(lambda db: db.execute(text("SELECT 1")))
    finally:
        memory.dispose()
    assert asked == []
