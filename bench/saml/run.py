"""SAML ACS benchmark: IdP-initiated logins through gunicorn + PostgreSQL, against the floor of
python3-saml validating the same responses alone (no HTTP, no database).

Run:  .venv/bin/python bench/saml/run.py [--logins N] [--rounds R] [--quick] [--profile]

Fresh PostgreSQL database (dropped at exit); account "bench" with a test IdP (tests/saml_idp)
registered IdP-initiated, JIT on. Every response is signed ahead of time (distinct assertion IDs,
valid 30 minutes). Two gunicorn servers run from the repository side by side (WEB_CONCURRENCY=1
and =2, default GUNICORN_THREADS), each driven in turn by 4 keep-alive clients, in interleaved
rounds with the floors, because this machine's speed drifts (ratios are taken within a round,
then the median over rounds). Two workloads:

  first logins   distinct new users (user<i>@example.com), each created by JIT
  returning      users that exist already (made by first logins one at a time beforehand) log in
                 again with fresh assertions: the same ACS without the user creation

The HTTP floor (floor_app.py: python3-saml alone behind the same gunicorn, 1 and 2 workers) gets
the returning rounds' forms right after each bridge server: the most any application served this
way reaches on this machine, against the same targets. Returning-user rounds run first;
first-login rounds last, since a request the clients gave up on may keep retrying on the server.
When a target is missed (or with --profile) the 1-worker server is sampled with py-spy, and one
login at a time is profiled with cProfile in a one-process app (werkzeug test client). Loopback
only. See bench/saml/README.md.
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import datetime as dt
import html
import http.client
import json
import math
import os
import pstats
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
SLUG = "bench"
ACS_PATH = f"/saml/{SLUG}/acs"
CLIENTS = 4
# Each login comes from its own person's browser, so by default each login opens its own
# connection (as a browser posting the IdP's form to the ACS does). --keep-alive keeps one
# connection per client instead: gunicorn's asyncio worker keeps a connection it accepted, so
# with 2 workers and 4 such connections the split between workers is luck (often 4-0 or 3-1).
KEEP_ALIVE = False
VALID = dt.timedelta(minutes=30)  # every pre-signed response stays valid for the whole run
TICK = os.sysconf("SC_CLK_TCK")
SPY_RATE = 200
TARGET_FLOOR, TARGET_SCALE, TARGET_TAIL = 0.7, 1.8, 2.0
METRICS_TOKEN = secrets.token_hex(16)
LOCK_WAIT = "bridge_sqlite_lock_wait_seconds"
CLI_WITH_ADAPTERS = (
    "import sys; from bridge import cli; "
    "getattr(cli, 'add_adapter_commands', lambda: None)(); "
    "sys.argv[0] = 'bridge'; sys.exit(cli.main())"
)
IDPS_ADD = (
    "import sys; from pathlib import Path; from bridge import idps; "
    "from bridge.settings import Settings; from bridge.store import Store; "
    "s = Store(Settings.from_env().database_url); "
    f"idps.add(s, {SLUG!r}, Path(sys.argv[1]).read_text(), name='test', "
    "allow_idp_initiated=True, actor='bench'); s.dispose()"
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


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile, in milliseconds (values in seconds)."""
    if not values:
        return float("nan")
    xs = sorted(values)
    return xs[min(len(xs), max(1, math.ceil(q / 100 * len(xs)))) - 1] * 1000


def median(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else float("nan")


# ------------------------------------------------------------------ python3-saml floor


def saml_settings(sp: dict[str, str], idp: dict[str, str]) -> Any:
    """OneLogin_Saml2_Settings with the switches saml/sso.py `_settings` sets (a copy, so the
    stock-library child never imports saml.sso, which patches the library)."""
    from onelogin.saml2.constants import OneLogin_Saml2_Constants as C
    from onelogin.saml2.settings import OneLogin_Saml2_Settings

    base = sp["base"]
    data = {
        "strict": True,
        "debug": False,
        "sp": {
            "entityId": f"{base}/saml/{SLUG}/metadata",
            "assertionConsumerService": {"url": base + ACS_PATH, "binding": C.BINDING_HTTP_POST},
            "singleLogoutService": {
                "url": f"{base}/saml/{SLUG}/sls",
                "binding": C.BINDING_HTTP_REDIRECT,
            },
            "NameIDFormat": C.NAMEID_UNSPECIFIED,
            "x509cert": sp["cert_b64"],
            "privateKey": sp["key_pem"],
        },
        "security": {
            "authnRequestsSigned": True,
            "logoutRequestSigned": True,
            "logoutResponseSigned": True,
            "wantAssertionsSigned": True,
            "wantMessagesSigned": False,
            "wantNameId": True,
            "wantAttributeStatement": False,
            "requestedAuthnContext": False,
            "allowRepeatAttributeName": True,
            "rejectDeprecatedAlgorithm": True,
            "signatureAlgorithm": C.RSA_SHA256,
            "digestAlgorithm": C.SHA256,
            "wantNameIdEncrypted": False,
            "wantAssertionsEncrypted": False,
        },
        "idp": {
            "entityId": idp["entity_id"],
            "singleSignOnService": {"url": idp["sso_url"], "binding": C.BINDING_HTTP_REDIRECT},
            "singleLogoutService": {"url": idp["slo_url"], "binding": C.BINDING_HTTP_REDIRECT},
            "x509certMulti": {"signing": [idp["cert_b64"]]},
        },
    }
    return OneLogin_Saml2_Settings(data, sp_validation_only=False)


def measure_floor(settings: Any, base: str, forms: list[dict[str, str]]) -> dict[str, Any]:
    """Validate each response once, one thread: Response() + is_valid + get_nameid +
    get_attributes, with the request data the app would pass."""
    from onelogin.saml2.response import OneLogin_Saml2_Response

    host = base.split("://", 1)[1]

    def one(form: dict[str, str]) -> None:
        request = {
            "https": "off",
            "http_host": host,
            "script_name": ACS_PATH,
            "get_data": {},
            "post_data": form,
        }
        response = OneLogin_Saml2_Response(settings, form["SAMLResponse"])
        response.is_valid(request, raise_exceptions=True)
        if not response.get_nameid():
            raise AssertionError("no NameID")
        response.get_attributes()

    for form in forms[:2]:  # warm: imports, and the patched library's per-thread schema cache
        one(form)
    lats = []
    cpu0, t0 = time.process_time(), time.perf_counter()
    for form in forms:
        s = time.perf_counter()
        one(form)
        lats.append(time.perf_counter() - s)
    wall = time.perf_counter() - t0
    return {
        "n": len(forms),
        "rate": len(forms) / wall,
        "ms": wall / len(forms) * 1000,
        "cpu_ms": (time.process_time() - cpu0) / len(forms) * 1000,
    }


def floor_child(path: str) -> None:
    """`--floor-child FILE`: the stock-library floor, in a process that never imports saml.sso."""
    spec = json.loads(Path(path).read_text())
    from onelogin.saml2 import xml_utils

    settings = saml_settings(spec["sp"], spec["idp"])
    result = measure_floor(settings, spec["sp"]["base"], spec["forms"])
    result["stock"] = (
        "saml.sso" not in sys.modules
        and xml_utils.OneLogin_Saml2_XML.validate_xml.__module__ == "onelogin.saml2.xml_utils"
    )
    print(json.dumps(result))


# ------------------------------------------------------------------ harness


class Harness:
    """The database and the servers of this run; all cleanup by the ids it started."""

    def __init__(self, sqlite: bool = False) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="bench_saml_"))
        self.sqlite = sqlite
        self.db = f"bench_saml_{os.getpid()}"
        self.db_url = (
            f"sqlite:///{self.tmp / self.db}.db"
            if sqlite
            else f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.db}"
        )
        self.secret = secrets.token_hex(32)  # one key for the CLI and every worker
        self.procs: list[subprocess.Popen[bytes]] = []
        self.db_created = False
        self.notes: list[str] = []
        (self.tmp / "policies").mkdir()
        atexit.register(self.cleanup)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        signal.signal(signal.SIGINT, lambda *_: sys.exit(130))

    def env(self, base: str = "http://127.0.0.1:8000", **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("GUNICORN_THREADS", "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS"):
            env.pop(name, None)  # the defaults are what is measured
        env.update(
            BRIDGE_DATABASE_URL=self.db_url,
            BRIDGE_BASE_URL=base,
            BRIDGE_SECRET_KEY=self.secret,
            BRIDGE_LOG_LEVEL="WARNING",
            BRIDGE_INSTANCE_PATH=str(self.tmp / "instance"),
            BRIDGE_POLICY_DIR=str(self.tmp / "policies"),
            BRIDGE_METRICS_TOKEN=METRICS_TOKEN,  # the lock waits are read from /metrics
            PYTHONPATH=str(ROOT),
        )
        env.update(extra)
        return env

    def pg(self, dbname: str = "test") -> Any:
        import psycopg

        return psycopg.connect(dbname=dbname, autocommit=True, **PG)  # type: ignore[arg-type]

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=120
        )

    def cli(self, *args: str) -> str:
        out = self._run([tool("idbridge"), *args])
        if out.returncode != 0 and "No such command" in out.stderr:
            # the adapters' commands registered by hand, if the entry point does not
            out = self._run([sys.executable, "-c", CLI_WITH_ADAPTERS, *args])
        if out.returncode != 0:
            raise RuntimeError(f"bridge {' '.join(args)} failed: {out.stderr}")
        return out.stdout

    def setup(self, metadata_xml: str) -> None:
        if not self.sqlite:
            with self.pg() as conn:
                conn.execute(f'CREATE DATABASE "{self.db}"')
            self.db_created = True
        meta = self.tmp / "idp-metadata.xml"
        meta.write_text(metadata_xml)
        self.cli("db", "upgrade")
        self.cli("accounts", "create", SLUG)
        self.cli("environments", "add", SLUG, "production", "--default")
        self.cli("environments", "add", SLUG, "staging")
        try:
            self.cli(
                "idps", "add", SLUG, "--metadata", str(meta), "--name", "test",
                "--allow-idp-initiated",
            )  # fmt: skip
        except RuntimeError as exc:
            if "No such command" not in str(exc):
                raise
            self.notes.append(
                "`idbridge idps add` is missing from this checkout's CLI: the IdP was registered "
                "with bridge.idps.add() instead (same arguments)"
            )
            out = self._run([sys.executable, "-c", IDPS_ADD, str(meta)])
            if out.returncode != 0:
                raise RuntimeError(f"bridge.idps.add failed: {out.stderr}") from None

    def start(self, workers: int, floor_of: Server | None = None, spec: Any = None) -> Server:
        """gunicorn with the bridge; with `floor_of`, the HTTP floor (floor_app.py) in its
        place, validating the responses signed for that server (`spec`: Signer.spec)."""
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        app, extra = "bridge:create_app()", {}
        if floor_of is not None:
            path = self.tmp / f"floor-{workers}w.json"
            path.write_text(json.dumps(spec))
            app = "floor_app:app"
            extra = {
                "BENCH_FLOOR_SPEC": str(path),
                "PYTHONPATH": f"{ROOT}{os.pathsep}{Path(__file__).resolve().parent}",
            }
        tag = "floor-" if floor_of is not None else ""
        logf = open(self.tmp / f"gunicorn-{tag}{workers}w.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [tool("gunicorn"), "--config", "gunicorn.conf.py", app],
            cwd=ROOT,
            env=self.env(
                base,
                BIND=f"127.0.0.1:{port}",
                WEB_CONCURRENCY=str(workers),
                GUNICORN_CMD_ARGS="--no-control-socket",  # not the shared ~/.gunicorn one
                **extra,
            ),
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        name = ("HTTP floor, " if floor_of else "") + f"{workers} worker" + "s" * (workers > 1)
        server = Server(name, workers, port, proc, self.db)
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {proc.returncode}: see {logf.name}")
            try:
                # the metadata route also makes the account's SP key (once, before any login)
                status, _ = get(port, "/" if floor_of else f"/saml/{SLUG}/metadata")
                if status == 200 and len(server.workers()) == workers:
                    return server
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not start")
            time.sleep(0.2)

    def deadlocks(self) -> int:
        if self.sqlite:
            return 0
        with self.pg() as conn:
            row = conn.execute(
                "SELECT deadlocks FROM pg_stat_database WHERE datname = %s", (self.db,)
            ).fetchone()
        return int(row[0]) if row else 0

    def settle(self) -> None:
        """PostgreSQL: the planner's statistics of the users just made, as autovacuum takes them
        within a minute of a load (its naptime). Read at once, tables analyzed while they were
        empty plan a returning login's lookup as scans: what a deployment sees only in the
        minute after a first load, not its steady state."""
        if not self.sqlite:
            with self.pg(self.db) as conn:
                conn.execute("ANALYZE")
            log("ANALYZE after the returning users' first logins, as autovacuum does in a minute")

    def quiesce(self, limit: float = 60.0) -> float:
        """Wait until none of our transactions has run for a second and a half (requests the
        clients gave up on may still be retrying on the server)."""
        t0 = time.monotonic()
        quiet_since = None
        if self.sqlite:  # no server to ask: the clients' budget plus a pause
            time.sleep(1.5)
            return time.monotonic() - t0
        with self.pg() as conn:
            while time.monotonic() - t0 < limit:
                busy = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state <> 'idle'"
                    " AND pid <> pg_backend_pid()",
                    (self.db,),
                ).fetchone()
                now = time.monotonic()
                if busy and busy[0]:
                    quiet_since = None
                elif quiet_since is None:
                    quiet_since = now
                elif now - quiet_since >= 1.5:
                    break
                time.sleep(0.1)
        return time.monotonic() - t0

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
        if self.db_created:
            try:
                with self.pg() as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
            except Exception as exc:
                log(f"could not drop database {self.db}: {exc}")
            self.db_created = False
        shutil.rmtree(self.tmp, ignore_errors=True)


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def proc_ticks(pid: int | str) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def machine_ticks() -> int:
    """Busy CPU ticks of the whole machine (every process, ours or not)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq + steal


def children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == parent:
                found.append(int(entry.name))
    return sorted(found)


def backends(db: str) -> dict[int, int]:
    """CPU ticks of the PostgreSQL backends serving `db` (not other sessions' databases)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if cmd.startswith("postgres:") and f" {db} " in cmd:
                found[int(entry.name)] = proc_ticks(entry.name)
    return found


@dataclass
class Server:
    name: str
    count: int
    port: int
    proc: subprocess.Popen[bytes]
    db: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        return children(self.proc.pid)

    def lock_waits(self) -> float | None:
        """Seconds the workers' writers have waited for SQLite's write lock so far, summed over
        the workers (bridge.metrics); None where the checkout does not export it."""
        status, body = get(self.port, "/metrics", {"Authorization": f"Bearer {METRICS_TOKEN}"})
        for line in body.decode().splitlines() if status == 200 else []:
            name, _, value = line.partition(" ")
            if name == f"{LOCK_WAIT}_sum":
                return float(value)
        return None

    def cpu_snapshot(self) -> dict[str, Any]:
        return {
            "client": time.process_time(),
            "server": sum(proc_ticks(p) for p in [self.proc.pid, *self.workers()]),
            "workers": {p: proc_ticks(p) for p in self.workers()},
            "pg": backends(self.db),
            "machine": machine_ticks(),
        }

    @staticmethod
    def cpu_delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
        pg = sum(t - a["pg"].get(pid, 0) for pid, t in b["pg"].items())
        out = {
            "client": b["client"] - a["client"],
            "server": (b["server"] - a["server"]) / TICK,
            "postgres": pg / TICK,
        }
        machine = (b["machine"] - a["machine"]) / TICK
        out["others"] = max(0.0, machine - sum(out.values()))  # other sessions on this machine
        work = sorted((t - a["workers"].get(p, 0) for p, t in b["workers"].items()), reverse=True)
        out["busiest_worker"] = work[0] / TICK if work else 0.0
        return out


# ------------------------------------------------------------------ load


@dataclass
class Segment:
    """One timed run of the ACS: what the clients saw and what every process spent."""

    ok: int = 0
    sent: int = 0
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)
    done_at: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)  # seconds of CPU per kind of process
    deadlocks: int = 0
    lock_wait: float | None = None  # SQLite: seconds the server's writers waited for the lock

    @property
    def rate(self) -> float:
        return self.ok / self.wall if self.wall else 0.0

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


def describe_error(status: int, location: str, body: bytes) -> str:
    text = body.decode(errors="replace")
    title = re.search(r"<title>(.*?)</title>", text, re.S)
    ref = re.search(r"([a-z_]+) / [0-9a-f-]{6,}", text)
    if title or ref:
        what = html.unescape(title.group(1)) if title else ""
        return f"HTTP {status}: {what} [{ref.group(1) if ref else '?'}]"
    flat = re.sub(r"\s+", " ", text)
    return f"HTTP {status} {location} {flat[:120]}"


def drive(
    server: Server,
    bodies: list[bytes],
    *,
    clients: int = CLIENTS,
    budget: float | None = None,
    timeout: float = 120.0,
) -> Segment:
    """POST bodies to the ACS with `clients` threads, each login on a new connection (or, with
    KEEP_ALIVE, each thread on its own keep-alive connection); a login is good when it answers
    302 to /session. `budget` (seconds): no new request after it."""
    seg = Segment()
    lock = threading.Lock()
    index = iter(range(len(bodies)))
    barrier = threading.Barrier(clients + 1)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    start = [0.0]

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
        lats, done, errs, sent = [], [], Counter[str](), 0
        barrier.wait()
        while True:
            with lock:
                i = next(index, None)
            if i is None or (budget is not None and time.perf_counter() - start[0] > budget):
                break
            sent += 1
            t0 = time.perf_counter()
            try:
                conn.request("POST", ACS_PATH, body=bodies[i], headers=headers)
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                errs[f"client: {type(exc).__name__}: {exc}"] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
                continue
            t1 = time.perf_counter()
            location = resp.getheader("Location") or ""
            if resp.status == 302 and location.split("://", 1)[-1].endswith("/session"):
                lats.append(t1 - t0)
                done.append(t1)
            else:
                errs[describe_error(resp.status, location, body)] += 1
            if resp.will_close or not KEEP_ALIVE:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
        conn.close()
        with lock:
            seg.latencies += lats
            seg.done_at += done
            seg.errors.update(errs)
            seg.sent += sent

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    waits = server.lock_waits()  # outside the timed part and its CPU counts
    before = server.cpu_snapshot()
    start[0] = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    seg.wall = time.perf_counter() - start[0]
    seg.cpu = Server.cpu_delta(before, server.cpu_snapshot())
    after = server.lock_waits()
    if waits is not None and after is not None:
        seg.lock_wait = after - waits
    seg.ok = len(seg.latencies)
    return seg


# ------------------------------------------------------------------ responses


class Signer:
    """The test IdP, signing responses for a server; users and assertion IDs never repeat
    unless a user is asked for again (returning logins)."""

    def __init__(self) -> None:
        sys.path.insert(0, str(ROOT))
        from tests.saml_idp import KeyPair, TestIdP

        self.idp = TestIdP()
        self.sp_key = KeyPair.generate("bench floor SP")  # the floor's settings need an SP key
        self.next_user = 0
        self.next_id = 0
        self.seconds = 0.0

    def new_users(self, count: int) -> list[int]:
        users = list(range(self.next_user, self.next_user + count))
        self.next_user += count
        return users

    def forms(self, base: str, users: list[int]) -> list[dict[str, str]]:
        t0 = time.perf_counter()
        out = []
        for i in users:
            self.next_id += 1
            xml = self.idp.response(
                destination=base + ACS_PATH,
                audience=f"{base}/saml/{SLUG}/metadata",
                name_id=f"user{i}@example.com",
                assertion_id=f"_bench{self.next_id:08d}{secrets.token_hex(8)}",
                attributes={"email": [f"user{i}@example.com"], "givenName": [f"User {i}"]},
                not_on_or_after=VALID,
            )
            out.append(self.idp.post_form(xml))
        self.seconds += time.perf_counter() - t0
        return out

    def spec(self, base: str) -> dict[str, Any]:
        return {
            "sp": {
                "base": base,
                "cert_b64": self.sp_key.cert_b64,
                "key_pem": self.sp_key.key_pem.decode(),
            },
            "idp": {
                "entity_id": self.idp.entity_id,
                "sso_url": self.idp.sso_url,
                "slo_url": self.idp.slo_url,
                "cert_b64": self.idp.cert_b64,
            },
        }


def encode(forms: list[dict[str, str]]) -> list[bytes]:
    return [urlencode(f).encode() for f in forms]


def stock_floor(h: Harness, signer: Signer, base: str, forms: list[dict[str, str]]) -> dict:
    path = h.tmp / "floor.json"
    path.write_text(json.dumps({**signer.spec(base), "forms": forms}))
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--floor-child", str(path)],
        cwd="/",  # not the repository: its saml package stays out of reach
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode != 0:
        raise RuntimeError(f"stock floor failed: {out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["stock"]:
        raise RuntimeError("the stock floor child saw a patched python3-saml")
    return dict(result)


# ------------------------------------------------------------------ profiles

FRAME = re.compile(r"^(?P<name>.+?) \((?P<file>[^()]*?)(?::\d+)?\)$")
# (label, function names or None for any, a path fragment or None): the first rule that matches
# any frame of a stack names its category, so nested work counts where it is most specific
CATEGORIES: list[tuple[str, set[str] | None, str | None]] = [
    ("key unsealing (sealing.unseal: HKDF + AES-GCM)", None, "bridge/sealing.py"),
    ("signature check (python3-saml validate_sign, xmlsec)", {"validate_sign"}, "saml2/utils.py"),
    ("schema validation (validate_xml, cached XSD)", {"validate_xml", "_validate_xml"}, None),
    ("python3-saml settings (OneLogin_Saml2_Settings)", None, "saml2/settings.py"),
    ("settings cache (sso.settings / _settings)", {"settings", "_settings"}, "saml/sso.py"),
    ("DB work: replay cache insert (sso._remember)", {"_remember"}, "saml/sso.py"),
    (
        "DB work: provisioning: find/update/create, policy, audit (views._log_in)",
        {"_log_in"},
        "saml/views.py",
    ),
    ("DB work: session insert (sessions.start)", None, "bridge/sessions.py"),
    ("DB work: login record (logins.record)", None, "bridge/logins.py"),
    ("DB work: reads (account, IdPs, SP key rows)", {"_account", "_idps", "_idp_for"}, "views.py"),
    ("DB work: reads (account, IdPs, SP key rows)", {"active"}, "bridge/sp_keys.py"),
    ("bridge pre-parse (sso.decode/inspect: b64, lxml, checks)", {"decode", "inspect"}, "sso.py"),
    ("python3-saml Response() (b64 + XML parse)", {"__init__"}, "saml2/response.py"),
    ("python3-saml other (is_valid checks, get_*)", None, "onelogin/saml2/"),
    ("ACS glue (sso.validate after-checks, views.consume, cookie)", None, "saml/"),
]
OTHER = "Flask/Werkzeug/gunicorn/HTTP (outside the ACS code)"


def parse_frame(frame: str) -> tuple[str, str]:
    """'Class.method (path/file.py:12)' -> ('method', 'path/file.py')."""
    m = FRAME.match(frame)
    if not m:
        return frame, ""
    return m.group("name").rsplit(".", 1)[-1], m.group("file")


def categorize(frames: list[tuple[str, str]]) -> str:
    for label, names, path in CATEGORIES:
        for func, file in frames:
            if (names is None or func in names) and (path is None or path in file):
                return label
    return OTHER


def read_raw(path: Path, *, in_request: bool) -> tuple[Counter[str], Counter[str]]:
    """py-spy raw (collapsed) stacks -> samples per category, and of those the samples whose
    innermost frame is in psycopg (waiting for PostgreSQL, or for the GIL right after)."""
    counts: Counter[str] = Counter()
    waits: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = [parse_frame(f) for f in stack.split(";")]
        if in_request and not any(func == "handle_request" for func, _ in frames):
            continue  # a thread waiting for a connection, not serving a login
        label = categorize(frames)
        counts[label] += int(n)
        if "psycopg/" in frames[-1][1]:
            waits[label] += int(n)
    return counts, waits


def profile_child(path: str) -> None:
    """`--profile-child FILE`: one app in this process, logins one at a time through werkzeug's
    test client: ms per login unprofiled, then cProfile and SQL counts per login."""
    spec = json.loads(Path(path).read_text())
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import event

    from bridge import create_app

    app = create_app()
    engine = app.extensions["bridge.store"].engine
    sql: Counter[str] = Counter()
    sql_time = [0.0]
    checkouts = [0]
    started: dict[int, float] = {}
    shapes: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        started[id(cursor)] = time.perf_counter()
        sql[statement.split(None, 1)[0].upper()] += 1

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        spent = time.perf_counter() - started.pop(id(cursor), time.perf_counter())
        sql_time[0] += spent
        shape = re.sub(r"\s+", " ", statement)
        shape = re.sub(r"^SELECT .*? FROM ", "SELECT ... FROM ", shape)[:90]
        shapes[shape][0] += 1
        shapes[shape][1] += spent

    @event.listens_for(engine, "checkout")
    def _checkout(*_: Any) -> None:
        checkouts[0] += 1

    client = app.test_client()

    def login(form: dict[str, str]) -> None:
        resp = client.post(ACS_PATH, data=form)
        if resp.status_code != 302:
            raise RuntimeError(f"{resp.status_code}: {resp.get_data(as_text=True)[:300]}")

    for form in spec["warm"]:
        login(form)
    results = {}
    for kind in ("first", "again"):
        plain, profiled = spec[kind]["plain"], spec[kind]["profiled"]
        t0 = time.perf_counter()
        for form in plain:
            login(form)
        plain_ms = (time.perf_counter() - t0) / len(plain) * 1000
        sql.clear()
        shapes.clear()
        sql_time[0], checkouts[0] = 0.0, 0
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        for form in profiled:
            login(form)
        prof.disable()
        n = len(profiled)
        stats = pstats.Stats(prof)
        rows = [
            {"file": file, "func": func, "calls": calls, "cum": cum}
            for (file, _, func), (_, calls, _, cum, _) in stats.stats.items()  # type: ignore[attr-defined]
        ]
        results[kind] = {
            "n": n,
            "plain_ms": plain_ms,
            "profiled_ms": (time.perf_counter() - t0) / n * 1000,
            "sql": dict(sql),
            "sql_ms": sql_time[0] * 1000,
            "checkouts": checkouts[0],
            "shapes": sorted(([k, *v] for k, v in shapes.items()), key=lambda x: -x[2])[:8],
            "rows": rows,
        }
    print(json.dumps(results))


# (label, file suffix, function name): cumulative time per login from cProfile
PROFILE_ROWS = [
    ("views.consume (the whole ACS view)", "saml/views.py", "consume"),
    ("  views._account (DB read: account)", "saml/views.py", "_account"),
    ("  sso.decode + sso.inspect (b64, lxml parse, checks)", "saml/sso.py", ("decode", "inspect")),
    ("  views._idp_for (DB read: IdPs)", "saml/views.py", "_idp_for"),
    ("  views._sp (SP key rows + unseal)", "saml/views.py", "_sp"),
    ("    sealing.unseal (HKDF + AES-GCM)", "bridge/sealing.py", "unseal"),
    ("  sso.validate", "saml/sso.py", "validate"),
    ("    sso.settings (lru_cache lookup + key)", "saml/sso.py", "settings"),
    ("    OneLogin_Saml2_Settings.__init__ (misses)", "saml2/settings.py", "__init__"),
    ("    OneLogin_Saml2_Response.__init__ (b64+parse)", "saml2/response.py", "__init__"),
    ("    OneLogin_Saml2_Response.is_valid", "saml2/response.py", "is_valid"),
    ("      schema validation (sso._validate_xml)", "saml/sso.py", "_validate_xml"),
    ("      signature check (Utils.validate_sign)", "saml2/utils.py", "validate_sign"),
    ("    sso._remember (DB write: replay cache)", "saml/sso.py", "_remember"),
    ("  views._log_in (provisioning path)", "saml/views.py", "_log_in"),
    ("    provisioning.provision (DB write tx)", "bridge/provisioning.py", "provision"),
    ("      policy.policy_for", "bridge/policy.py", "policy_for"),
    ("      audit.record", "bridge/audit.py", "record"),
    ("  sessions.start (DB write: session)", "bridge/sessions.py", "start"),
    ("  logins.record (DB write: login log)", "bridge/logins.py", "record"),
    ("Store.write (every write transaction)", "bridge/store.py", "write"),
    ("pool checkouts (incl. pool_pre_ping)", "sqlalchemy/pool/base.py", "_checkout"),
    ("psycopg cursor.execute (SQL round trips)", "psycopg/cursor.py", "execute"),
    ("Session.commit", "sqlalchemy/orm/session.py", "commit"),
]


def profile_report(kind: str, result: dict[str, Any]) -> list[str]:
    n = result["n"]
    lines = [
        f"  cProfile, {kind}: one process, one login at a time (werkzeug test client, {n} "
        f"logins): {result['plain_ms']:.1f} ms/login unprofiled, "
        f"{result['profiled_ms']:.1f} under cProfile",
        f"    {'cumulative per login (under cProfile)':<56}{'ms':>7}{'calls':>7}",
    ]
    for label, suffix, funcs in PROFILE_ROWS:
        names = (funcs,) if isinstance(funcs, str) else funcs
        found = [r for r in result["rows"] if r["file"].endswith(suffix) and r["func"] in names]
        if not found:
            lines.append(f"    {label:<56}{'-':>7}")
            continue
        cum = sum(r["cum"] for r in found)
        calls = sum(r["calls"] for r in found)
        lines.append(f"    {label:<56}{cum / n * 1000:7.2f}{calls / n:7.1f}")
    stmts = sum(result["sql"].values())
    kinds = ", ".join(f"{k} {v / n:.1f}" for k, v in sorted(result["sql"].items()))
    lines.append(
        f"    SQL per login: {stmts / n:.1f} statements ({kinds}); "
        f"{result['checkouts'] / n:.1f} pool checkouts, each with a pre-ping round trip; "
        f"{result['sql_ms'] / n:.1f} ms inside cursor.execute; the slowest kinds:"
    )
    for shape, count, seconds in result["shapes"]:
        lines.append(f"      {seconds / n * 1000:6.2f} ms {count / n:4.1f}x  {shape}")
    return lines


def pyspy_report(
    h: Harness,
    signer: Signer,
    server: Server,
    pool: list[int],
    seconds: int,
    gil: bool,
    rate: float,
) -> list[str]:
    """Sample the 1-worker server's worker under the returning-user load (`rate`: its measured
    logins/s, to sign enough responses ahead for the sampling window)."""
    pid = server.workers()[0]
    raw = h.tmp / f"spy-{'gil' if gil else 'idle'}.txt"
    forms: list[dict[str, str]] = []
    while len(forms) < 2 * max(rate, 30) * (seconds + 4):
        forms += signer.forms(server.base, pool)  # users cycle; CLIENTS << len(pool)
    window: list[float] = []
    spy: list[subprocess.Popen[bytes]] = []

    def sample() -> None:
        time.sleep(1.5)
        window.append(time.perf_counter())
        args = [tool("py-spy"), "record", "-p", str(pid), "-d", str(seconds), "-r", str(SPY_RATE)]
        args += ["--format", "raw", "-o", str(raw), "--nonblocking"]
        args += ["--gil"] if gil else ["--idle"]
        spy.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        spy[0].wait()
        window.append(time.perf_counter())

    helper = threading.Thread(target=sample)
    log(f"py-spy {'--gil' if gil else '--idle'} on worker {pid} for {seconds}s")
    helper.start()
    seg = drive(server, encode(forms), budget=seconds + 2.5)
    helper.join()
    err = spy[0].stderr.read().decode() if spy and spy[0].stderr else ""
    if not raw.exists():
        return [f"  py-spy failed: {err.strip()[-300:]}"]
    done = sum(1 for t in seg.done_at if window[0] <= t <= window[1])
    short = not seg.done_at or max(seg.done_at) < window[1]
    counts, waits = read_raw(raw, in_request=not gil)
    total = sum(counts.values())
    if gil:
        head = (
            f"  py-spy --gil, 1-worker server, returning users ({done} logins in {seconds}s): "
            "samples while a thread holds the GIL = the worker's serial Python time, ms/login"
        )
    else:
        head = (
            f"  py-spy --idle, 1-worker server, returning users ({done} logins in {seconds}s): "
            "threads inside a request, incl. waiting for the GIL or the DB (sums to about the "
            "latency), ms/login"
        )
    out = [head + ("" if gil else "; in psycopg = innermost frame in psycopg (the DB round trip)")]
    per = SPY_RATE * max(done, 1) / 1000
    for name, n in counts.most_common():
        wait = "" if gil else f"  in psycopg {waits[name] / per:6.2f}"
        out.append(f"    {name:<74}{n / per:7.2f}  {n / total * 100:5.1f}%{wait}")
    wait = "" if gil else f"  in psycopg {sum(waits.values()) / per:6.2f}"
    out.append(f"    {'total':<74}{total / per:7.2f}  100.0%{wait}")
    if seg.errors:
        out.append(f"    ({seg.failed} errors during sampling: {seg.errors.most_common(1)})")
    if short:
        out.append("    (the load ended before the sampling window: these ms/login are too high)")
    return out


# ------------------------------------------------------------------ main


Check = tuple[str, float, float, str, bool]


def check_targets(
    kind: str, pairs: list[dict[str, float]], results: dict[tuple[str, int], dict[str, Any]]
) -> list[Check]:
    """The targets for one workload: ratios within each round (median), tails over all."""
    key = f"{kind}1"
    w1 = median([x[key] / x["floor"] for x in pairs])
    w2 = median([x[f"{kind}2"] / 2 / x["floor"] for x in pairs])
    scale = median([x[f"{kind}2"] / x[key] if x[key] else float("inf") for x in pairs])
    tail = {c: results[(kind, c)]["p99"] / results[(kind, c)]["p50"] for c in (1, 2)}
    errs = any(results[(kind, c)]["errors"] for c in (1, 2))
    out = []
    for name, value, target, op in (
        ("1 worker / floor", w1, TARGET_FLOOR, ">="),
        ("2 workers, per worker / floor", w2, TARGET_FLOOR, ">="),
        ("2 workers / 1 worker", scale, TARGET_SCALE, ">="),
        ("p99/p50, 1 worker", tail[1], TARGET_TAIL, "<="),
        ("p99/p50, 2 workers", tail[2], TARGET_TAIL, "<="),
    ):
        ok = value >= target if op == ">=" else value <= target
        ok = ok and not math.isnan(value) and not errs  # a configuration that errs cannot pass
        out.append((name, value, target, op, ok))
    return out


def any_missed(checks: list[Check]) -> bool:
    return not all(c[4] for c in checks)


def summarize(name: str, segs: list[Segment]) -> dict[str, Any]:
    lats = [x for s in segs for x in s.latencies]
    ok = sum(s.ok for s in segs)
    wall = sum(s.wall for s in segs)
    kinds = ("client", "server", "postgres", "others", "busiest_worker")
    cpu = {k: sum(s.cpu[k] for s in segs) for k in kinds}
    waited = [s.lock_wait for s in segs if s.lock_wait is not None]
    return {
        "lock_wait_ms": sum(waited) / max(ok, 1) * 1000 if len(waited) == len(segs) else None,
        "name": name,
        "ok": ok,
        "sent": sum(s.sent for s in segs),
        "errors": sum((s.errors for s in segs), Counter()),
        "deadlocks": sum(s.deadlocks for s in segs),
        "rate": ok / wall if wall else 0.0,
        "p50": pct(lats, 50),
        "p95": pct(lats, 95),
        "p99": pct(lats, 99),
        "cpu_ms": {k: v / max(ok, 1) * 1000 for k, v in cpu.items()},
        "cores": {k: v / wall if wall else 0.0 for k, v in cpu.items()},
        "busiest_share": cpu["busiest_worker"] / cpu["server"] if cpu["server"] else 0.0,
    }


def git_state() -> str:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip()

    dirty = [
        line[3:]
        for line in git("status", "--porcelain").splitlines()
        if line[3:].startswith(("bridge/", "saml/", "policies", "gunicorn.conf.py"))
    ]
    return git("rev-parse", "--short", "HEAD") + (
        f" + uncommitted changes in {', '.join(dirty)}" if dirty else ""
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--logins", type=int, help="timed logins per configuration and workload")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 2)")
    ap.add_argument("--quick", action="store_true", help="a smaller run (< 2 min)")
    ap.add_argument("--sqlite", action="store_true", help="the bridge on a SQLite file")
    ap.add_argument("--profile", action="store_true", help="profile even if every target passes")
    ap.add_argument("--no-profile", action="store_true", help="never profile")
    ap.add_argument(
        "--keep-alive",
        action="store_true",
        help="each client keeps one connection (default: a new connection per login)",
    )
    ap.add_argument("--floor-child", help=argparse.SUPPRESS)
    ap.add_argument("--profile-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    global KEEP_ALIVE
    KEEP_ALIVE = args.keep_alive
    if args.floor_child:
        floor_child(args.floor_child)
        return 0
    if args.profile_child:
        profile_child(args.profile_child)
        return 0

    quick = args.quick
    logins = args.logins or (120 if quick else 900)
    rounds = args.rounds or (2 if quick else 3)
    per_seg = max(2 * CLIENTS, logins // rounds)
    jit_rounds = 1 if quick else rounds  # first-login segments can stall on the database
    # first logins: no new request after the budget; the ones in flight get the server's answer
    jit_budget, jit_timeout, jit_settle = (3.0, 45.0, 30.0) if quick else (15.0, 60.0, 60.0)
    jit_deadline = 60 if quick else 480  # seconds into the run: no first-login round after it
    seg_budget = 25.0 if quick else 90.0
    floor_n = min(per_seg, 50 if quick else 200)
    stock_n = min(per_seg, 15 if quick else 50)
    spy_seconds = 4 if quick else 15
    t_start = time.perf_counter()

    h = Harness(sqlite=args.sqlite)
    signer = Signer()
    state = git_state()
    log(f"checkout {state}; database {h.db}; {rounds} rounds x {per_seg} logins")
    h.setup(signer.idp.metadata_xml())
    servers = [h.start(1), h.start(2)]  # one after the other: the first makes the SP key
    by = {s.count: s for s in servers}
    # the HTTP floor: python3-saml alone behind the same gunicorn, fed the same signed forms
    floor_by = {c: h.start(c, by[c], signer.spec(by[c].base)) for c in (1, 2)}
    servers += floor_by.values()
    log("servers: " + ", ".join(f"{s.name} :{s.port} (workers {s.workers()})" for s in servers))

    # sign everything ahead of time
    pool = signer.new_users(per_seg)  # the returning users (all distinct within a segment)
    pool_forms = signer.forms(by[1].base, pool)
    again = {(r, c): signer.forms(by[c].base, pool) for r in range(rounds) for c in (1, 2)}
    first = {
        (r, c): signer.forms(by[c].base, signer.new_users(per_seg))
        for r in range(jit_rounds)
        for c in (1, 2)
    }
    warm2 = signer.forms(by[2].base, pool[: 8 * CLIENTS])
    signed = signer.next_id
    sign_ms = signer.seconds / signed * 1000
    log(f"signed {signed} responses ({sign_ms:.2f} ms each)")

    import saml.sso  # noqa: F401  (patches python3-saml's schema loading, as the app does)

    patched = saml_settings(signer.spec(by[1].base)["sp"], signer.spec("")["idp"])

    # the returning users' first logins, one at a time (JIT works without concurrency): this
    # also warms the 1-worker server; then warm both workers of the other one
    log(f"creating the {len(pool)} returning users: first logins one at a time (1 worker)")
    seq = drive(by[1], encode(pool_forms), clients=1, budget=seg_budget * 2)
    if seq.failed or seq.ok != len(pool):
        raise RuntimeError(f"sequential first logins failed: {seq.errors.most_common(3)}")
    seg = drive(by[2], encode(warm2))
    if seg.failed:
        raise RuntimeError(f"warm-up failed: {seg.errors.most_common(3)}")
    for c in (1, 2):  # python3-saml's per-thread schema cache, in every worker
        seg = drive(floor_by[c], encode(pool_forms[: 8 * CLIENTS] if c == 1 else warm2))
        if seg.failed:
            raise RuntimeError(f"HTTP floor warm-up failed: {seg.errors.most_common(3)}")
    h.settle()

    segs: dict[tuple[str, int], list[Segment]] = {}
    floors: list[dict[str, Any]] = []
    stocks: list[dict[str, Any]] = []
    rows: list[dict[str, float]] = []  # returning-user rounds
    jit_rows: list[dict[str, float]] = []  # first-login rounds, run last: they may leave
    for r in range(rounds):  # transactions retrying on the server after the clients gave up
        sample = again[(r, 1)]
        floors.append(measure_floor(patched, by[1].base, sample[:floor_n]))
        stocks.append(stock_floor(h, signer, by[1].base, sample[:stock_n]))
        row: dict[str, float] = {"floor": floors[-1]["rate"], "stock": stocks[-1]["rate"]}
        for c in (1, 2) if r % 2 == 0 else (2, 1):
            got = drive(by[c], encode(again[(r, c)]), budget=seg_budget)
            h.quiesce()
            segs.setdefault(("again", c), []).append(got)
            row[f"again{c}"] = got.rate
            # the same forms through the HTTP floor (python3-saml keeps no replay cache)
            got = drive(floor_by[c], encode(again[(r, c)]), budget=seg_budget)
            segs.setdefault(("http", c), []).append(got)
            row[f"http{c}"] = got.rate
        rows.append(row)
        log(
            f"round {r + 1}: floor {row['floor']:.1f}/s (stock {row['stock']:.1f}/s); returning "
            f"users: 1 worker {row['again1']:.1f}/s, 2 workers {row['again2']:.1f}/s; HTTP "
            f"floor: 1 worker {row['http1']:.1f}/s, 2 workers {row['http2']:.1f}/s"
        )
    # profile the returning load now, before first logins can leave retrying transactions behind
    spy_lines: list[str] = []

    def sample() -> None:
        rate = summarize(by[1].name, segs[("again", 1)])["rate"]
        for gil in (True, False):
            spy_lines.extend(pyspy_report(h, signer, by[1], pool, spy_seconds, gil, rate))
            h.quiesce()

    again = {("again", c): summarize(by[c].name, segs[("again", c)]) for c in (1, 2)}
    if not args.no_profile and (args.profile or any_missed(check_targets("again", rows, again))):
        sample()

    for r in range(jit_rounds):
        if time.perf_counter() - t_start > jit_deadline:
            h.notes.append(f"first-login rounds from {r + 1} on skipped to keep the run bounded")
            break
        floors.append(measure_floor(patched, by[1].base, first[(r, 1)][:floor_n]))
        row = {"floor": floors[-1]["rate"]}
        for c in (1, 2) if r % 2 == 0 else (2, 1):
            before = h.deadlocks()
            got = drive(by[c], encode(first[(r, c)]), budget=jit_budget, timeout=jit_timeout)
            h.quiesce(limit=jit_settle)
            got.deadlocks = h.deadlocks() - before
            segs.setdefault(("first", c), []).append(got)
            row[f"first{c}"] = got.rate
        jit_rows.append(row)
        log(
            f"first-login round {r + 1}: floor {row['floor']:.1f}/s; 1 worker "
            f"{row['first1']:.1f}/s, 2 workers {row['first2']:.1f}/s"
        )

    out: list[str] = []
    p = out.append
    p("")
    p(
        "SAML ACS benchmark: IdP-initiated POST logins, gunicorn (asyncio worker, app threads), "
        + ("SQLite" if args.sqlite else "PostgreSQL")
    )
    p(f"  checkout {state}")
    for note in h.notes:
        p(f"  note: {note}")
    p(
        f"  {len(rows)} + {len(jit_rows)} interleaved rounds (returning users, then first "
        f"logins); {CLIENTS} clients, "
        + ("each on one keep-alive connection" if KEEP_ALIVE else "a new connection per login")
        + f"; responses signed ahead ({signed}, "
        f"{sign_ms:.1f} ms each, distinct assertion IDs, valid {VALID})"
    )
    p("")
    p("Floor: python3-saml alone, one thread, no HTTP, no DB: Response() + is_valid(strict, ")
    p("       raise_exceptions) + get_nameid() + get_attributes(), the app's security settings")
    for label, xs in (
        ("patched (saml.sso imported: each XSD compiled once per thread)", floors),
        ("stock python3-saml (child process that never imports saml.sso)", stocks),
    ):
        rates = ", ".join(f"{x['rate']:.1f}" for x in xs)
        p(f"  {label}")
        p(
            f"    {median([x['rate'] for x in xs]):7.1f} logins/s  "
            f"({median([x['ms'] for x in xs]):.2f} ms, CPU {median([x['cpu_ms'] for x in xs]):.2f}"
            f" ms each; rounds: {rates}; {xs[0]['n']} responses/round)"
        )
    p("")
    p(
        f"Sequential first logins (1 client, 1 worker, JIT create): {seq.rate:.1f} logins/s, "
        f"p50 {pct(seq.latencies, 50):.1f} ms, p99 {pct(seq.latencies, 99):.1f} ms "
        f"({seq.ok} users)"
    )
    p("")
    p(f"ACS over HTTP, {CLIENTS} concurrent clients")
    p(
        f"  {'workload':<15}{'config':<11}{'logins/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'ok/sent':>11}  CPU ms/login: client server postgres | other sessions (cores)"
    )
    results: dict[tuple[str, int], dict[str, Any]] = {}
    for kind, label in (("first", "first logins"), ("again", "returning"), ("http", "HTTP floor")):
        for c in (1, 2):
            if (kind, c) not in segs:
                continue
            x = results[(kind, c)] = summarize(by[c].name, segs[(kind, c)])
            cpu = x["cpu_ms"]
            p(
                f"  {label:<15}{x['name']:<11}{x['rate']:9.1f}{x['p50']:9.1f}{x['p95']:9.1f}"
                f"{x['p99']:9.1f}{x['ok']:>6}/{x['sent']:<4}  {cpu['client']:6.1f} "
                f"{cpu['server']:6.1f} {cpu['postgres']:8.1f} | {x['cores']['others']:.2f}"
            )
    for (kind, _c), x in results.items():
        label = {"first": "first logins", "again": "returning", "http": "HTTP floor"}[kind]
        if x["errors"]:
            p(f"  errors, {label}, {x['name']}: {sum(x['errors'].values())}")
            for what, count in x["errors"].most_common(4):
                p(f"    {count} x {what}")
        if x["deadlocks"]:
            p(
                f"  PostgreSQL deadlocks detected during {label}, {x['name']} (pg_stat_database): "
                f"{x['deadlocks']}"
            )
    p(
        "  per round, logins/s 1 worker/2 workers: returning "
        + ", ".join(f"{x['again1']:.1f}/{x['again2']:.1f}" for x in rows)
        + "; first logins "
        + ", ".join(f"{x['first1']:.1f}/{x['first2']:.1f}" for x in jit_rows)
    )
    shares = ", ".join(
        f"{'first logins' if k == 'first' else 'returning'} {x['busiest_share'] * 100:.0f}%"
        for (k, c), x in results.items()
        if c == 2 and k != "http"
    )
    p(
        f"  2 workers: the busiest worker did {shares} of the server's CPU"
        + (
            " (each keep-alive connection stays with the worker that accepted it)"
            if KEEP_ALIVE
            else ""
        )
    )
    others = median([x["cores"]["others"] for x in results.values()])
    p(
        f"  this machine has {os.cpu_count()} cores; other processes (not this benchmark's) kept "
        f"{others:.2f} of them busy during the timed segments (median)"
    )
    p(
        "  HTTP floor: python3-saml alone (floor_app.py: no Flask, no database) behind the same "
        "gunicorn (gunicorn.conf.py, bridge.serving's worker), the returning rounds' forms, "
        "in the same rounds"
    )
    http = check_targets("http", rows, results)
    p(
        "  HTTP floor against the targets: "
        + ", ".join(f"{name} {value:.2f}x" for name, value, *_ in http)
        + ": what no application served this way exceeds on this machine"
    )
    p("")
    p("Targets (ratios taken within each round, median over rounds; floor = patched floor)")
    floor_cpu = median([x["cpu_ms"] for x in floors])
    missed = False
    for kind, label, pairs in (
        ("first", "first logins (JIT)", jit_rows),
        ("again", "returning users", rows),
    ):
        if not pairs:
            continue
        checks = check_targets(kind, pairs, results)
        missed |= any_missed(checks)
        p(f"  {label}")
        for name, value, target, op, ok in checks:
            p(f"    {name:<32}{value:7.2f}x  (target {op} {target}x)  {'PASS' if ok else 'MISS'}")
        stock = median([x["stock"] for x in rows])
        p(
            f"    (against the stock floor: 1 worker {results[(kind, 1)]['rate'] / stock:.2f}x, "
            f"2 workers per worker {results[(kind, 2)]['rate'] / 2 / stock:.2f}x)"
        )
        per = median([x[f"{kind}1"] / x["http1"] for x in pairs if "http1" in x] or [math.nan])
        if kind == "first":  # its rounds have no HTTP floor of their own: the returning rounds'
            per = results[("first", 1)]["rate"] / results[("http", 1)]["rate"]
        p(
            f"    (against the HTTP floor, python3-saml alone behind the same gunicorn: 1 worker "
            f"{per:.2f}x its logins/s; the HTTP floor itself is {http[0][1]:.2f}x the floor "
            f"per worker, {http[2][1]:.2f}x from 2 workers to 1, p99/p50 {http[3][1]:.2f}x with "
            f"1 worker and {http[4][1]:.2f}x with 2)"
        )
        cpu = results[(kind, 1)]["cpu_ms"]
        p(
            f"    (by CPU, less sensitive to the machine's load: the floor spends {floor_cpu:.2f} "
            f"ms per login, a worker {cpu['server']:.1f} ms + PostgreSQL {cpu['postgres']:.1f} "
            f"ms: with a core to itself a worker would reach at most "
            f"{1000 / max(cpu['server'], 1e-9):.0f} logins/s = "
            f"{floor_cpu / max(cpu['server'], 1e-9):.2f}x the floor's CPU rate)"
        )
        one = results[(kind, 1)]
        free = max((os.cpu_count() or 1) - one["cores"]["others"], 0.0)
        used = one["rate"] * (cpu["client"] + cpu["server"] + cpu["postgres"]) / 1000
        served = one["rate"] * (cpu["server"] + cpu["postgres"]) / 1000
        p(
            f"    (the machine's bound on 2 workers / 1: at 1 worker this workload kept {used:.2f} "
            f"cores busy (client, server, PostgreSQL) of the {free:.2f} other processes left "
            f"free, so at the same CPU per login 2 workers reach at most "
            f"{min(2.0, free / max(used, 1e-9)):.2f}x; with the client on another machine "
            f"{min(2.0, free / max(served, 1e-9)):.2f}x)"
        )
        two = results[(kind, 2)]
        if args.sqlite and one["lock_wait_ms"] is not None and two["lock_wait_ms"] is not None:
            # a worker waiting for the lock sleeps: that share of its time serves nothing
            idle = [x["rate"] / c * x["lock_wait_ms"] / 1000 for x, c in ((one, 1), (two, 2))]
            bound = min(2.0, free / max(used, 1e-9)) * (1 - idle[1]) / max(1 - idle[0], 1e-9)
            p(
                f"    (SQLite's write lock ({LOCK_WAIT}): writers waited "
                f"{one['lock_wait_ms']:.2f} ms per login at 1 worker, {two['lock_wait_ms']:.2f} "
                f"ms at 2 workers, {idle[1] * 100:.0f}% of each worker's time; the machine's "
                f"bound less that share: 2 workers / 1 reach at most {bound:.2f}x)"
            )
    print("\n".join(out), flush=True)

    if (missed or args.profile) and not args.no_profile:
        if not spy_lines:
            h.quiesce(limit=90)
            sample()
        prof = ["", "Profile", *spy_lines]
        h.quiesce(limit=90)
        n_plain, n_prof = (10, 15) if quick else (40, 100)
        spec = {
            "warm": signer.forms(by[1].base, signer.new_users(5)),
            "first": {
                "plain": signer.forms(by[1].base, signer.new_users(n_plain)),
                "profiled": signer.forms(by[1].base, signer.new_users(n_prof)),
            },
            "again": {
                "plain": signer.forms(by[1].base, pool[:n_plain]),
                "profiled": signer.forms(by[1].base, pool[n_plain : n_plain + n_prof]),
            },
        }
        path = h.tmp / "profile.json"
        path.write_text(json.dumps(spec))
        log("cProfile in one process")
        child = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--profile-child", str(path)],
            cwd=ROOT,
            env=h.env(by[1].base),
            capture_output=True,
            text=True,
            timeout=600,
        )
        if child.returncode != 0:
            prof.append(f"  cProfile child failed: {child.stderr[-800:]}")
        else:
            got = json.loads(child.stdout.strip().splitlines()[-1])
            prof += profile_report("first logins (JIT create)", got["first"])
            prof += profile_report("returning users", got["again"])
        print("\n".join(prof), flush=True)
    print(f"\ntotal run time {time.perf_counter() - t_start:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
