"""The engine, sessions and the one way to write: a transaction retried on conflict.

Concurrency is settled by the database, never by a lock held in one process: unique constraints
catch a duplicate insert, version columns catch a lost update, and the whole unit of work is run
again from the start when either fires. On SQLite, write transactions start with BEGIN IMMEDIATE
so two writers queue on the database lock instead of failing on a read-to-write upgrade.

Inside a request (`Store.scope`, opened by bridge.web for every request) one session serves
every `read` of that request, authentication included: one read transaction, one identity map.
Each `write` still runs in a transaction and session of its own (the work reads what it decides
on inside it, under its locks, and is retried as a whole): it ends the request's read
transaction first, and afterwards what the request had read is expired (read again if used).
A request whose reads each stand alone (`scope(snapshot=False)`: SCIM's, a token and then one
resource, or both in one statement) reads without a transaction on PostgreSQL: each statement
sees its own snapshot, and no BEGIN or ROLLBACK is sent (two round trips of every such request;
a SCIM GET by id is left with one). Its Core reads before any session (a SCIM token's, a SAML
login's account) go through `connection`: no ORM session is made for them, and they are sent
on a connection each thread keeps for them (_Kept: no checkout and return per request), on
SQLite without a transaction too (a BEGIN and a ROLLBACK are two driver calls: SQLAlchemy's
begin and rollback cost more CPU than that GET's statement). Not for a request that
compares what two statements read (the audit chain against its head) or streams rows through a
server-side cursor, which only lives in a transaction.

On SQLite the WAL is copied back into the database file (a checkpoint) by a thread of each
process after every CHECKPOINT_EVERY writes, not inside the commit that happens to pass SQLite's
threshold: that commit would wait for a thousand page writes and two fsyncs.

Connections are not pinged when taken from the pool (a round trip per checkout): a PostgreSQL
connection whose server has hung up is noticed without one (its socket is readable while idle)
and replaced, connections are recycled after an hour, and a write that meets a dead connection
before its commit runs again on a new one.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import random
import select
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from sqlalchemy import Connection, Engine, Executable, Table, create_engine, event, insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.util import LRUCache

from bridge import metrics, values
from bridge.errors import Conflict, Unavailable
from bridge.policy import PolicyRegistry

log = logging.getLogger(__name__)
# Jitter of retries, waits and orders (bridge.delivery too) from a generator of our own: the
# global one belongs to the process (a background thread drawing from it changes what another
# caller's seeded sequence sees: Hypothesis failed a property test on it as "random used inside
# a strategy")
JITTER = random.Random()
# a process forked after it was seeded (gunicorn's preload_app, `policy plan`'s workers) draws
# its own sequence, as the global generator does: not its siblings' (retries in step)
os.register_at_fork(after_in_child=JITTER.seed)
T = TypeVar("T")

WRITE = "bridge_write"
# a session's info (PostgreSQL), a Connection's attribute (SQLite): its reads stand alone
STANDALONE = "bridge_standalone"
ATTEMPT = "bridge_attempt"  # a write session's info: which attempt of `Store.write` it runs
# A write session's info, set by work that inserts without first looking for what a unique key
# guards (a SCIM create's userName and externalId): a unique key's refusal of that attempt is
# its answer, not a conflict with another writer. The next attempt runs at once (it looks),
# without the backoff, the log line or the retry metric of a conflict.
UNLOOKED = "bridge_unlooked"
PARAMS_KEPT = 120  # psycopg keeps the conversion of statements with up to this many parameters
RECYCLE = 3600  # seconds a PostgreSQL connection is reused before the pool opens a new one
LOCK_WAIT = 30.0  # seconds a SQLite writer waits for the write lock before giving up
LOCK_STEP = 0.002  # the longest single sleep of that wait
CHECKPOINT_EVERY = 100  # SQLite writes of a process between two checkpoints in the background
APPEND_DELAY = 0.05  # seconds Store.append's rows wait for others to share their transaction
MAX_APPENDS = 10_000  # rows Store.append keeps waiting in a process; past it, new ones are dropped
WAL_BACKSTOP = 10_000  # WAL pages after which a commit checkpoints (SQLite's own, if ours lag)
# PostgreSQL SQLSTATEs worth another try: serialization_failure, deadlock_detected.
RETRY_SQLSTATES = {"40001", "40P01"}


class CompiledCache:
    """An engine's compiled statements (SQLAlchemy's `compiled_cache` execution option):
    SQLAlchemy's own LRU cache, behind a front that finds a statement built once (a module's
    constant or a memoized builder's: each SCIM request's token statement, a page's, a login's)
    by the identity of its cache key instead of by its hash.

    SQLAlchemy keys a compiled statement by the statement's cache key, a tuple of nested tuples
    naming every column, join and parameter. It memoizes that tuple on the statement, but a
    tuple does not keep its hash, so each execution hashed it again: 13 us for a SCIM GET by
    id's token-and-user statement (2,400 nodes) on every request, 5 % of the request's
    instructions. The front is keyed by the ids of the dialect and that tuple and holds both
    (an id is not reused while its object lives), so a hit costs hashing two ints and two
    identity checks. It learns a key as its statement is compiled (the key the LRU keeps too,
    so no more memory while the LRU has it); an equal statement built anew is found in the LRU
    as before. It forgets everything at `size` keys learned, as many as the LRU holds."""

    def __init__(self, size: int = 500) -> None:
        self.size = size
        self._lru: LRUCache[Any, Any] = LRUCache(size)
        # (id of the dialect, id of the statement's key) -> (the whole key, its compiled form)
        self._front: dict[tuple[int, int], tuple[tuple[Any, ...], Any]] = {}

    def get(self, key: tuple[Any, ...]) -> Any:
        hit = self._front.get((id(key[0]), id(key[1])))
        if hit is not None:
            known = hit[0]
            if known[0] is key[0] and known[1] is key[1] and known[2:] == key[2:]:
                return hit[1]
        return self._lru.get(key)

    def __setitem__(self, key: tuple[Any, ...], compiled: Any) -> None:
        self._lru[key] = compiled
        if len(self._front) >= self.size:
            self._front.clear()
        self._front[(id(key[0]), id(key[1]))] = (key, compiled)


def make_engine(url: str) -> Engine:
    """An engine for `url`, with SQLite set up for several processes writing one file."""
    parsed = make_url(url)
    cached = {"compiled_cache": CompiledCache()}
    if parsed.get_backend_name() != "sqlite":
        with_psycopg = parsed.drivername == "postgresql+psycopg"
        connect_args = {"cursor_factory": _cursor_factory()} if with_psycopg else {}
        engine = create_engine(
            url,
            pool_recycle=RECYCLE,
            pool_size=10,
            max_overflow=10,
            pool_use_lifo=True,
            connect_args=connect_args,
            query_cache_size=0,  # ours: execution_options
            execution_options=cached,
        )
        event.listen(engine, "checkout", _hung_up)
        event.listen(engine, "reset", _end_autocommit)
        return engine
    pool: dict[str, Any] = {}
    if parsed.database and parsed.database != ":memory:":
        _private_file(Path(parsed.database))
        # as PostgreSQL's: HELD_LIMIT threads keep one (_Kept), the overflow for the rest
        pool = {"pool_size": 10, "max_overflow": 10}
    engine = create_engine(
        url, connect_args={"timeout": 30}, query_cache_size=0, execution_options=cached, **pool
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves: _SQLiteConnection
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA busy_timeout = 30000")
        cur.execute("PRAGMA case_sensitive_like = ON")  # LIKE as on PostgreSQL
        cur.execute(f"PRAGMA wal_autocheckpoint = {WAL_BACKSTOP}")  # ours run apart: Checkpoints
        cur.close()

    # SQLite's BEGIN is ours (_SQLiteConnection), not a `begin` event's: an engine with any
    # Connection event dispatches every event of every statement (SQLAlchemy's _has_events)
    engine._connection_cls = _SQLiteConnection
    return engine


class _SQLiteConnection(Connection):
    """A SQLite connection that sends its transaction's BEGIN itself, as the driver does not
    (its isolation_level is None): BEGIN IMMEDIATE for a write (WRITE), none for Store.connection's
    stand-alone reads (each statement a snapshot of its own), BEGIN for any other. Straight to
    the driver, as COMMIT is (a statement through SQLAlchemy costs more than SQLite's BEGIN
    itself); so no cursor event sees a BEGIN. It replaces a `begin` event listener: an engine
    with one runs SQLAlchemy's event dispatch at every step of every statement (SQLite: 8-10 %
    of a SCIM request's instructions, 4-6 % of a login's). `_begin_impl` is SQLAlchemy's own
    (pinned in pyproject.toml): tests/integration/test_standalone_reads.py fails if a write
    does not hold the write lock from its start, or a snapshot read is not in a transaction."""

    def _begin_impl(self, transaction: Any) -> None:
        super()._begin_impl(transaction)  # the dialect's do_begin: nothing, on pysqlite
        dbapi_conn: Any = self.connection.dbapi_connection
        if self.get_execution_options().get(WRITE):
            _begin_immediate(dbapi_conn)
        elif not getattr(self, STANDALONE, False):
            dbapi_conn.execute("BEGIN")


@functools.cache
def _cursor_factory() -> type:
    """psycopg's cursor, with a `description` that makes its columns when they are read, not
    when it is asked for. SQLAlchemy asks for it at every execution but reads it only the first
    time a compiled statement runs (it keeps what it learnt: `_cached_metadata`), and psycopg
    makes a `Column` of every column each time it is asked: 37 for a SCIM GET's statement, an
    eighth of that request's instructions on PostgreSQL. The columns, when read, are made of the
    result the description was asked of, as psycopg makes them (bench/instructions.py: GET and
    filter 0.88x, PATCH and PUT 0.92x, logins 0.95-0.97x)."""
    import psycopg
    from psycopg import _queries
    from psycopg.pq import ExecStatus

    # psycopg converts a statement's placeholders once per text (an LRU of 128 texts), but not
    # a statement with more than 50 parameters (VALUES lists of every length would flood it):
    # that one is parsed with regular expressions at every execution. A SCIM create's one
    # statement (the user's rows with the audit event, bridge.values) has 55 and a few shapes.
    _queries.MAX_CACHED_STATEMENT_PARAMS = max(_queries.MAX_CACHED_STATEMENT_PARAMS, PARAMS_KEPT)
    tuples = (ExecStatus.TUPLES_OK, ExecStatus.SINGLE_TUPLE, ExecStatus.TUPLES_CHUNK)

    class Described:
        """What psycopg's Column reads of a cursor (pinned psycopg), as it was."""

        def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
            self.pgresult = cursor.pgresult
            self._encoding = cursor._encoding
            self.adapters = cursor.adapters

    class Description(Sequence[psycopg.Column]):
        """psycopg's list of Columns, made when first read."""

        def __init__(self, cursor: psycopg.Cursor[Any], count: int) -> None:
            self._of: Described | None = Described(cursor)
            self._count = count
            self._columns: list[psycopg.Column] | None = None

        def _made(self) -> list[psycopg.Column]:
            if self._columns is None:
                of, self._of = self._of, None
                self._columns = [psycopg.Column(of, i) for i in range(self._count)]  # type: ignore[arg-type]
            return self._columns

        def __len__(self) -> int:
            return self._count

        def __getitem__(self, index: Any) -> Any:
            return self._made()[index]

        def __repr__(self) -> str:
            return repr(self._made())

    class Cursor(psycopg.Cursor[Any]):
        @property
        def description(self) -> Description | None:  # type: ignore[override]
            result = self.pgresult  # as psycopg answers: None when no rows were asked for
            if result is not None and (result.nfields or result.status in tuples):
                return Description(self, result.nfields)
            return None

    return Cursor


def _begin_immediate(dbapi_conn: Any) -> None:
    """Take SQLite's write lock, waiting for it in steps of at most LOCK_STEP: SQLite's own
    busy handler sleeps up to 100 ms at a time, so a writer queued behind a 2 ms transaction
    could wait 100 ms (the 30x p99 of issue 14). The wait is bounded as before (30 s), and
    measured (bridge_sqlite_lock_wait_seconds: how long writers queue on the one lock)."""
    started = time.monotonic()
    deadline = started + LOCK_WAIT
    step = 0.0002
    dbapi_conn.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                dbapi_conn.execute("BEGIN IMMEDIATE")
                metrics.SQLITE_LOCK_WAITS.observe(time.monotonic() - started)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise OperationalError("BEGIN IMMEDIATE", (), exc) from exc
            time.sleep(JITTER.uniform(step / 2, step))
            step = min(step * 2, LOCK_STEP)
    finally:
        dbapi_conn.execute("PRAGMA busy_timeout = 30000")


class _Checkpoints:
    """A thread of this process that checkpoints SQLite files (PASSIVE) when a Store asks.

    SQLite checkpoints inside the commit that takes the WAL past 1,000 pages: that write waits
    for the copy and two fsyncs, 10-300 ms on this machine's disk against 0.1 ms for a commit
    (one write in a few hundred: not what sets the logins' p99, but a slow request each time).
    Here the commit returns and this thread copies; a PASSIVE checkpoint neither waits for nor
    blocks readers and writers (what a reader still needs is copied next time), and the next
    write after a complete one starts the WAL over."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # the thread is not in a child

    def _reset(self) -> None:
        self._ready = threading.Condition()
        self._pending: set[str] = set()
        self._thread: threading.Thread | None = None

    def request(self, path: str) -> None:
        with self._ready:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="sqlite-checkpoint", daemon=True
                )
                self._thread.start()
            self._pending.add(path)
            self._ready.notify()

    def _run(self) -> None:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: bool(self._pending))
                path = self._pending.pop()
            checkpoint(path)


def checkpoint(path: str) -> None:
    """Copy what the WAL of the SQLite file at `path` holds into the file: PASSIVE, which never
    waits for a reader or a writer (the next write that finds the WAL all copied starts it over,
    as after SQLite's own checkpoint). Never RESTART or FULL: those hold new writers back until
    every reader is done, and a request that reads (a streamed group) and then writes its log row
    would wait on the checkpoint that waits on it (up to the busy timeout: seen in CI). A file
    that is gone is not made again (mode=rw); a failure is only logged (SQLite's own checkpoint
    at WAL_BACKSTOP pages is still there)."""
    try:
        conn = sqlite3.connect(f"file:{quote(path)}?mode=rw", uri=True, isolation_level=None)
        try:
            started = time.perf_counter()
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            metrics.SQLITE_CHECKPOINTS.observe(time.perf_counter() - started)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        log.info("SQLite checkpoint of %s not done: %s", path, exc)


_checkpoints = _Checkpoints()


def _hung_up(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    """A pooled connection the server closed (a restart, a terminated backend) has something to
    read while idle: its goodbye or EOF. Seen without a round trip; the pool then opens another."""
    if _gone(dbapi_conn):
        raise DisconnectionError("the server closed this connection")


def _gone(dbapi_conn: Any) -> bool:
    """Whether an idle connection's server has hung up (or its socket is closed)."""
    try:
        fileno = dbapi_conn.fileno()
        readable, _, _ = select.select([fileno], [], [], 0)
    except (OSError, ValueError, AttributeError):  # a closed socket has no descriptor
        return True
    return bool(readable) or bool(getattr(dbapi_conn, "closed", False))


class _Held:
    """A thread's connection for reads that stand alone (Store.connection), kept checked out
    between its requests. Taking a connection from the pool and giving it back (SQLAlchemy's
    Connection, the pool's checkout and reset, the driver's rollback of nothing) was a tenth of
    a SCIM GET's instructions on PostgreSQL, as much as its statement's execution in
    SQLAlchemy (on SQLite a GET by id 0.92x the instructions with it, bench/instructions.py). In
    autocommit (PostgreSQL) or with no BEGIN (SQLite: each statement's own read transaction
    ends as its rows are all read, as every caller reads them) it holds no transaction and no
    snapshot between statements, so keeping it shows its thread nothing the pool's next
    connection would not. It is given back to the pool (closed, when the pool has no room) when
    the thread ends, when its store is disposed, after an error while it was used, and replaced
    when its server hung up (PostgreSQL), after RECYCLE seconds (as the pool recycles its own)
    or in a forked process (left as it is: the parent's)."""

    __slots__ = ("conn", "generation", "keeper", "pid", "since")

    def __init__(self, conn: Connection, keeper: _Kept) -> None:
        self.conn: Connection | None = conn
        self.keeper = keeper
        self.generation = keeper.generation
        self.pid = os.getpid()
        self.since = time.monotonic()

    def usable(self) -> bool:
        conn = self.conn
        if conn is None or self.pid != os.getpid():
            return False
        if conn.closed or conn.invalidated or self.generation != self.keeper.generation:
            return False
        if time.monotonic() - self.since >= RECYCLE:
            return False
        return not self.keeper.alone or not _gone(conn.connection.dbapi_connection)

    def release(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        self.keeper.give()
        if self.pid != os.getpid():
            _FORKED_AWAY.append(conn)  # the parent's socket: never closed (nor collected) here
            return
        with contextlib.suppress(Exception):  # a dead one is discarded by the pool
            conn.close()

    def __del__(self) -> None:  # its thread ended (its thread-local values go)
        self.release()


_FORKED_AWAY: list[Connection] = []
# At most this many threads of a process keep a connection (_Held): the pool's size, so that
# its overflow (as many again) stays for sessions, writes and the request log. More threads
# (GUNICORN_THREADS above it) take one from the pool per read, as before.
HELD_LIMIT = 10


class _Kept:
    """A store's kept connections (not for SQLite's :memory:, whose pool hands a thread one
    connection for everything): each thread's own (_Held), how many threads keep one (at most
    HELD_LIMIT), and a generation that `dispose` bumps (every thread's is given back at its
    next use)."""

    def __init__(self, engine: Engine, alone: bool) -> None:
        self.engine = engine
        self.alone = alone  # PostgreSQL's autocommit (_autocommit); else SQLite's no BEGIN
        self.local = threading.local()
        self.generation = 0
        self.count = 0
        self.lock = threading.Lock()

    def take(self) -> Connection | None:
        """This thread's connection, taken when it has none usable; None when HELD_LIMIT
        threads keep one already (the caller takes one from the pool for this read)."""
        held: _Held | None = getattr(self.local, "held", None)
        if held is not None and held.usable():
            return held.conn
        self.drop()
        with self.lock:
            if self.count >= HELD_LIMIT:
                return None
            self.count += 1
        try:
            conn = self.engine.connect()
            _stand_alone_reads(conn, self.alone)
        except BaseException:
            self.give()
            raise
        self.local.held = _Held(conn, self)
        return conn

    def drop(self) -> None:
        """This thread's connection, given back (if it keeps one)."""
        held: _Held | None = getattr(self.local, "held", None)
        if held is not None:
            self.local.held = None
            held.release()

    def give(self) -> None:
        with self.lock:
            self.count -= 1

    def dispose(self) -> None:
        self.generation += 1
        self.drop()


def _stand_alone_reads(conn: Connection, autocommit: bool) -> None:
    """`conn` sends each statement as a snapshot of its own: on PostgreSQL in autocommit, on
    SQLite with no BEGIN (_SQLiteConnection; its driver's isolation_level is None)."""
    if autocommit:
        _autocommit(conn)
    else:
        setattr(conn, STANDALONE, True)


def _autocommit(conn: Connection) -> None:
    """Send `conn`'s statements without a transaction (psycopg's autocommit), until it goes
    back to the pool (_end_autocommit). The driver's own switch, a few calls: SQLAlchemy's
    isolation_level="AUTOCOMMIT" option set it and reset it through its connection
    characteristics and a joined event dispatch, about 200 Python calls per checkout (a tenth
    of a SCIM GET's instructions on PostgreSQL). The statements and their engine events are
    the same."""
    conn.connection.dbapi_connection.autocommit = True  # type: ignore[union-attr]


def _end_autocommit(dbapi_conn: Any, _record: Any, _state: Any) -> None:
    """A connection returned to the pool leaves autocommit (the pool's reset event, before its
    rollback): the next checkout, a write's, gets a transaction. Should the driver refuse, the
    pool discards the connection (an error in a reset invalidates it)."""
    if dbapi_conn.autocommit:
        dbapi_conn.autocommit = False


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
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True  # a dead connection (the pool now opens new ones): the work never committed
    if isinstance(exc, DBAPIError):
        return getattr(exc.orig, "sqlstate", None) in RETRY_SQLSTATES
    return False


class _Scope:
    """One request's session, opened on first use."""

    def __init__(self, store: Store, snapshot: bool = True) -> None:
        self.store = store
        self.snapshot = snapshot
        self.session: Session | None = None
        self.writing = False

    def db(self) -> Session:
        if self.session is None:
            self.session = self.store.sessions()
            if not self.snapshot and self.store._alone:
                self.session.info[STANDALONE] = True  # each connection it takes: _stand_alone
        return self.session

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


class _Appends:
    """The rows Store.append queued in this process, and the locks of its writing thread."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.ready = threading.Condition()
        self.writing = threading.Lock()  # held while a batch is written: a flush waits for it
        self.rows: list[tuple[_Append, Any]] = []
        self.dropped = 0
        self.closed = False


_appends_lock = threading.Lock()
_live_stores: weakref.WeakSet[Store] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """A worker that exits (gunicorn's graceful stop, a CLI command) writes its queued rows."""
    for store in list(_live_stores):
        with contextlib.suppress(Exception):
            store.flush()


class _Append:
    """Store.append's statement for one table and set of columns: the SQL in the driver's
    parameter style and each value's conversion (a UTC datetime to the database's form...),
    both as SQLAlchemy makes them for that dialect."""

    def __init__(self, table: Table, names: tuple[str, ...], dialect: Any) -> None:
        wanted = {c.name for c in table.columns if not c.primary_key}
        if set(names) != wanted:
            raise ValueError(f"a row for {table.name} names {sorted(names)}, not {sorted(wanted)}")
        # inline: no RETURNING of the new key, no defaults computed (the row has every value)
        compiled = insert(table).inline().compile(dialect=dialect, column_keys=list(names))
        self.table = table.name
        self.sql = str(compiled)
        self.order = tuple(compiled.positiontup or ()) if compiled.positional else None
        # PostgreSQL: the rows go in with COPY, each a tuple in `names`' order (see _insert_rows)
        self.copy: str | None = None
        if dialect.name == "postgresql":
            quote = dialect.identifier_preparer.quote
            self.copy = f"COPY {quote(table.name)} ({', '.join(map(quote, names))}) FROM STDIN"
        self.convert = {
            name: process
            for name in names
            if (process := table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
        }

    def params(self, row: Mapping[str, Any]) -> Any:
        values = {
            name: self.convert[name](value) if name in self.convert else value
            for name, value in row.items()
        }
        if self.copy is not None:
            return tuple(values.values())  # the row's order, the names' (Store.append's key)
        return values if self.order is None else tuple(values[name] for name in self.order)


def _stand_alone(session: Session, _transaction: Any, conn: Connection) -> None:
    """A standalone scope's session reads without a transaction on each connection it takes
    (the first, and one taken after a write ended its read)."""
    if STANDALONE in session.info:
        _autocommit(conn)


_scope: ContextVar[_Scope | None] = ContextVar("bridge_store_scope", default=None)


def scoped_store() -> Store | None:
    """The store whose scope (Store.scope: one request's work) this context runs in, if any."""
    scope = _scope.get()
    return None if scope is None else scope.store


class Store:
    """The account store: sessions for reading, `write` for every change."""

    def __init__(self, url: str, *, policy_dir: Path | None = None, attempts: int = 12) -> None:
        self.url = url
        self.policies = PolicyRegistry(policy_dir)
        self.engine = make_engine(url)
        # info: rows insert_rows queues (later=True) are written at commit (listeners below)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False, info={values.QUEUES: 1})
        self._writer = self.engine.execution_options(**{WRITE: True})  # write_one's, on SQLite
        # an option engine makes its connections with Engine's class, not the engine's own
        self._writer._connection_cls = self.engine._connection_cls
        # requests whose reads stand alone (scope(snapshot=False)) read without a transaction on
        # PostgreSQL: their sessions' connections in autocommit (_stand_alone)
        self._alone = self.dialect == "postgresql"
        if self._alone:
            event.listen(self.sessions, "after_begin", _stand_alone)
        event.listen(self.sessions, "before_flush", values.check_flush)
        # rows insert_rows queued (later=True) and no audit event wrote: written as it commits,
        # forgotten as it rolls back
        event.listen(self.sessions, "before_commit", values.write_queued)
        event.listen(self.sessions, "after_soft_rollback", values.forget_queued)
        self.attempts = attempts
        database = make_url(url).database if self.dialect == "sqlite" else None
        self._wal = database if database and database != ":memory:" else None
        self._writes = 0
        self._appends: dict[tuple[str, tuple[str, ...]], _Append] = {}
        self._appended: _Appends | None = None
        # each thread's connection for reads that stand alone
        self._kept = _Kept(self.engine, self._alone) if self._alone or self._wal else None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def scope(self, *, snapshot: bool = True) -> Iterator[None]:
        """Every `read` and `write` inside shares one session (one request's work); its reads
        share one transaction, unless `snapshot` is False (reads that each stand alone: on
        PostgreSQL they are sent without one; see the module's docstring)."""
        scope = _Scope(self, snapshot)
        token = _scope.set(scope)
        try:
            yield
        finally:
            _scope.reset(token)
            scope.close()

    def _scoped(self) -> _Scope | None:
        scope = _scope.get()
        if scope is None or scope.store is not self or scope.writing:
            return None  # outside a request, another store, or a read inside a write's work
        return scope

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading: the request's, whose read transaction lasts until its next
        write or its end; outside a request a session of its own, rolled back on exit."""
        scope = self._scoped()
        if scope is None:
            with self.sessions() as db:
                yield db
            return
        db = scope.db()
        try:
            yield db
        except DBAPIError:
            db.rollback()  # PostgreSQL refuses every statement after an error in a transaction
            raise

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection for Core reads that need no ORM session. In a request whose reads stand
        alone (and has no session yet), one without a transaction (a session costs about as much
        as the statement of a SCIM GET by id): the thread's kept connection (_Kept), on
        PostgreSQL in autocommit, on SQLite with no BEGIN. Otherwise `read`'s session's
        connection."""
        scope = self._scoped()
        if scope is None or scope.snapshot or scope.session is not None:
            with self.read() as db:
                yield db.connection()
            return
        keeper = self._kept
        kept = keeper.take() if keeper is not None else None
        if keeper is not None and kept is not None:
            try:
                yield kept
            except BaseException:
                keeper.drop()  # whatever it left, the pool's reset clears; the next read another
                raise
            return
        with self.engine.connect() as conn:  # one of its own, given back at once
            _stand_alone_reads(conn, self._alone)
            yield conn

    def write(self, work: Callable[[Session], T]) -> T:
        """Run `work` in one transaction; on a conflict with another writer, run it again.

        `work` must be safe to repeat: it reads what it needs inside the transaction.
        """
        scope = self._end_read()
        for attempt in range(1, self.attempts + 1):
            committing = [False]
            info: dict[Any, Any] = {}
            try:
                with self.sessions() as db:
                    info = db.info
                    info[ATTEMPT] = attempt
                    if scope is not None:
                        scope.writing = True
                    try:
                        result = self._attempt(db, work, committing)
                    finally:
                        if scope is not None:
                            scope.writing = False
                if scope is not None and scope.session is not None:
                    scope.session.expire_all()  # what the request read before may have changed
                self._wrote()
                return result
            except (DBAPIError, StaleDataError) as exc:
                dead = isinstance(exc, DBAPIError) and exc.connection_invalidated
                if not _retryable(exc) or (committing[0] and dead):
                    raise  # a commit whose answer was lost may have landed: never twice
                if attempt == self.attempts:
                    if isinstance(exc, OperationalError):
                        raise Unavailable("the database stayed busy; try again") from exc
                    raise Conflict("a concurrent change kept conflicting; try again") from exc
                if isinstance(exc, IntegrityError) and info.get(UNLOOKED):
                    continue  # the attempt inserted without looking: the next one looks
                log.info("retrying write after %s (attempt %d)", type(exc).__name__, attempt)
                metrics.WRITE_RETRIES.labels(type(exc).__name__).inc()
                time.sleep(JITTER.uniform(0, min(0.25, 0.002 * 2**attempt)))
        raise AssertionError("unreachable")

    def write_one(self, statement: Executable, params: Mapping[str, Any] | None = None) -> None:
        """One statement that is a whole change on its own (a log purge), on a
        connection of its own and outside any retry: a failure is the caller's to weigh.

        On PostgreSQL it is sent in autocommit, one round trip where a transaction would take
        three (BEGIN, the statement, COMMIT); on SQLite it runs inside BEGIN IMMEDIATE as every
        write does (an implicit transaction would wait on SQLite's 100 ms busy steps). Either
        way no ORM session is made for it. The request's read transaction ends first, as before
        `write`: on SQLite an open read keeps checkpoints from draining the WAL, and every
        later commit tries again (about 1 ms each)."""
        self._end_read()
        if self.dialect == "sqlite":
            with self._writer.begin() as conn:
                conn.execute(statement, params)
            self._wrote()
            return
        with self.engine.connect() as conn:
            _autocommit(conn)
            conn.execute(statement, params)

    def append(self, table: Table, row: Mapping[str, Any]) -> None:
        """Queue one row for `table` that is a whole change on its own (a log line): a thread of
        this process writes what was queued in one transaction, APPEND_DELAY after the first row
        of a batch; `flush` writes it at once and `dispose` and the process's exit do too.

        `row` names every column but the primary key, with values the caller has checked
        (bridge.values); a row short of a column, or one a conversion refuses, raises here and
        nothing is queued. A batch the database refuses is written again row by row, and a row
        refused alone is logged and dropped: these rows never fail the request that made them.
        Past MAX_APPENDS rows waiting (a database that does not answer) new rows are dropped.

        Why queued: a SCIM request's log row written at once cost a SCIM GET a sixth of its
        throughput on SQLite (a write transaction per read: 1.31-1.38x scim2-server's req/s
        with it, 1.61-1.62x without, bench/scim --sqlite), and a round trip on PostgreSQL. The
        rows go straight to the driver with SQLAlchemy's own SQL and conversions (_Append), so
        no engine event sees them: no statement listener, no trace span. On PostgreSQL a batch
        goes in with COPY, not an INSERT a row: a row of the SCIM log in a batch of 50 costs
        10 us of this process's CPU and 15 us of the server's, against 29 and 27 (10 a batch: 29
        and 35 against 52 and 46)."""
        key = (table.name, tuple(row))
        plan = self._appends.get(key)
        if plan is None:
            plan = self._appends[key] = _Append(table, key[1], self.engine.dialect)
        params = plan.params(row)
        queue = self._queue()
        with queue.ready:
            if len(queue.rows) >= MAX_APPENDS:
                queue.dropped += 1
                if queue.dropped == 1 or queue.dropped % MAX_APPENDS == 0:
                    log.error("%d rows dropped: %d wait to be written", queue.dropped, MAX_APPENDS)
                return
            queue.rows.append((plan, params))
            queue.ready.notify()

    def flush(self) -> None:
        """Write every row `append` queued in this process before this call (a reader of those
        rows calls it first; another process's rows land within APPEND_DELAY). The request's
        read transaction ends first, as before `write`, so that its next read sees them."""
        queue = self._appended
        if queue is not None and queue.pid == os.getpid():
            self._end_read()
            self._flush(queue)

    def _flush(self, queue: _Appends) -> None:
        with queue.writing:
            with queue.ready:
                rows, queue.rows = queue.rows, []
            if rows:
                self._write_appended(rows)

    def _queue(self) -> _Appends:
        queue = self._appended
        if queue is None or queue.pid != os.getpid():  # none yet, or a fork's copy: a new one
            with _appends_lock:
                queue = self._appended
                if queue is None or queue.pid != os.getpid():
                    queue = self._appended = _Appends()
                    threading.Thread(
                        target=self._write_queued, args=(queue,), name="store-appends", daemon=True
                    ).start()
                    _live_stores.add(self)
        return queue

    def _write_queued(self, queue: _Appends) -> None:
        while True:
            with queue.ready:
                queue.ready.wait_for(lambda: bool(queue.rows) or queue.closed)
                if queue.closed:  # the store was disposed (and flushed)
                    return
            time.sleep(APPEND_DELAY)  # the rows of the next few ms go in the same transaction
            try:
                self._flush(queue)
            except Exception:  # never the thread's end: the next rows are written again
                log.exception("could not write appended rows")

    def _write_appended(self, rows: list[tuple[_Append, Any]]) -> None:
        """`rows` in one transaction; if it is refused, each row in one of its own. What is
        still refused is logged, never raised: the caller may be a reader of the log (`flush`)
        or `dispose`, neither of which a lost log line should fail."""
        try:
            self._insert_rows(rows)
            return
        except Exception as exc:
            failure: Exception = exc
        lost = len(rows)
        if len(rows) > 1:
            lost = 0
            for row in rows:
                try:
                    self._insert_rows([row])
                except Exception as exc:
                    lost, failure = lost + 1, exc
        if lost:
            log.error("%d of %d appended rows not written: %s", lost, len(rows), failure)

    def _insert_rows(self, rows: list[tuple[_Append, Any]]) -> None:
        by_plan: dict[_Append, list[Any]] = {}
        for plan, params in rows:
            by_plan.setdefault(plan, []).append(params)
        pooled = self.engine.raw_connection()
        driver: Any = pooled.driver_connection
        try:
            if self.dialect == "sqlite":
                _begin_immediate(driver)  # as every SQLite write (PostgreSQL's BEGIN is implicit)
            try:
                cursor = driver.cursor()
                for plan, params in by_plan.items():
                    if plan.copy is None:
                        cursor.executemany(plan.sql, params)
                        continue
                    with cursor.copy(plan.copy) as copy:
                        for row in params:
                            copy.write_row(row)
                cursor.close()
            except BaseException:
                driver.rollback()
                raise
            driver.commit()
        except self.engine.dialect.loaded_dbapi.Error as exc:
            if self.engine.dialect.is_disconnect(exc, driver, None):
                pooled.invalidate(exc)  # the pool opens a new one next time
            raise
        finally:
            pooled.close()
        self._wrote()

    def _wrote(self) -> None:
        """Count a committed SQLite write; every CHECKPOINT_EVERY, a checkpoint in the
        background (_Checkpoints). A count lost to a race between threads costs nothing."""
        if self._wal is None:
            return
        self._writes += 1
        if self._writes >= CHECKPOINT_EVERY:
            self._writes = 0
            _checkpoints.request(self._wal)

    def _end_read(self) -> _Scope | None:
        """End the request's read transaction (nothing was written in it); the scope."""
        scope = self._scoped()
        if scope is not None and scope.session is not None and scope.session.in_transaction():
            scope.session.commit()
        return scope

    @staticmethod
    def _attempt(db: Session, work: Callable[[Session], T], committing: list[bool]) -> T:
        with db.begin():
            db.connection(execution_options={WRITE: True})
            result = work(db)
            committing[0] = True
        return result

    def dispose(self) -> None:
        """Write what `append` queued, then close the pool's connections."""
        queue = self._appended
        if queue is not None and queue.pid == os.getpid():
            self._flush(queue)
            with queue.ready:
                queue.closed = True  # its thread ends
                queue.ready.notify()
            self._appended = None
            _live_stores.discard(self)
        if self._kept is not None:  # this thread's now, the others' at their next use
            self._kept.dispose()
        self.engine.dispose()
