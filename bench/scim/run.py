"""SCIM 2.0 benchmark: the bridge (gunicorn + PostgreSQL) against the scim2-server reference.

Run:  /tmp/v1/bin/python bench/scim/run.py [--users N] [--quick]

It starts both servers itself (a fresh PostgreSQL database, dropped at exit), talks only to
127.0.0.1, and interleaves every measurement between the two servers (bridge, reference, bridge,
reference, ...) because this machine's speed drifts: compare the ratios, not absolute numbers
from different runs. GET by id also runs on two floors (floor_app.py: one SELECT through the
bare driver behind the same gunicorn, and the same on Flask + SQLAlchemy). See
bench/scim/README.md.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import http.client
import itertools
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
CLIENTS = 4
FLOORS = (  # GET by id's floors (floor_app.py), as the report names and describes them
    ("HTTP floor", "one SELECT through the bare driver behind the same gunicorn"),
    ("stack floor", "the same on Flask and SQLAlchemy Core, nothing of the bridge's"),
)


def tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ servers


@dataclass
class Server:
    name: str
    port: int
    prefix: str
    token: str
    proc: subprocess.Popen[bytes] | None = None
    db: str = ""  # the bridge's database
    account_id: int = 0
    workers: int = 0  # gunicorn's workers (their connections are counted: Result.splits)

    def conn(self) -> Conn:
        return Conn(self)


class Conn:
    """One client's HTTP connection (keep-alive where the server allows it)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.headers = {
            "Authorization": f"Bearer {server.token}",
            "Content-Type": "application/scim+json",
            "Accept": "application/scim+json",
        }
        self.http = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)

    def request(
        self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None
    ) -> tuple[int, bytes]:
        url = self.server.prefix + path + ("?" + urlencode(params) if params else "")
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body))
        for attempt in (1, 2):
            try:
                self.http.request(method, url, body=data, headers=self.headers)
                resp = self.http.getresponse()
                return resp.status, resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # an idle keep-alive connection the server closed; only retried before any reply
                self.http.close()
                if attempt == 2 or method not in ("GET",):
                    raise
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        status, data = self.request(method, path, body, params or None)
        if status >= 300:
            raise RuntimeError(f"{self.server.name} {method} {path} -> {status}: {data[:300]!r}")
        return json.loads(data) if data else None

    def close(self) -> None:
        self.http.close()


class Harness:
    """Starts and stops everything this run needs; all cleanup by the ids it started."""

    def __init__(self, root: Path = ROOT, sqlite: bool = False) -> None:
        self.root = root
        self.sqlite = sqlite
        self.tmp = Path(tempfile.mkdtemp(prefix="bench_scim_"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.dbs: list[str] = []
        atexit.register(self.cleanup)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    def url(self, db: str) -> str:
        if self.sqlite:
            return f"sqlite:///{self.tmp / db}.db"
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}"

    def env(self, db: str, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            BRIDGE_DATABASE_URL=self.url(db),
            BRIDGE_INSTANCE_PATH=str(self.tmp / "instance"),
            BRIDGE_SECRET_KEY="bench-not-a-secret-" + "0" * 16,
            BRIDGE_LOG_LEVEL="WARNING",
            BRIDGE_POLICY_DIR=str(self.tmp / "policies"),
        )
        env.update(extra)
        return env

    def connect(self, db: str) -> Any:
        """A connection to the bridge's own database (either kind), for reading."""
        if self.sqlite:
            import sqlite3

            return contextlib.closing(sqlite3.connect(self.tmp / f"{db}.db"))
        return self.pg(db)

    def pg(self, dbname: str = "test", autocommit: bool = True) -> Any:
        import psycopg

        return psycopg.connect(dbname=dbname, autocommit=autocommit, **PG)  # type: ignore[arg-type]

    def cli(self, db: str, *args: str) -> str:
        if self.root == ROOT:
            cmd = [tool("idbridge"), *args]
        else:  # another checkout: its own code, found first on sys.path from its directory
            main = "import sys; from bridge.cli import main; sys.argv[0] = 'bridge'; main()"
            cmd = [sys.executable, "-c", main, *args]
        out = subprocess.run(
            cmd,
            cwd=self.root,
            env=self.env(db),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise RuntimeError(f"bridge {' '.join(args)} failed: {out.stderr}")
        return out.stdout

    def start_bridge(self, suffix: str = "") -> Server:
        """A bridge on its own fresh database `bench_scim_<pid><suffix>`."""
        db = f"bench_scim_{os.getpid()}{suffix}"
        if not self.sqlite:
            with self.pg() as conn:
                conn.execute(f'CREATE DATABASE "{db}"')
            self.dbs.append(db)
        self.cli(db, "db", "upgrade")
        self.cli(db, "accounts", "create", "bench")
        token = self.cli(db, "tokens", "issue", "bench").strip().splitlines()[-1].strip()
        with self.connect(db) as conn:
            account_id = conn.execute("SELECT id FROM accounts WHERE slug = 'bench'").fetchone()[0]
        port = free_port()
        logf = open(self.tmp / f"gunicorn{suffix}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [tool("gunicorn"), "--config", "gunicorn.conf.py", "bridge:create_app()"],
            cwd=self.root,
            env=self.env(
                db,
                BIND=f"127.0.0.1:{port}",
                WEB_CONCURRENCY="2",
                BRIDGE_BASE_URL=f"http://127.0.0.1:{port}",
            ),
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        server = Server("bridge", port, "/scim/v2", token, proc, db, account_id, workers=2)
        self.wait_ready(server, "/ServiceProviderConfig")
        return server

    def start_floor(self, bridge: Server, name: str = "HTTP floor", target: str = "app") -> Server:
        """The HTTP floor of a GET by id (floor_app.py): one SELECT through the bare driver on
        `bridge`'s database, served by gunicorn as the bridge is (its config, 2 workers); with
        `target` "stack_app", the same on Flask and SQLAlchemy (the stack floor)."""
        port = free_port()
        logf = open(self.tmp / f"gunicorn-floor-{target}.log", "wb")  # noqa: SIM115
        here = Path(__file__).resolve().parent
        proc = subprocess.Popen(
            [tool("gunicorn"), "--config", "gunicorn.conf.py", f"floor_app:{target}"],
            cwd=self.root,
            env=self.env(
                bridge.db,
                BIND=f"127.0.0.1:{port}",
                WEB_CONCURRENCY="2",
                BENCH_FLOOR_TOKEN=bridge.token,
                PYTHONPATH=f"{self.root}{os.pathsep}{here}",
            ),
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        server = Server(name, port, "/scim/v2", bridge.token, proc, bridge.db, workers=2)
        self.wait_ready(server, "/ServiceProviderConfig")
        return server

    def stop(self, server: Server) -> None:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.terminate()
            server.proc.wait(timeout=60)

    def start_reference(self) -> Server:
        port = free_port()
        token = uuid.uuid4().hex
        logf = open(self.tmp / "scim2-server.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                tool("scim2-server"),
                "--hostname",
                "127.0.0.1",
                "--port",
                str(port),
                "--bearer-token",
                token,
            ],
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        server = Server("scim2-server", port, "/v2", token, proc)
        self.wait_ready(server, "/ServiceProviderConfig")
        return server

    def wait_ready(self, server: Server, path: str) -> None:
        deadline = time.monotonic() + 60
        while True:
            assert server.proc is not None
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.name} exited with {server.proc.returncode}")
            try:
                c = server.conn()
                status, _ = c.request("GET", path)
                c.close()
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.name} did not start")
            time.sleep(0.2)

    def cleanup(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        while self.dbs:
            db = self.dbs.pop()
            try:
                with self.pg() as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            except Exception as exc:
                log(f"could not drop database {db}: {exc}")


# ------------------------------------------------------------------ load

Check = Callable[[int, bytes], str | None]


@dataclass
class Item:
    method: str
    path: str
    body: Any = None
    params: dict[str, Any] | None = None
    check: Check | None = None


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    errors: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    bytes: int = 0
    skipped: int = 0
    splits: list[str] = field(default_factory=list)  # each round's connections per worker

    def merge(self, other: Result) -> None:
        self.skipped += other.skipped
        self.splits += other.splits
        self.latencies += other.latencies
        self.wall += other.wall
        self.errors += other.errors
        self.bytes += other.bytes
        for k, v in other.statuses.items():
            self.statuses[k] = self.statuses.get(k, 0) + v

    @property
    def n(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.n / self.wall if self.wall else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs), max(1, math.ceil(q / 100 * len(xs)))) - 1] * 1000  # nearest rank


def load(
    server: Server, items: list[Item], clients: int = CLIENTS, budget: float | None = None
) -> Result:
    """Run `items` with `clients` threads, each on its own connection; fixed request count.

    `budget` (seconds): stop handing out requests after it, so a pathological server cannot make
    the run unbounded; what was not sent is counted in `skipped`.
    """
    counter = itertools.count()
    lock = threading.Lock()
    result = Result()
    start = threading.Barrier(clients + 1)
    t_begin = [0.0]
    answered = [0]  # clients whose connection has had its first answer
    connected = threading.Event()

    def worker() -> None:
        conn = server.conn()
        lats: list[float] = []
        errs: list[str] = []
        stats: dict[int, int] = {}
        nbytes = 0
        start.wait()
        while True:
            with lock:
                i = next(counter)
            if i >= len(items):
                break
            if budget is not None and time.perf_counter() - t_begin[0] > budget:
                with lock:
                    result.skipped += 1
                continue
            it = items[i]
            t0 = time.perf_counter()
            try:
                status, data = conn.request(it.method, it.path, it.body, it.params)
            except Exception as exc:
                errs.append(f"{it.method} {it.path} {it.params or ''}: {exc!r}")
                conn = server.conn()
                continue
            if not lats:
                with lock:
                    answered[0] += 1
                    if answered[0] == clients:
                        connected.set()
            lats.append(time.perf_counter() - t0)
            nbytes += len(data)
            stats[status] = stats.get(status, 0) + 1
            problem = (
                it.check(status, data)
                if it.check
                else (None if status < 300 else f"status {status}")
            )
            if problem:
                errs.append(f"{it.method} {it.path} {it.params or ''}: {problem}: {data[:200]!r}")
        conn.close()
        with lock:
            result.latencies.extend(lats)
            result.errors.extend(errs)
            result.bytes += nbytes
            for k, v in stats.items():
                result.statuses[k] = result.statuses.get(k, 0) + v

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    t_begin[0] = time.perf_counter()
    start.wait()
    if 1 < server.workers <= clients and connected.wait(timeout=30):
        result.splits.append(split(server))
    for t in threads:
        t.join()
    result.wall = time.perf_counter() - t_begin[0]
    return result


def split(server: Server) -> str:
    """How the clients' keep-alive connections to `server` sit on its workers, most first
    ("3-1": three on one worker, one on the other), read with `ss` while they are open. Each
    worker keeps the connections it accepted (bridge.serving spreads them unless
    GUNICORN_ACCEPT_DEFER_MS is 0), so a round's req/s depends on this: '?' without `ss`."""
    try:
        out = subprocess.run(
            ["ss", "-tnpH", "state", "established", f"( sport = :{server.port} )"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    per_pid: dict[str, int] = {}
    for pid in re.findall(r"pid=(\d+)", out):
        per_pid[pid] = per_pid.get(pid, 0) + 1
    if not per_pid:  # no owners shown (another user's processes): unknown, not 0-0
        return "?"
    counts = sorted(per_pid.values(), reverse=True)
    counts += [0] * (server.workers - len(counts))
    return "-".join(map(str, counts))


def list_check(total: int, first_id: str | None = None) -> Check:
    def check(status: int, data: bytes) -> str | None:
        if status != 200:
            return f"status {status}"
        doc = json.loads(data)
        if doc.get("totalResults") != total:
            return f"totalResults {doc.get('totalResults')} != {total}"
        if first_id is not None and doc["Resources"][0]["id"] != first_id:
            return "wrong resource"
        return None

    return check


def status_check(*ok: int) -> Check:
    return lambda status, data: None if status in ok else f"status {status}"


# ------------------------------------------------------------------ data


def user_doc(seq: int, tag: str) -> dict[str, Any]:
    return {
        "schemas": [USER_SCHEMA, ENTERPRISE],
        "userName": f"{tag}{seq:06d}@bench.example",
        "externalId": f"{tag}-ext-{seq:06d}",
        "active": True,
        "displayName": f"Bench User {seq}",
        "name": {"givenName": "Bench", "familyName": f"User{seq}"},
        "emails": [{"value": f"{tag}{seq:06d}@bench.example", "type": "work", "primary": True}],
        ENTERPRISE: {"department": f"Dept-{seq % 20}", "employeeNumber": str(seq)},
    }


@dataclass
class Population:
    """What a server holds: users in creation order (id, userName, externalId)."""

    users: list[tuple[str, str, str]] = field(default_factory=list)


def bulk_insert_users(h: Harness, server: Server, tag: str, start: int, count: int) -> None:
    """Users straight into the bridge's tables, as a SCIM create would have written them."""
    account_id = server.account_id
    with h.pg(server.db) as conn:
        conn.execute(
            """
            INSERT INTO users (id, account_id, user_name, user_name_key, external_id, active,
                               display_name, given_name, family_name, department,
                               employee_number, created, last_modified, version)
            SELECT gen_random_uuid(), %(a)s, %(t)s || lpad(g::text, 6, '0') || '@bench.example',
                   %(t)s || lpad(g::text, 6, '0') || '@bench.example',
                   %(t)s || '-ext-' || lpad(g::text, 6, '0'), true, 'Bench User ' || g, 'Bench',
                   'User' || g, 'Dept-' || (g %% 20), g::text,
                   (now() at time zone 'utc') + g * interval '1 microsecond',
                   now() at time zone 'utc', 1
            FROM generate_series(%(s)s::int, %(e)s::int) AS g
            """,
            {"a": account_id, "t": tag, "s": start, "e": start + count - 1},
        )
        # Statistics first: on a fresh table the foreign-key checks of the next insert would
        # otherwise be planned as sequential scans of users (minutes instead of seconds).
        conn.execute("ANALYZE users")
        conn.execute(
            """
            INSERT INTO user_emails (user_id, position, type, "primary", value, value_key)
            SELECT id, 0, 'work', true, user_name, user_name_key FROM users
            WHERE account_id = %(a)s
              AND NOT EXISTS (SELECT 1 FROM user_emails e WHERE e.user_id = users.id)
            """,
            {"a": account_id},
        )
        conn.execute("ANALYZE")


def bridge_users(h: Harness, server: Server) -> list[tuple[str, str, str]]:
    query = (
        "SELECT id, user_name, external_id FROM users WHERE account_id = %s ORDER BY created, id"
    )
    with h.connect(server.db) as conn:
        rows = conn.execute(
            query.replace("%s", "?") if h.sqlite else query, (server.account_id,)
        ).fetchall()
    return [(str(uuid.UUID(r[0]) if h.sqlite else r[0]), r[1], r[2]) for r in rows]


def bulk_members(h: Harness, server: Server, group_id: str, user_ids: list[str]) -> None:
    with h.pg(server.db) as conn, conn.cursor() as cur:
        with cur.copy("COPY memberships (group_id, user_id, provenance, created) FROM STDIN") as cp:
            now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
            for uid in user_ids:
                cp.write_row((group_id, uid, "scim", now))
        cur.execute("ANALYZE memberships")


# ------------------------------------------------------------------ report


class Report:
    def __init__(self) -> None:
        self.rows: list[str] = []
        self.targets: list[tuple[str, bool, str]] = []
        self.errors: list[str] = []
        self.notes: list[str] = []

    def section(self, title: str) -> None:
        self.line("")
        self.line(f"== {title}   [loadavg {loadavg()}]")

    def line(self, text: str) -> None:
        self.rows.append(text)
        print(text, flush=True)

    def header(self) -> None:
        self.line(
            f"{'scenario':<44} {'server':<13} {'n':>6} {'req/s':>8} "
            f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
        )

    def result(self, label: str, server: str, r: Result) -> None:
        extra = ""
        if r.errors:
            extra += f"  {len(r.errors)} errors"
        if r.skipped:
            extra += f"  {r.skipped} not sent (time budget)"
        if r.splits:
            extra += f"  split {' '.join(r.splits)}"
        self.line(
            f"{label:<44} {server:<13} {r.n:>6} {r.rps:>8.1f} "
            f"{r.pct(50):>8.2f} {r.pct(95):>8.2f} {r.pct(99):>8.2f}{extra}"
        )
        for e in r.errors[:3]:
            self.errors.append(f"{server} {label}: {e}")
        if len(r.errors) > 3:
            self.errors.append(f"{server} {label}: ... {len(r.errors)} errors in all")

    def ratio(self, label: str, a: Result, b: Result) -> tuple[float, float]:
        tr = a.rps / b.rps if b.rps else float("nan")
        lr = a.pct(50) / b.pct(50) if b.pct(50) else float("nan")
        self.line(f"{label:<44} {'ratio b/s2':<13} {'':>6} {tr:>7.2f}x {lr:>7.2f}x")
        return tr, lr

    def target(self, text: str, ok: bool, measured: str) -> None:
        self.targets.append((text, ok, measured))
        self.line(f"  -> {'PASS' if ok else 'MISS'}: {text} [{measured}]")


# ------------------------------------------------------------------ the benchmark


@dataclass
class Plan:
    rounds: int
    creates: int  # per server per round
    create_budget: float  # seconds per server per round
    reads: int  # per server per round per read scenario
    walks: int  # paginated walks per server per round
    bridge_users: int
    sizes_bridge: list[int]
    sizes_ref: list[int]
    patches: dict[int, int]  # requests per round by group size
    full_reads: int


def plan_for(args: argparse.Namespace) -> Plan:
    if args.quick:
        return Plan(
            rounds=2,
            creates=300,
            create_budget=10,
            reads=200,
            walks=1,
            bridge_users=args.users or 20_000,
            sizes_bridge=[100, 1_000, 10_000],
            sizes_ref=[100, 1_000],
            patches={100: 40, 1_000: 40, 10_000: 20, 50_000: 10},
            full_reads=3,
        )
    return Plan(
        rounds=3,
        creates=700,
        create_budget=30,
        reads=1_000,
        walks=1,
        bridge_users=args.users or 100_000,
        sizes_bridge=[100, 1_000, 10_000, 50_000],
        sizes_ref=[100, 1_000, 10_000],
        patches={100: 100, 1_000: 100, 10_000: 60, 50_000: 20},
        full_reads=5,
    )


def rss_of_workers(master: int) -> dict[int, tuple[int, int]]:
    """VmRSS and VmHWM (kB) of the gunicorn master's children."""
    out: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != master:
                continue
            fields = {}
            for line in (entry / "status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0])
            out[int(entry.name)] = (fields["VmRSS"], fields["VmHWM"])
        except (OSError, ValueError, KeyError, IndexError):
            continue
    return out


def loadavg() -> str:
    """The machine's 1-minute load: other work on these 2 cores shows up here."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def ref_cap(n: int, size: int) -> int:
    """Requests per round for the reference on a group of `size`: its cost grows with the size."""
    return max(2, min(n, 100_000 // size) // 2 * 2)


def git_state(root: Path) -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "bridge", "scim", "gunicorn.conf.py"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
    except OSError:
        return "git unknown"
    if not head:
        return "(not a git checkout)"
    return f"git {head}" + (f" + {len(dirty)} uncommitted files in bridge/ scim/" if dirty else "")


def rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.plan = plan_for(args)
        self.h = Harness(Path(args.app_dir).resolve(), sqlite=args.sqlite)
        self.rep = Report()
        self.rng = random.Random(7)
        self.pop: dict[str, Population] = {}
        self.bulk_seq = 0

    # -- helpers

    def both(
        self,
        label: str,
        make: Callable[[Server, int], list[Item]],
        clients: int = CLIENTS,
        budget: float | None = None,
        warm: bool = False,
        rounds: int | None = None,
    ) -> tuple[Result, Result]:
        """Interleaved rounds: bridge, reference, bridge, reference, ...

        `warm`: first send a few of the requests unmeasured (read scenarios only), so the first
        use of a query shape (compiled statement caches, prepared statements) is not a p99.
        """
        res = {s.name: Result() for s in self.servers}
        if warm:
            for s in self.servers:
                load(s, make(s, 0)[: 4 * clients], clients)
        for r in range(rounds or self.plan.rounds):
            for s in self.servers:
                res[s.name].merge(load(s, make(s, r), clients, budget))
        a, b = res[self.bridge.name], res[self.ref.name]
        self.rep.result(label, self.bridge.name, a)
        self.rep.result(label, self.ref.name, b)
        return a, b

    # -- run

    def run(self) -> int:
        t_start = time.monotonic()
        p = self.plan
        log(f"starting servers (temp dir {self.h.tmp})")
        self.bridge = self.h.start_bridge()
        self.ref = self.h.start_reference()
        self.servers = [self.bridge, self.ref]
        print(
            f"SCIM benchmark: bridge (gunicorn, 2 workers, "
            f"{'SQLite' if self.args.sqlite else 'PostgreSQL'}) vs "
            f"scim2-server (in-memory, threaded wsgiref, HTTP/1.0); {CLIENTS} clients; "
            f"{p.rounds} interleaved rounds; {'quick' if self.args.quick else 'full'} run; "
            f"{os.cpu_count()} CPUs; {self.h.root} {git_state(self.h.root)}"
        )
        self.rep.header()
        self.scenario_create()
        self.settle()
        self.scenario_reads(small=True)
        self.scenario_walk()
        if self.args.sqlite:  # the scaling checks fill the database by PostgreSQL's SQL
            self.rep.line("(SQLite: sections 1-4 only; scaling and groups run on PostgreSQL)")
            self.summary(time.monotonic() - t_start)
            return 0
        self.grow()
        self.scenario_reads(small=False)
        self.scenario_deep_page()
        self.scenario_groups()
        self.scenario_full_group()
        self.summary(time.monotonic() - t_start)
        return 0

    def settle(self) -> None:
        """PostgreSQL: the planner's statistics of the users just created, as autovacuum takes
        them within a minute of a load (its naptime). Read at once, a table analyzed while it
        was empty plans a lookup by id or userName as a scan of the account's users: what a
        deployment sees only in the minute after a first load, not its steady state."""
        if self.args.sqlite:
            return
        with self.h.pg(self.bridge.db) as conn:
            conn.execute("ANALYZE")
        self.rep.line("(PostgreSQL: ANALYZE after the creates, as autovacuum does within a minute)")

    def scenario_create(self) -> None:
        p = self.plan
        self.rep.section("1. create users (POST /Users)")
        made: dict[str, list[tuple[str, str, str]]] = {s.name: [] for s in self.servers}
        seq = {s.name: itertools.count() for s in self.servers}

        def make(s: Server, n: int) -> list[Item]:
            items = []
            for _ in range(n):
                doc = user_doc(next(seq[s.name]), "user")

                def check(status: int, data: bytes, s: Server = s) -> str | None:
                    if status != 201:
                        return f"status {status}"
                    d = json.loads(data)
                    made[s.name].append((d["id"], d["userName"], d["externalId"]))
                    return None

                items.append(Item("POST", "/Users", json.dumps(doc).encode(), None, check))
            return items

        label = f"POST /Users, {CLIENTS} clients"
        a, b = self.both(
            label,
            lambda s, r: make(s, p.creates),
            budget=p.create_budget,
            rounds=1 if self.args.quick else None,
        )
        tr, _ = self.rep.ratio(label, a, b)
        self.rep.target("create >= 1x scim2-server (req/s, 4 clients)", tr >= 1.0, f"{tr:.2f}x")
        label = "POST /Users, 1 client"
        a1, b1 = self.both(
            label, lambda s, r: make(s, p.creates // 4), clients=1, budget=p.create_budget
        )
        self.rep.ratio(label, a1, b1)
        for s in self.servers:
            self.pop[s.name] = Population(sorted(made[s.name], key=lambda u: u[1]))
        # The read scenarios compare equal populations: top the bridge up by SQL if its creates
        # fell short (they do when concurrent creates fail), and the reference by HTTP.
        want = max(len(u.users) for u in self.pop.values())
        have = len(self.pop["bridge"].users)
        if have < want:
            self.bulk_users(self.bridge, "fill", want - have)
            self.rep.line(
                f"  (bridge: {want - have} of its {want} users inserted by SQL: "
                f"only {have} creates succeeded in the time budget)"
            )
        short = want - len(self.pop["scim2-server"].users)
        if short > 0:
            self.ref_users("fill", short)

    def bulk_users(self, server: Server, tag: str, count: int) -> None:
        """Bridge users by SQL (fast), then reload the population in walk order."""
        start = self.bulk_seq
        self.bulk_seq += count
        if self.h.sqlite:  # no generate_series: by HTTP, unmeasured
            items = [
                Item("POST", "/Users", json.dumps(user_doc(start + i, tag)).encode())
                for i in range(count)
            ]
            load(server, items)
        else:
            bulk_insert_users(self.h, server, tag, start, count)
        self.pop[server.name].users = bridge_users(self.h, server)

    def ref_users(self, tag: str, count: int) -> None:
        made: list[tuple[str, str, str]] = []

        def check(status: int, data: bytes) -> str | None:
            if status != 201:
                return f"status {status}"
            d = json.loads(data)
            made.append((d["id"], d["userName"], d["externalId"]))
            return None

        items = [
            Item("POST", "/Users", json.dumps(user_doc(i, tag)).encode(), None, check)
            for i in range(count)
        ]
        t0 = time.perf_counter()
        r = load(self.ref, items)
        log(f"scim2-server: created {len(made)} users by HTTP in {time.perf_counter() - t0:.1f}s")
        self.rep.errors += r.errors[:3]
        self.pop["scim2-server"].users += sorted(made, key=lambda u: u[1])

    def scenario_reads(self, small: bool) -> None:
        """Get by id and `eq` lookups. At scale, three cells interleave in every round: the
        first bridge (its ~2,600 users), the second bridge (--users) and the reference."""
        n = self.plan.reads
        rng = self.rng
        ref_pop = self.pop["scim2-server"]
        if small:
            cells = [
                ("bridge", self.bridge, self.pop["bridge"]),
                ("scim2-server", self.ref, ref_pop),
            ]
            self.rep.section(
                f"2./3. get by id, filters ({len(ref_pop.users):,} users on both servers)"
            )
        else:
            n_small, n_big = len(self.small_pop.users), len(self.pop["bridge"].users)
            cells = [
                (f"bridge@{n_small:,}", self.small, self.small_pop),
                (f"bridge@{n_big:,}", self.bridge, self.pop["bridge"]),
                (f"s2@{len(ref_pop.users):,}", self.ref, ref_pop),
            ]
            self.rep.section(
                f"8. lookups: the bridge at {n_small:,} and at {n_big:,} users (two servers, "
                f"two databases, measured in the same rounds), scim2-server at "
                f"{len(ref_pop.users):,}"
            )
        Make = Callable[[Population], list[Item]]

        def pick(pop: Population) -> list[tuple[str, str, str]]:
            return [rng.choice(pop.users) for _ in range(n)]

        def get_by_id(pop: Population) -> list[Item]:
            return [Item("GET", f"/Users/{u[0]}", check=status_check(200)) for u in pick(pop)]

        def flt(attr: str, hit: bool) -> Make:
            def make(pop: Population) -> list[Item]:
                items = []
                for k, u in enumerate(pick(pop)):
                    value = (u[1] if attr == "userName" else u[2]) if hit else f"nobody-{k}-{u[2]}"
                    items.append(
                        Item(
                            "GET",
                            "/Users",
                            params={"filter": f'{attr} eq "{value}"'},
                            check=list_check(1, u[0]) if hit else list_check(0),
                        )
                    )
                return items

            return make

        scenarios: list[tuple[str, Make]] = [("GET /Users/{id}", get_by_id)] if small else []
        # GET by id also through the HTTP floor (floor_app.py), on the bridge's users: one
        # indexed SELECT through the bare driver behind the same gunicorn, nothing else; and
        # through the stack floor, the same on Flask and SQLAlchemy Core
        floors = (
            [
                self.h.start_floor(self.bridge),
                self.h.start_floor(self.bridge, "stack floor", "stack_app"),
            ]
            if small
            else []
        )
        scenarios += [
            ("userName eq (hit)", flt("userName", True)),
            ("userName eq (miss)", flt("userName", False)),
            ("externalId eq (hit)", flt("externalId", True)),
            ("externalId eq (miss)", flt("externalId", False)),
        ]
        results: dict[str, dict[str, Result]] = {}
        for label, make in scenarios:
            these = cells
            if floors and label == "GET /Users/{id}":
                these = [*((f.name, f, self.pop["bridge"]) for f in floors), *cells]
            res = {name: Result() for name, _, _ in these}
            for _, server, pop in these:  # warm-up, unmeasured
                load(server, make(pop)[: 4 * CLIENTS])
            for _ in range(self.plan.rounds):
                for name, server, pop in these:
                    res[name].merge(load(server, make(pop)))
            for name, _, _ in these:
                self.rep.result(label, name, res[name])
            results[label] = res
            a, b = res[cells[-2][0]], res[cells[-1][0]]  # the (largest) bridge, the reference
            for name, what in FLOORS:
                if name in res:
                    f = res[name]
                    self.rep.line(
                        f"  ({name}, {what}: {f.rps / b.rps:.2f}x scim2-server, the most a GET "
                        f"by id served so reaches here; the bridge {a.rps / f.rps:.2f}x it; its "
                        f"p99 {f.pct(99) / f.pct(50):.2f}x its p50, the bridge's "
                        f"{a.pct(99) / a.pct(50):.2f}x)"
                    )
            tr, _ = self.rep.ratio(label, a, b)
            if small and "miss" not in label:
                self.rep.target(f"{label} >= 1.5x scim2-server (req/s)", tr >= 1.5, f"{tr:.2f}x")
            self.rep.target(
                f"{label}: {cells[-2][0]} p99 <= 3x p50",
                a.pct(99) <= 3 * a.pct(50),
                f"p50 {a.pct(50):.2f} ms, p99 {a.pct(99):.2f} ms",
            )
        big = cells[-2][0]
        for attr in ("userName", "externalId"):
            hit, miss = results[f"{attr} eq (hit)"][big], results[f"{attr} eq (miss)"][big]
            self.rep.target(
                f"{attr} eq: a miss costs no more than a hit ({big} p50)",
                miss.pct(50) <= hit.pct(50) * 1.10,
                f"miss {miss.pct(50):.2f} ms vs hit {hit.pct(50):.2f} ms",
            )
        for floor in floors:
            self.h.stop(floor)
        if not small:
            small_name = cells[0][0]
            for label in ("userName eq (hit)", "externalId eq (hit)"):
                lo, hi = results[label][small_name].pct(50), results[label][big].pct(50)
                self.rep.target(
                    f"{label} p50: {big} within 1.25x of {small_name}",
                    hi <= 1.25 * lo,
                    f"{hi:.2f} ms vs {lo:.2f} ms = {hi / lo:.2f}x",
                )
            self.h.stop(self.small)

    def scenario_walk(self) -> None:
        self.rep.section("4. full paginated walk, count=100 (one client, sequential pages)")
        times: dict[str, list[float]] = {s.name: [] for s in self.servers}
        bad: list[str] = []
        for _ in range(self.plan.rounds):
            for s in self.servers:
                for _ in range(self.plan.walks):
                    c = s.conn()
                    t0 = time.perf_counter()
                    seen: set[str] = set()
                    start, total, pages = 1, None, 0
                    while total is None or start <= total:
                        doc = c.json("GET", "/Users", startIndex=start, count=100)
                        total = doc["totalResults"]
                        seen.update(r["id"] for r in doc.get("Resources", []))
                        start += 100
                        pages += 1
                    times[s.name].append(time.perf_counter() - t0)
                    c.close()
                    if len(seen) != len(self.pop[s.name].users) or total != len(seen):
                        bad.append(f"{s.name}: walk saw {len(seen)} ids, totalResults {total}")
        for s in self.servers:
            ts = sorted(times[s.name])
            n = len(self.pop[s.name].users)
            self.rep.line(
                f"{'walk ' + str(n) + ' users':<44} {s.name:<13} {len(ts):>6} "
                f"{'':>8} median {ts[len(ts) // 2] * 1000:>8.1f} ms/walk "
                f"(min {ts[0] * 1000:.1f}, max {ts[-1] * 1000:.1f})"
            )
        a = sorted(times["bridge"])[len(times["bridge"]) // 2]
        b = sorted(times["scim2-server"])[len(times["scim2-server"]) // 2]
        self.rep.line(f"{'walk time':<44} {'ratio b/s2':<13} {'':>6} {a / b:>7.2f}x")
        self.rep.target("full walk time <= 0.5x scim2-server", a / b <= 0.5, f"{a / b:.2f}x")
        self.rep.errors += bad

    def grow(self) -> None:
        """A second bridge on its own database gets --users users by SQL; the first keeps its
        ~2,600 so lookups at both sizes run in the same rounds. The reference grows by HTTP."""
        p = self.plan
        self.small = self.bridge
        self.small_pop = Population(list(self.pop["bridge"].users))
        want = max(p.bridge_users, max(p.sizes_bridge) + 200)
        big = self.h.start_bridge("_big")
        t0 = time.perf_counter()
        self.bulk_users(big, "bulk", want)
        log(
            f"bridge: {want} users by SQL into a second database in {time.perf_counter() - t0:.1f}s"
        )
        self.bridge = big
        self.servers = [big, self.ref]
        short = max(p.sizes_ref) + 200 - len(self.pop["scim2-server"].users)
        if short > 0:
            self.ref_users("bulk", short)

    def scenario_deep_page(self) -> None:
        n = len(self.pop["bridge"].users)
        self.rep.section(
            f"8. first page vs a page near the end (count=100, {n:,} users on bridge; "
            "bridge rounds interleave first/last)"
        )

        def items(total: int, start: int, count: int) -> list[Item]:
            return [
                Item(
                    "GET",
                    "/Users",
                    params={"startIndex": start, "count": 100},
                    check=list_check(total),
                )
                for _ in range(count)
            ]

        res: dict[str, Result] = {}
        for s in self.servers:
            total = len(self.pop[s.name].users)
            pages = (("first page", 1), ("last page", total - 99))
            # the reference lists slowly (it walks every resource): a few requests, one round
            rounds, count = (
                (self.plan.rounds, max(20, self.plan.reads // 10)) if s is self.bridge else (1, 8)
            )
            for label, start in pages:
                res[f"{s.name} {label}"] = Result()
                load(s, items(total, start, 2 * CLIENTS))  # warm-up, unmeasured
            for _ in range(rounds):
                for label, start in pages:
                    res[f"{s.name} {label}"].merge(load(s, items(total, start, count)))
            for label, start in pages:
                self.rep.result(
                    f"GET /Users startIndex={start:,} ({total:,})", s.name, res[f"{s.name} {label}"]
                )
        a, b = res["bridge last page"].pct(50), res["bridge first page"].pct(50)
        self.rep.target(
            f"page near the end of a {n:,}-user walk within 2x of the first page (bridge p50)",
            a <= 2 * b,
            f"{a:.1f} ms vs {b:.1f} ms = {a / b:.2f}x",
        )

    def make_group(self, s: Server, size: int) -> str:
        """A group of `size` members (the first users); PATCH add in chunks of 1000 (timed)."""
        c = s.conn()
        doc = c.json(
            "POST",
            "/Groups",
            {"schemas": [GROUP_SCHEMA], "displayName": f"bench-{size}"},
            excludedAttributes="members",
        )
        gid = doc["id"]
        users = [u[0] for u in self.pop[s.name].users[:size]]
        if s is self.bridge and size > 1000:
            t0 = time.perf_counter()
            bulk_members(self.h, s, gid, users)
            log(f"bridge: group of {size} by SQL COPY in {time.perf_counter() - t0:.1f}s")
        else:
            t0 = time.perf_counter()
            chunks = 0
            for i in range(0, size, 1000):
                chunk = users[i : i + 1000]
                t1 = time.perf_counter()
                c.json(
                    "PATCH",
                    f"/Groups/{gid}",
                    {
                        "schemas": [PATCH_SCHEMA],
                        "Operations": [
                            {"op": "add", "path": "members", "value": [{"value": u} for u in chunk]}
                        ],
                    },
                    excludedAttributes="members",
                )
                chunks += 1
                if len(chunk) == 1000:
                    self.chunk_times.setdefault(s.name, []).append(time.perf_counter() - t1)
            log(
                f"{s.name}: group of {size} by {chunks} PATCH add in "
                f"{time.perf_counter() - t0:.1f}s"
            )
        c.close()
        return gid

    def scenario_groups(self) -> None:
        p = self.plan
        self.rep.section("5./6. groups: build, PATCH one member, GET excludedAttributes=members")
        self.chunk_times: dict[str, list[float]] = {}
        self.groups: dict[str, dict[int, str]] = {s.name: {} for s in self.servers}
        for size in sorted(set(p.sizes_bridge) | set(p.sizes_ref)):
            for s in self.servers:
                if size in (p.sizes_bridge if s is self.bridge else p.sizes_ref):
                    self.groups[s.name][size] = self.make_group(s, size)
        for name, ts in self.chunk_times.items():
            self.rep.line(
                f"{'PATCH add 1,000 members (one request)':<44} {name:<13} {len(ts):>6} "
                f"{'':>8} {sorted(ts)[len(ts) // 2] * 1000:>8.1f} ms median"
            )
        lo, hi = min(p.sizes_bridge), max(p.sizes_bridge)

        def patches(s: Server, size: int, params: Any) -> Callable[[int], list[Item]]:
            gid = self.groups[s.name][size]
            n = p.patches[size] if s is self.bridge else ref_cap(p.patches[size], size)
            users = self.pop[s.name].users[-8:]  # in no group: add one, remove it, next, ...

            def make(r: int) -> list[Item]:
                items = []
                for i in range(n // 2):
                    u = users[i % len(users)][0]
                    add = {"op": "add", "path": "members", "value": [{"value": u}]}
                    remove = {"op": "remove", "path": f'members[value eq "{u}"]'}
                    for op in (add, remove):
                        body = {"schemas": [PATCH_SCHEMA], "Operations": [op]}
                        items.append(
                            Item("PATCH", f"/Groups/{gid}", body, params, status_check(200, 204))
                        )
                return items

            return make

        def heads(s: Server, size: int) -> Callable[[int], list[Item]]:
            gid = self.groups[s.name][size]
            n = p.reads if s is self.bridge else ref_cap(p.reads, size)

            def check(status: int, data: bytes) -> str | None:
                if status != 200:
                    return f"status {status}"
                return "members returned" if b'"members"' in data else None

            params = {"excludedAttributes": "members"}
            return lambda r: [Item("GET", f"/Groups/{gid}", None, params, check) for _ in range(n)]

        def cells(
            build: Callable[[Server, int], Callable[[int], list[Item]]], ref: bool
        ) -> list[tuple[Server, int, Callable[[int], list[Item]]]]:
            out = []
            for size in p.sizes_bridge:
                out.append((self.bridge, size, build(self.bridge, size)))
                if ref and size in p.sizes_ref:
                    out.append((self.ref, size, build(self.ref, size)))
            return out

        for variant, params, ref in (
            ("as IdPs send it", None, True),
            ("?excludedAttributes=members, bridge only", {"excludedAttributes": "members"}, False),
        ):
            self.rep.line(
                f"-- PATCH add then remove one member (one client, sequential; sizes interleaved "
                f"in each round), {variant}"
            )
            res = self.interleaved(
                cells(lambda s, size, params=params: patches(s, size, params), ref),
                clients=1,
                slices=2,
            )
            for size in p.sizes_bridge:
                label = f"PATCH 1 member, group of {size:,}"
                a = res[("bridge", size)]
                self.rep.result(label, "bridge", a)
                if ("scim2-server", size) in res:
                    self.rep.result(label, "scim2-server", res[("scim2-server", size)])
                    self.rep.ratio(label, a, res[("scim2-server", size)])
            ratio = res[("bridge", hi)].pct(50) / res[("bridge", lo)].pct(50)
            self.rep.target(
                f"PATCH one member ({variant.split(',')[0]}) p50 at {hi:,} within 2x of {lo:,}",
                ratio <= 2.0,
                f"{res[('bridge', hi)].pct(50):.1f} ms vs {res[('bridge', lo)].pct(50):.1f} ms "
                f"= {ratio:.2f}x",
            )
        self.rep.line("-- GET /Groups/{id}?excludedAttributes=members (sizes interleaved)")
        res = self.interleaved(cells(heads, True), warm=True, slices=5)
        for size in p.sizes_bridge:
            label = f"GET group excl. members, {size:,}"
            a = res[("bridge", size)]
            self.rep.result(label, "bridge", a)
            if ("scim2-server", size) in res:
                self.rep.result(label, "scim2-server", res[("scim2-server", size)])
                self.rep.ratio(label, a, res[("scim2-server", size)])
            self.rep.target(
                f"{label}: bridge p99 <= 3x p50",
                a.pct(99) <= 3 * a.pct(50),
                f"p50 {a.pct(50):.2f} ms, p99 {a.pct(99):.2f} ms",
            )
        big, small = res[("bridge", hi)].pct(50), res[("bridge", lo)].pct(50)
        self.rep.target(
            f"group read excluding members: same cost at {hi:,} as at {lo:,} (p50 within 1.25x)",
            big <= 1.25 * small,
            f"{big:.2f} ms vs {small:.2f} ms = {big / small:.2f}x",
        )

    def interleaved(
        self,
        cells: list[tuple[Server, int, Callable[[int], list[Item]]]],
        clients: int = CLIENTS,
        warm: bool = False,
        slices: int = 1,
    ) -> dict[tuple[str, int], Result]:
        """Each round runs every (server, size) cell once, in order: drift hits them alike."""
        res = {(s.name, size): Result() for s, size, _ in cells}
        if warm:
            for s, _, make in cells:
                load(s, make(0)[: 4 * clients], clients)
        for r in range(self.plan.rounds):
            lists = [make(r) for _, _, make in cells]
            # each round in `slices` parts, so the cells alternate every second or so
            for j in range(slices):
                for (s, size, _), items in zip(cells, lists, strict=True):
                    lo, hi = (len(items) * j // slices) // 2 * 2, (len(items) * (j + 1) // slices)
                    hi = len(items) if j == slices - 1 else hi // 2 * 2
                    if hi > lo:
                        res[(s.name, size)].merge(load(s, items[lo:hi], clients))
        return res

    def scenario_full_group(self) -> None:
        p = self.plan
        big = max(p.sizes_bridge)
        self.rep.section(f"7. GET a group in full (one client; {p.full_reads} reads per round)")
        master = self.bridge.proc.pid if self.bridge.proc else 0
        before = rss_of_workers(master)
        times: dict[tuple[str, int], list[float]] = {}
        sizes_b: dict[tuple[str, int], int] = {}
        peak_rss: dict[int, int] = {}
        targets = [(self.bridge, big)]
        common = max(set(p.sizes_bridge) & set(p.sizes_ref))
        targets += [(self.bridge, common), (self.ref, common)]
        ref_rss = [rss_of(self.ref.proc.pid)] if self.ref.proc else []
        for _ in range(p.rounds):
            for s, size in targets:
                gid = self.groups[s.name][size]
                c = s.conn()
                for _ in range(p.full_reads):
                    t0 = time.perf_counter()
                    status, data = c.request("GET", f"/Groups/{gid}")
                    times.setdefault((s.name, size), []).append(time.perf_counter() - t0)
                    sizes_b[(s.name, size)] = len(data)
                    if status != 200:
                        self.rep.errors.append(f"{s.name} GET group {size}: status {status}")
                    else:
                        got = len(json.loads(data).get("members", []))
                        if got != size:
                            self.rep.errors.append(f"{s.name} GET group {size}: {got} members")
                    if s is self.bridge:
                        for pid, (rss, _) in rss_of_workers(master).items():
                            peak_rss[pid] = max(peak_rss.get(pid, 0), rss)
                    elif self.ref.proc:
                        ref_rss.append(rss_of(self.ref.proc.pid))
                c.close()
        after = rss_of_workers(master)
        for (name, size), ts in times.items():
            ts = sorted(ts)
            self.rep.line(
                f"{'GET group in full, ' + format(size, ',') + ' members':<44} {name:<13} "
                f"{len(ts):>6} {'':>8} {ts[len(ts) // 2] * 1000:>8.1f} ms median "
                f"(max {ts[-1] * 1000:.1f}; {sizes_b[(name, size)] / 1e6:.1f} MB)"
            )
        a = sorted(times[("bridge", common)])[len(times[("bridge", common)]) // 2]
        b = sorted(times[("scim2-server", common)])[len(times[("scim2-server", common)]) // 2]
        self.rep.line(
            f"{'GET group in full, ' + format(common, ','):<44} {'ratio b/s2':<13} "
            f"{'':>6} time {a / b:.2f}x"
        )
        grew = 0
        for pid in sorted(set(before) | set(after)):
            rb, hb = before.get(pid, (0, 0))
            ra, ha = after.get(pid, (0, 0))
            grew = max(grew, ra - rb)
            self.rep.line(
                f"  gunicorn worker {pid}: VmRSS before {rb / 1024:.1f} MB, peak seen "
                f"{peak_rss.get(pid, 0) / 1024:.1f} MB, after {ra / 1024:.1f} MB; "
                f"VmHWM {hb / 1024:.1f} -> {ha / 1024:.1f} MB"
            )
        if ref_rss:
            self.rep.line(
                f"  scim2-server: VmRSS {ref_rss[0] / 1024:.1f} MB before, "
                f"{max(ref_rss) / 1024:.1f} MB peak seen"
            )
        self.rep.target(
            f"worker memory flat while a {big:,}-member group is read in full "
            f"(RSS growth <= 20 MB per worker)",
            grew <= 20 * 1024,
            f"max growth {grew / 1024:.1f} MB",
        )

    def summary(self, elapsed: float) -> None:
        self.rep.section("targets")
        for text, ok, measured in self.rep.targets:
            self.rep.line(f"{'PASS' if ok else 'MISS'}  {text}  [{measured}]")
        misses = sum(1 for _, ok, _ in self.rep.targets if not ok)
        self.rep.line(f"{len(self.rep.targets) - misses} pass, {misses} miss")
        server_errors = []
        for log_path in sorted(self.h.tmp.glob("gunicorn*.log")):
            for line in log_path.read_text(errors="replace").splitlines():
                if '"status":5' in line or "Traceback" in line or '"level": "ERROR"' in line:
                    server_errors.append(line[:300])
        self.rep.section("errors")
        for e in self.rep.errors + server_errors[:20]:
            self.rep.line(e)
        if not self.rep.errors and not server_errors:
            self.rep.line("none (every response had the expected status and content)")
        self.rep.line(f"elapsed {elapsed:.0f} s")


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--users", type=int, default=0, help="bridge population for the scaling checks"
    )
    parser.add_argument("--quick", action="store_true", help="a ~2 minute run")
    parser.add_argument(
        "--sqlite", action="store_true", help="the bridge on a SQLite file (sections 1-4 only)"
    )
    parser.add_argument(
        "--app-dir",
        default=str(ROOT),
        help="the checkout whose bridge to serve (default: this one), e.g. a copy with a fix",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        return Bench(args).run()
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
