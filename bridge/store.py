"""The engine, sessions and the one way to write: a transaction retried on conflict.

Concurrency is settled by the database, never by a lock held in one process: unique constraints
catch a duplicate insert, version columns catch a lost update, and the whole unit of work is run
again from the start when either fires. On SQLite, write transactions start with BEGIN IMMEDIATE
so two writers queue on the database lock instead of failing on a read-to-write upgrade.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from bridge import metrics, values
from bridge.errors import Conflict, Unavailable
from bridge.policy import PolicyRegistry

log = logging.getLogger(__name__)
T = TypeVar("T")

WRITE = "bridge_write"
# PostgreSQL SQLSTATEs worth another try: serialization_failure, deadlock_detected.
RETRY_SQLSTATES = {"40001", "40P01"}


def make_engine(url: str) -> Engine:
    """An engine for `url`, with SQLite set up for several processes writing one file."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    if parsed.database and parsed.database != ":memory:":
        _private_file(Path(parsed.database))
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA busy_timeout = 30000")
        cur.execute("PRAGMA case_sensitive_like = ON")  # LIKE as on PostgreSQL
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(WRITE)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _private_file(path: Path) -> None:
    """Create the SQLite file readable by its owner only (it holds PII, token hashes and sealed
    keys); SQLite gives its -wal and -shm files the database file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Never open (and close) a file SQLite may have open: closing any descriptor of it drops
        # the process's POSIX locks on it (sqlite.org/howtocorrupt.html §2.2). Create or chmod.
        if not path.exists():
            with contextlib.suppress(FileExistsError):
                os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
    except PermissionError:  # a file someone else owns: SQLite will say what is wrong
        log.warning("cannot make %s private to its owner", path)


def _retryable(exc: Exception) -> bool:
    """A conflict with a concurrent writer (not a bug such as a NOT NULL violation)."""
    if isinstance(exc, StaleDataError):
        return True
    if isinstance(exc, IntegrityError):
        return getattr(exc.orig, "sqlstate", None) == "23505" or "UNIQUE constraint failed" in str(
            exc.orig
        )
    if isinstance(exc, OperationalError) and "database is locked" in str(exc.orig):
        return True
    if isinstance(exc, DBAPIError):
        return getattr(exc.orig, "sqlstate", None) in RETRY_SQLSTATES
    return False


class Store:
    """The account store: sessions for reading, `write` for every change."""

    def __init__(self, url: str, *, policy_dir: Path | None = None, attempts: int = 12) -> None:
        self.url = url
        self.policies = PolicyRegistry(policy_dir)
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        event.listen(self.sessions, "before_flush", values.check_flush)
        self.attempts = attempts

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading; whatever it began is rolled back on exit."""
        with self.sessions() as db:
            yield db

    def write(self, work: Callable[[Session], T]) -> T:
        """Run `work` in one transaction; on a conflict with another writer, run it again.

        `work` must be safe to repeat: it reads what it needs inside the transaction.
        """
        for attempt in range(1, self.attempts + 1):
            try:
                with self.sessions() as db, db.begin():
                    db.connection(execution_options={WRITE: True})
                    return work(db)
            except (DBAPIError, StaleDataError) as exc:
                if not _retryable(exc):
                    raise
                if attempt == self.attempts:
                    if isinstance(exc, OperationalError):
                        raise Unavailable("the database stayed busy; try again") from exc
                    raise Conflict("a concurrent change kept conflicting; try again") from exc
                log.info("retrying write after %s (attempt %d)", type(exc).__name__, attempt)
                metrics.WRITE_RETRIES.labels(type(exc).__name__).inc()
                time.sleep(random.uniform(0, min(0.25, 0.002 * 2**attempt)))
        raise AssertionError("unreachable")

    def dispose(self) -> None:
        self.engine.dispose()
