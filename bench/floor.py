"""Where a SCIM request's CPU goes: the floors under it, what is ours, and scim2-server's cost.

    .venv/bin/python bench/floor.py [--database-url URL] [-n 300]
    /tmp/v1/bin/python bench/floor.py ...      # with scim2-server installed: the peer's columns

In one process, one thread, no HTTP: each request is a prebuilt WSGI environ handed to the app
(the bridge's Flask app with all its hooks, or scim2-server's WSGI app on its in-memory storage,
built as its `scim2-server --bearer-token` command builds it), so neither pays a client. SCIM
create (the bench/scim body), GET by id and filter `userName eq` (a hit) alternate request by
request between the two servers (same-run ratios); CPU is time.process_time, which barely moves
with the machine's load. Printed per request:

- **total**: the bridge's CPU and wall (medians), and scim2-server's CPU for the same request.
- **framework floor**: GET /healthz through the same app (Flask, Werkzeug, every app-wide hook,
  the request's database scope, which opens no connection for it).
- **DB floor**: the very statements the bridge sent for that request (captured with engine
  events, in a first pass of their own: with a listener on the engine SQLite's statements go
  through SQLAlchemy, bridge.driver; the figures above come from the second pass), replayed
  through the bare driver (sqlite3 / psycopg: execute, fetchall, commit) on a copy of the
  database as it was: CPU, and wall (which includes PostgreSQL's own work).
- **PostgreSQL's own CPU** (PostgreSQL only): the CPU its server processes spent on the
  bridge's requests (every connection of the bench's database: the request's, the SCIM log's
  writer), and on the bare driver's replay of the same statements, read from the kernel's
  per-process scheduler statistics (/proc/<pid>/schedstat: nanoseconds on a CPU; the server runs
  on this machine, so on its two cores). The in-memory peer has no server; on two shared cores
  the fair comparison adds it to the bridge's own CPU: the rows "with PostgreSQL's CPU".
- **where the rest goes**: a third pass sampled every 0.5 ms by a thread reading the main
  thread's CPU clock and stack, each sample charged to the innermost non-stdlib frame's layer
  (Flask/Werkzeug, json, SQLAlchemy, the driver, the peer's pydantic) and, for our own code, to
  the region it runs in (authentication, the SCIM request log, the audit chain, the rest);
  shares of the sampled CPU, scaled to the unsampled median. The sampler wakes as soon as the
  main thread blocks, so the CPU spent just before a blocking call is charged to it: on
  PostgreSQL the "driver" rows are an upper bound (the replay above is the driver's own cost),
  taken from the SQLAlchemy rows.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]

from cost import bridge_app, fresh_database  # noqa: E402

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
STDLIB = (sys.base_prefix, sys.base_exec_prefix)
OPS = ("create", "get", "filter")


def user_doc(seq: int) -> dict[str, Any]:
    return {
        "schemas": [USER_SCHEMA, ENTERPRISE],
        "userName": f"floor{seq:06d}@bench.example",
        "externalId": f"floor-ext-{seq:06d}",
        "active": True,
        "displayName": f"Bench User {seq}",
        "name": {"givenName": "Bench", "familyName": f"User{seq}"},
        "emails": [{"value": f"floor{seq:06d}@bench.example", "type": "work", "primary": True}],
        ENTERPRISE: {"department": f"Dept-{seq % 20}", "employeeNumber": str(seq)},
    }


def environ(method: str, path: str, token: str | None, body: Any = None, **query: str) -> Any:
    from werkzeug.test import EnvironBuilder

    headers = {"Content-Type": "application/scim+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body)
    return EnvironBuilder(
        path=path, method=method, headers=headers, data=data, query_string=query or None
    ).get_environ()


def call(app: Callable[..., Any], env: dict[str, Any]) -> tuple[int, bytes]:
    status: list[str] = []
    result = app(env, lambda s, _h, _e=None: status.append(s))
    try:
        body = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return int(status[0][:3]), body


def timed(app: Callable[..., Any], env: dict[str, Any], ok: int) -> tuple[float, float, bytes]:
    """CPU ms, wall ms and the body of one request."""
    t0, w0 = time.process_time(), time.perf_counter()
    code, body = call(app, env)
    cpu, wall = (time.process_time() - t0) * 1000, (time.perf_counter() - w0) * 1000
    assert code == ok, (env["PATH_INFO"], code, body[:300])
    return cpu, wall, body


# ---------------------------------------------------------------- the sampler


def layer_of(filename: str, function: str) -> str | None:
    """The layer a frame belongs to; None for the standard library (charged to its caller)."""
    f = filename.replace("\\", "/")
    if "/psycopg" in f or (f.endswith("sqlalchemy/engine/default.py") and function[:3] == "do_"):
        return "driver"
    if f.endswith("bridge/store.py") and function == "_begin_immediate":
        return "driver"
    for marker, layer in (
        ("/sqlalchemy/", "SQLAlchemy"),
        ("/flask/", "Flask/Werkzeug"),
        ("/werkzeug/", "Flask/Werkzeug"),
        ("/pydantic", "pydantic"),
        ("/scim2_models/", "peer"),
        ("/scim2_server/", "peer"),
        ("/json/", "json"),
    ):
        if marker in f:
            return layer
    if f.endswith("bench/floor.py"):
        return "harness"
    if f.startswith(STDLIB) or "<frozen" in f:
        return None
    return "ours"


REGIONS = (  # (file suffix, function) -> region; the outermost match wins
    ("bridge/accounts.py", "token_use", "auth"),
    ("bridge/scim_log.py", "record", "request log"),
    ("bridge/audit.py", None, "audit chain"),
)


def region_of(frame: Any) -> str:
    region = "logic"
    while frame is not None:
        code = frame.f_code
        for suffix, function, name in REGIONS:
            if code.co_filename.endswith(suffix) and function in (None, code.co_name):
                region = name
        frame = frame.f_back
    return region


REGIONAL = ("ours", "SQLAlchemy", "driver", "json")  # layers told apart by region


@contextmanager
def sampled(
    charge: Counter[str],
    every: float = 0.0005,
    *,
    layer: Callable[[str, str], str | None] = layer_of,
    region: Callable[[Any], str] = region_of,
    regional: tuple[str, ...] = REGIONAL,
) -> Iterator[None]:
    """Charge the main thread's CPU to what it runs, sampled every `every` seconds: to the
    innermost frame's `layer` (its caller's for None; "stdlib" when none says), and for the
    `regional` layers to the `region` the stack is in (bench/saml/login_floor.py passes its own)."""
    main = threading.main_thread().ident
    assert main is not None
    clock = time.pthread_getcpuclockid(main)
    stop = threading.Event()
    old = sys.getswitchinterval()

    def sample() -> None:
        last = time.clock_gettime(clock)
        while not stop.wait(every):
            now = time.clock_gettime(clock)
            frame = sys._current_frames().get(main)
            found, f = None, frame
            while f is not None and found is None:
                found = layer(f.f_code.co_filename, f.f_code.co_name)
                f = f.f_back
            if found is None:
                found = "stdlib"
            if found in regional:
                found = f"{found}: {region(frame)}"
            charge[found] += now - last
            last = now

    sys.setswitchinterval(every / 10)  # the sampler waits for the GIL at most this long
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(old)


# ---------------------------------------------------------------- statements and their replay


class Capture:
    """Every transaction boundary and statement the app's engine sends, per request."""

    def __init__(self, engine: Any) -> None:
        from bridge.store import STANDALONE, WRITE

        self.on = False
        self.requests: list[list[tuple[Any, ...]]] = []

        def add(ev: tuple[Any, ...]) -> None:
            if self.on:
                self.requests[-1].append(ev)

        sqlite = engine.dialect.name == "sqlite"
        begun: dict[int, bool] = {}  # connections begun, no statement sent yet

        def alone(conn: Any) -> bool:
            """Whether `conn` sends its statements without a transaction (bridge.store: on
            PostgreSQL in autocommit, on SQLite with no BEGIN)."""
            if sqlite:
                return bool(getattr(conn, STANDALONE, False))
            return bool(conn.connection.dbapi_connection.autocommit)

        def statement(conn: Any, _cur: Any, sql: str, params: Any, _ctx: Any, many: bool) -> None:
            if sql == "BEGIN":  # older code sent SQLite's through SQLAlchemy: see "begin"
                return
            write = begun.pop(id(conn), None)
            if write is not None:  # psycopg sends BEGIN before the first statement, unless the
                # connection is in autocommit (reads that stand alone: bridge.store)
                add(("begin", write, alone(conn)))
            elif alone(conn):  # a thread's kept connection, begun (in SQLAlchemy's view) before
                add(("begin", False, True))
            add(("sql", sql, params, many))

        def begin(conn: Any) -> None:
            # bridge.store sends SQLite's BEGIN as SQLAlchemy begins (none for reads alone)
            begun[id(conn)] = bool(conn.get_execution_options().get(WRITE))

        def end(kind: str) -> Callable[[Any], None]:
            def ended(conn: Any) -> None:
                begun.pop(id(conn), None)
                # psycopg sends COMMIT or ROLLBACK only inside a transaction
                if sqlite or conn.connection.dbapi_connection.info.transaction_status:
                    add((kind,))

            return ended

        self.engine = engine
        self.listeners = [
            ("begin", begin),
            ("before_cursor_execute", statement),
            ("commit", end("commit")),
            ("rollback", end("rollback")),
        ]

    def attach(self) -> None:
        """Listen (SQLite's statements then go through SQLAlchemy: bridge.driver)."""
        from sqlalchemy import event

        self.had_events = self.engine._has_events
        for name, fn in self.listeners:
            event.listen(self.engine, name, fn)

    def detach(self) -> None:
        from sqlalchemy import event

        for name, fn in self.listeners:
            event.remove(self.engine, name, fn)
        # SQLAlchemy keeps an engine's "has listeners" flag once set, and then dispatches each
        # step of every statement and transaction to the (now empty) listener lists: 0.5 ms
        # of a SCIM create's CPU on SQLite. The app's engine had none (or what it had).
        self.engine._has_events = self.had_events

    @contextmanager
    def request(self) -> Iterator[None]:
        self.requests.append([])
        self.on = True
        try:
            yield
        finally:
            self.on = False


def replay(dbapi: Any, sqlite: bool, events: list[tuple[Any, ...]]) -> None:
    for ev in events:
        if ev[0] == "begin":
            if not sqlite:  # psycopg: no BEGIN (and no end) for reads that stand alone
                dbapi.autocommit = ev[2]
            elif not ev[2]:  # SQLite: none for reads that stand alone
                dbapi.execute("BEGIN IMMEDIATE" if ev[1] else "BEGIN")
        elif ev[0] == "sql":
            cur = dbapi.cursor()
            (cur.executemany if ev[3] else cur.execute)(ev[1], ev[2])
            if cur.description is not None:
                cur.fetchall()
            cur.close()
        elif ev[0] == "commit":
            dbapi.commit()
        else:
            dbapi.rollback()


def snapshot(store: Any, url: str, tag: str) -> tuple[str, Callable[[], None]]:
    """A copy of the database as it is now (the create's statements replay on it)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    store.dispose()  # the queued log rows written first: no connection stays open
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = str(parsed.database)
        copy = f"{path}.{tag}"
        with sqlite3.connect(path) as src, sqlite3.connect(copy) as dst:
            src.backup(dst)
        return f"sqlite:///{copy}", lambda: None
    name = f"{parsed.database}_{tag}"
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{parsed.database}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return parsed.set(database=name).render_as_string(hide_password=False), drop


def replay_session(sessions: Any, events: list[tuple[Any, ...]]) -> None:
    """The same statements as SQL strings through SQLAlchemy sessions: no statement to build,
    compile or look up, no ORM objects; a session per transaction, as bridge.store opens them
    (on SQLite a connection with no BEGIN for reads that stand alone, as bridge.store's)."""
    from sqlalchemy import Connection

    from bridge.store import STANDALONE, WRITE

    engine = sessions.kw["bind"]
    sqlite = engine.dialect.name == "sqlite"
    db: Any = None  # a session, or a connection

    def done() -> None:
        nonlocal db
        if db is not None:
            db.close()
            db = None

    for ev in events:
        if ev[0] == "begin":
            done()  # reads that stood alone: no end was sent
            if ev[2] and sqlite:
                db = engine.connect()
                setattr(db, STANDALONE, True)
                continue
            db = sessions()
            alone = {"isolation_level": "AUTOCOMMIT"} if ev[2] else {}
            db.connection(execution_options={WRITE: True, **alone} if ev[1] else alone)
        elif ev[0] == "sql":
            assert db is not None
            conn = db if isinstance(db, Connection) else db.connection()
            result = conn.exec_driver_sql(ev[1], list(ev[2]) if ev[3] else ev[2])
            if result.returns_rows:
                result.all()
        elif db is not None:
            if not isinstance(db, Connection):
                db.commit() if ev[0] == "commit" else db.rollback()
            done()
    done()


class ServerCpu:
    """CPU ms PostgreSQL's server processes spent, read from /proc/<pid>/schedstat (ns on a
    CPU): of every connection to `database` but the one asking (None: SQLite, nothing to read),
    or of the connection `pid` names."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        self.database = parsed.database
        self.engine = (
            create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
            if parsed.get_backend_name() == "postgresql"
            else None
        )

    def pids(self) -> list[int]:
        from sqlalchemy import text

        assert self.engine is not None
        with self.engine.connect() as conn:
            return list(
                conn.scalars(
                    text("SELECT pid FROM pg_stat_activity WHERE datname = :db"),
                    {"db": self.database},
                )
            )

    @staticmethod
    def of(pids: list[int]) -> dict[int, float]:
        spent: dict[int, float] = {}
        for pid in pids:
            try:
                with open(f"/proc/{pid}/schedstat") as f:
                    spent[pid] = int(f.read().split()[0]) / 1e6
            except (OSError, ValueError, IndexError):
                pass  # a connection closed meanwhile
        return spent

    def sample(self) -> dict[int, float] | None:
        return None if self.engine is None else self.of(self.pids())

    @staticmethod
    def since(before: dict[int, float] | None, after: dict[int, float] | None) -> float:
        """ms between two samples (a connection opened between them counts from 0)."""
        if before is None or after is None:
            return float("nan")
        return sum(ms - before.get(pid, 0.0) for pid, ms in after.items())

    def dispose(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


def replayed(
    url: str, requests: list[list[tuple[Any, ...]]], through: str
) -> tuple[float, float, float]:
    """Median CPU and wall ms of replaying each request's statements through the bare driver
    (`through` "driver") or SQLAlchemy sessions ("session"); and PostgreSQL's mean CPU ms per
    request for it (NaN on SQLite)."""
    from sqlalchemy.orm import sessionmaker

    from bridge.store import make_engine

    engine = make_engine(url)  # the bridge's connection set-up (SQLite's pragmas)
    raw = engine.raw_connection()
    sessions = sessionmaker(engine, expire_on_commit=False)
    sqlite = engine.dialect.name == "sqlite"
    cpu, wall = [], []
    server: dict[int, float] | None = None
    if not sqlite:
        pid = raw.driver_connection.info.backend_pid
        server = ServerCpu.of([pid])
    try:
        for events in requests:
            t0, w0 = time.process_time(), time.perf_counter()
            if through == "driver":
                replay(raw.driver_connection, sqlite, events)
            else:
                replay_session(sessions, events)
            cpu.append((time.process_time() - t0) * 1000)
            wall.append((time.perf_counter() - w0) * 1000)
        after = None if server is None else ServerCpu.of(list(server))
        postgres = ServerCpu.since(server, after) / max(len(requests), 1)
    finally:
        raw.close()
        engine.dispose()
    return statistics.median(cpu), statistics.median(wall), postgres


# ---------------------------------------------------------------- the peer


def peer_app(token: str) -> Callable[..., Any] | None:
    try:
        from scim2_models import ScimProvider
        from scim2_server.memory import InMemoryStorage
        from scim2_server.service import ScimService
        from scim2_server.testserver.application import BEARER_TOKEN_SCHEME, BearerTokenApplication
        from scim2_server.utils import (
            load_default_resource_types,
            load_default_schemas,
            load_default_service_provider_config,
        )
    except ImportError:
        return None
    config = load_default_service_provider_config()
    config.authentication_schemes = [*(config.authentication_schemes or []), BEARER_TOKEN_SCHEME]
    provider = ScimProvider.from_discovery(
        load_default_schemas().values(), load_default_resource_types().values(), config=config
    )
    service = ScimService(provider, secret=secrets.token_urlsafe(32))
    app: Callable[..., Any] = BearerTokenApplication(
        InMemoryStorage(), provider, service=service, bearer_tokens=[token]
    )
    return app


# ---------------------------------------------------------------- the run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database-url", help="a PostgreSQL server URL (default: SQLite)")
    ap.add_argument("-n", type=int, default=300, help="requests per path and pass")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_floor_"))
    url, drop = fresh_database(args.database_url, tmp)
    try:
        return run(url, tmp, args.n)
    finally:
        drop()


def run(url: str, tmp: Path, n: int) -> int:
    import bridge

    app, store, token = bridge_app(url, tmp, "floor")
    peer = peer_app(token)
    server = ServerCpu(url)
    capture = Capture(store.engine)
    scim = "/scim/v2"

    def requests(base: str, ids: list[str], start: int) -> dict[str, list[Any]]:
        return {
            "create": [
                environ("POST", f"{base}/Users", token, user_doc(start + i)) for i in range(n)
            ],
            "get": [environ("GET", f"{base}/Users/{u}", token) for u in ids],
            "filter": [
                environ(
                    "GET",
                    f"{base}/Users",
                    token,
                    filter=f'userName eq "floor{start + i:06d}@bench.example"',
                )
                for i in range(n)
            ],
        }

    ok = {"create": 201, "get": 200, "filter": 200}
    # warm both (imports, caches, the token's last-used write, the log's purge)
    for i in range(20):
        call(app, environ("POST", f"{scim}/Users", token, user_doc(900000 + i)))
        call(app, environ("GET", f"{scim}/Users", token, count="1"))
        call(app, environ("GET", "/healthz", None))
        if peer:
            call(peer, environ("POST", "/v2/Users", token, user_doc(900000 + i)))
            call(peer, environ("GET", "/v2/Users", token, count="1"))
    # the database before the creates, twice: their statements replay on each copy once
    snaps = {through: snapshot(store, url, through) for through in ("driver", "session")}

    results: dict[str, dict[str, float]] = {}

    def one_pass(
        start: int, charge: dict[str, Counter[str]] | None, capturing: bool = False
    ) -> None:
        """Creates, then GETs and filters of what was created, each request of the bridge
        followed by the same one on the peer; `capturing`: the bridge's statements recorded."""
        ids: dict[str, list[str]] = {"bridge": [], "peer": []}
        mine = requests(scim, [], start)
        theirs = requests("/v2", [], start)
        cpu: dict[str, list[float]] = {}
        for op in OPS:
            if op != "create":
                mine[op] = mine[op] if op == "filter" else requests(scim, ids["bridge"], 0)[op]
                theirs[op] = theirs[op] if op == "filter" else requests("/v2", ids["peer"], 0)[op]
            for key in ("bridge", "bridge wall", "peer"):
                cpu.setdefault(f"{op} {key}", [])
            ctx = sampled(charge.setdefault(op, Counter())) if charge is not None else None
            spent = server.sample() if charge is None else None
            with ctx if ctx is not None else _nothing():
                for i, env_b in enumerate(mine[op]):
                    if capturing:
                        with capture.request():
                            c, w, body = timed(app, env_b, ok[op])
                    else:
                        c, w, body = timed(app, env_b, ok[op])
                    cpu[f"{op} bridge"].append(c)
                    cpu[f"{op} bridge wall"].append(w)
                    if op == "create":
                        ids["bridge"].append(json.loads(body)["id"])
                    if peer and charge is None:
                        c, _, body = timed(peer, theirs[op][i], ok[op])
                        cpu[f"{op} peer"].append(c)
                        if op == "create":
                            ids["peer"].append(json.loads(body)["id"])
            if charge is None:
                store.flush()  # the SCIM log's rows of these requests, on the server's CPU too
                cpu[f"{op} postgres"] = [ServerCpu.since(spent, server.sample()) / len(mine[op])]
        health = [environ("GET", "/healthz", None) for _ in range(n)]
        cpu["healthz bridge"] = [timed(app, e, 200)[0] for e in health]
        if charge is None:
            for key, values in cpu.items():
                if values:
                    results.setdefault(key, {})["median"] = statistics.median(values)

    # the statements, in a pass of their own: with the capture's listeners on the engine,
    # SQLite's statements go through SQLAlchemy (bridge.driver), so this pass is not timed
    capture.attach()
    try:
        one_pass(0, None, capturing=True)
    finally:
        capture.detach()
    statements = {  # the usual request (not the one that also writes a token's last use)
        op: statistics.median(
            sum(ev[0] != "begin" or not ev[2] for ev in r)  # the transactions really begun
            for r in capture.requests[i * n : (i + 1) * n]
        )
        for i, op in enumerate(OPS)
    }
    creates = len(capture.requests) and capture.requests[:n]
    reads = {"get": capture.requests[n : 2 * n], "filter": capture.requests[2 * n : 3 * n]}
    floors = {"create": replayed(snaps["driver"][0], list(creates or []), "driver")}
    sessions = {"create": replayed(snaps["session"][0], list(creates or []), "session")}
    for _, drop_snapshot in snaps.values():
        drop_snapshot()
    for op, events in reads.items():
        floors[op] = replayed(url, events, "driver")
        sessions[op] = replayed(url, events, "session")
    charges: dict[str, Counter[str]] = {}
    one_pass(n, None)  # timed: every figure but the statements' comes from here on
    one_pass(2 * n, charges)
    store.dispose()
    server.dispose()

    kind = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    code = Path(bridge.__file__).parents[1]
    print(f"floor of a SCIM request, {kind}, {n} each, code from {code}")
    print("CPU ms per request (medians; wall where it says so, PostgreSQL's own work in it)")
    print(f"{'':<34}" + "".join(f"{op:>10}" for op in OPS))

    def row(label: str, values: list[float], fmt: str = "{:>10.2f}") -> None:
        print(f"{label:<34}" + "".join(fmt.format(v) for v in values))

    def each(f: Callable[[str], float]) -> list[float]:
        return [f(op) for op in OPS]

    healthz = results["healthz bridge"]["median"]
    total = each(lambda op: results[f"{op} bridge"]["median"])
    row("bridge", total)
    row("bridge wall", each(lambda op: results[f"{op} bridge wall"]["median"]))
    row("statements + BEGIN, COMMIT, ROLLBACK", each(lambda op: statements[op]), "{:>10.0f}")
    row("framework floor: GET /healthz", [healthz] * len(OPS))
    row("DB floor: bare driver", each(lambda op: floors[op][0]))
    row("DB floor: bare driver, wall", each(lambda op: floors[op][1]))
    row("same SQL via SQLAlchemy sessions", each(lambda op: sessions[op][0]))
    row(
        "above framework + driver floors",
        each(lambda op: total[OPS.index(op)] - healthz - floors[op][0]),
    )
    postgres = server.engine is not None
    if postgres:
        row("PostgreSQL's CPU: the bridge's", each(lambda op: results[f"{op} postgres"]["median"]))
        row("PostgreSQL's CPU: bare driver", each(lambda op: floors[op][2]))
    if peer:
        theirs = each(lambda op: results[f"{op} peer"]["median"])
        row("scim2-server (in memory)", theirs)
        row(
            "ratio scim2-server / bridge",
            [p / b for p, b in zip(theirs, total, strict=True)],
            "{:>9.2f}x",
        )
        row(
            "ratio at framework + driver floors",
            each(lambda op: theirs[OPS.index(op)] / (healthz + floors[op][0])),
            "{:>9.2f}x",
        )
        row(
            "ratio at framework + SQLAlchemy",
            each(lambda op: theirs[OPS.index(op)] / (healthz + sessions[op][0])),
            "{:>9.2f}x",
        )
        if postgres:
            row(
                "ratio with PostgreSQL's CPU",
                each(
                    lambda op: (
                        theirs[OPS.index(op)]
                        / (total[OPS.index(op)] + results[f"{op} postgres"]["median"])
                    )
                ),
                "{:>9.2f}x",
            )
            row(
                "  at framework + driver floors",
                each(lambda op: theirs[OPS.index(op)] / (healthz + floors[op][0] + floors[op][2])),
                "{:>9.2f}x",
            )
    else:
        print("scim2-server is not importable here: no peer rows (pip install scim2-server)")
    print("\nwhere the bridge's CPU goes: layer: region (sampled pass, scaled to the medians)")
    for layer in sorted({k for c in charges.values() for k in c} - {"harness"}):
        row(
            f"  {layer}",
            each(
                lambda op, k=layer: (
                    charges[op][k] / sum(charges[op].values()) * total[OPS.index(op)]
                )
            ),
        )
    return 0


@contextmanager
def _nothing() -> Iterator[None]:
    yield


if __name__ == "__main__":
    sys.exit(main())
