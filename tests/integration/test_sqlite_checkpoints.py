"""SQLite's WAL is checkpointed by a thread of the process, not inside a request's commit
(bridge.store._Checkpoints): the commit that passed SQLite's threshold used to wait for the copy
and two fsyncs (10-290 ms on this machine's disk; rare, so not what sets issue 14's login p99)."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

from prometheus_client import REGISTRY
from sqlalchemy import text

from bridge import store as store_module
from bridge.store import Store


def _checkpoints_done() -> float:
    return REGISTRY.get_sample_value("bridge_sqlite_checkpoint_seconds_count") or 0.0


def _wal_restarts(path) -> int:
    """The WAL header's checkpoint sequence number: SQLite adds one each time the WAL starts
    over from its beginning (sqlite.org/fileformat.html, WAL file format)."""
    with open(f"{path}-wal", "rb") as wal:
        return int.from_bytes(wal.read(16)[12:16], "big")


def test_wal_is_checkpointed_in_the_background(tmp_path, monkeypatch):
    """Writes through the store keep the WAL small although no commit checkpoints (SQLite's own
    waits for WAL_BACKSTOP pages): the checkpoints run on the process's checkpoint thread, and
    the first write after one finds the WAL copied and starts it over."""
    monkeypatch.setattr(store_module, "CHECKPOINT_EVERY", 10)
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
        before = _checkpoints_done()
        restarted = _wal_restarts(path)
        for _ in range(400):  # ~4 pages each: 1,600 pages would stay in an unchecked WAL
            store.write(
                lambda db: db.execute(text("INSERT INTO scratch VALUES (randomblob(15000))"))
            )
        deadline = time.monotonic() + 10
        while _checkpoints_done() < before + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _checkpoints_done() >= before + 1  # asked 40 times; a request while one runs waits
        assert threads and set(threads) == {"sqlite-checkpoint"}
        # a write that finds the WAL all copied starts it over (its header says so); writes one
        # after another may leave a running checkpoint behind, so these leave it time
        for _ in range(100):
            store.write(lambda db: db.execute(text("INSERT INTO scratch VALUES (x'00')")))
            if _wal_restarts(path) > restarted:
                break
            time.sleep(0.02)  # a checkpoint still running: the next write may find it done
        assert _wal_restarts(path) > restarted
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM scratch").scalar() >= 401
    finally:
        store.dispose()


def test_a_checkpoint_never_holds_writers_back_behind_a_reader(tmp_path):
    """A reader keeps its snapshot (a streamed group being sent) while a checkpoint runs: the
    checkpoint copies what it may and returns, and a write goes through meanwhile. (A RESTART
    checkpoint here held new writes until the reader ended, and the reading request's own log
    row then waited on it: a streamed SCIM group timed out in CI.)"""
    path = tmp_path / "read.db"
    store = Store(f"sqlite:///{path}")
    reader = None
    try:
        store.write(lambda db: db.execute(text("CREATE TABLE scratch (v BLOB)")))
        for _ in range(50):
            store.write(
                lambda db: db.execute(text("INSERT INTO scratch VALUES (randomblob(9000))"))
            )
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM scratch").fetchone() == (50,)
        store.write(lambda db: db.execute(text("INSERT INTO scratch VALUES (x'00')")))
        done = threading.Event()
        worker = threading.Thread(target=lambda: (store_module.checkpoint(str(path)), done.set()))
        started = time.monotonic()
        worker.start()
        assert done.wait(5), "the checkpoint waited for the reader"
        store.write(lambda db: db.execute(text("INSERT INTO scratch VALUES (x'01')")))
        assert time.monotonic() - started < 5
        assert reader.execute("SELECT count(*) FROM scratch").fetchone() == (50,)  # its snapshot
        reader.execute("COMMIT")
        assert reader.execute("SELECT count(*) FROM scratch").fetchone() == (52,)
    finally:
        if reader is not None:
            reader.close()
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
