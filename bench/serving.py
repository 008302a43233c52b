"""What gunicorn's worker costs per request: worker CPU ms per request through gunicorn (one
worker, the checkout's gunicorn.conf.py and bridge.serving) against the same request's CPU in one
process (Flask's test client, no HTTP), and how it splits between the worker's event-loop thread
and its app threads. Two checkouts (or settings) are compared in alternating rounds, with ratios
taken within each round.

    .venv/bin/python bench/serving.py [--n N] [--rounds R] [--database-url URL]
        [--config LABEL=PATH[:GUNICORN ARGS]] ...

Each --config is a checkout (PATH, `.` for this one: its bridge/ and gunicorn.conf.py; the
packages are this venv's) and optional extra gunicorn arguments (e.g. `new=.:--threads 2`);
default: this checkout alone. The first config is the base of the ratios. One fresh SQLite file
(or a fresh PostgreSQL database beside --database-url), an account with a SCIM token and a test
IdP (tests/saml_idp, IdP-initiated, JIT). Every config's server runs from the start; each round
drives them one after the other (the order alternating), 4 client threads per phase:

  healthz            GET /healthz (Flask, no database), keep-alive connections; N requests
  healthz, new conn  the same with a new connection per request; N/2
  SCIM GET by id     keep-alive, Bearer token; N/2
  SCIM GET group     the group of the N/10 users below as members (Flask streams it, a chunk
                     per member); N/30
  SAML returning     IdP-initiated POST to the ACS, a user that exists, a new connection per
                     login (a browser posting the IdP's form); N/10
  SAML first login   the same for a new user (JIT create); N/10

Worker CPU is read from /proc (utime + stime of the worker process, and of its main thread, the
event loop); "in-process" is time.process_time around the same requests through the test
client, in a child process per checkout. Run it with the machine otherwise quiet if you can; the
load average and the CPU other processes used during the timed phases are printed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from cost import fresh_database  # noqa: E402  (bench/ is this script's directory)

TICK = os.sysconf("SC_CLK_TCK")
CLIENTS = 4
BASE = "http://bridge.bench"  # every server's BRIDGE_BASE_URL: one signed response fits any
SLUG = "serve"
SECRET = "b" * 64  # every server's and the in-process app's BRIDGE_SECRET_KEY
ACS = f"/saml/{SLUG}/acs"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PHASES = (
    "healthz",
    "healthz, new conn",
    "SCIM GET by id",
    "SCIM GET group",
    "SAML returning",
    "SAML first login",
)


def ticks(path: str, kernel_only: bool = False) -> int:
    """utime + stime (or stime alone) of /proc/PID/stat or /proc/PID/task/TID/stat."""
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
        return int(fields[12]) + (0 if kernel_only else int(fields[11]))
    except (OSError, IndexError, ValueError):
        return 0


def machine() -> int:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ setup


def prepare(url: str, tmp: Path) -> dict[str, Any]:
    """Schema, account, token, IdP; returns what the requests need."""
    from bridge import accounts, idps, schema
    from bridge.store import Store
    from tests.saml_idp import TestIdP

    store = Store(url)
    schema.upgrade(store.engine)
    accounts.create_account(store, SLUG, actor="bench")
    accounts.add_environment(store, SLUG, "production", default=True, actor="bench")
    token = accounts.issue_token(store, SLUG, actor="bench").raw
    idp = TestIdP()
    idps.add(store, SLUG, idp.metadata_xml(), name="t", allow_idp_initiated=True, actor="bench")
    store.dispose()
    return {"token": token, "idp": idp}


class Logins:
    """Signed IdP-initiated responses; every assertion ID is new, users only when asked."""

    def __init__(self, idp: Any) -> None:
        self.idp, self.next_user = idp, 0

    def new_users(self, n: int) -> list[str]:
        self.next_user += n
        return [f"u{i}@serve.example" for i in range(self.next_user - n, self.next_user)]

    def bodies(self, users: list[str]) -> list[bytes]:
        out = []
        for name in users:
            xml = self.idp.response(
                destination=BASE + ACS,
                audience=f"{BASE}/saml/{SLUG}/metadata",
                name_id=name,
                attributes={"email": [name]},
            )
            out.append(urlencode(self.idp.post_form(xml)).encode())
        return out


@dataclass
class Server:
    label: str
    path: Path
    args: str
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0

    def start(self, url: str, tmp: Path, secret: str) -> None:
        self.port = free_port()
        env = dict(os.environ)
        for name in ("GUNICORN_THREADS", "WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR"):
            env.pop(name, None)
        env.update(
            BIND=f"127.0.0.1:{self.port}",
            WEB_CONCURRENCY="1",
            GUNICORN_CMD_ARGS=f"--no-control-socket {self.args}".strip(),
            BRIDGE_DATABASE_URL=url,
            BRIDGE_BASE_URL=BASE,
            BRIDGE_SECRET_KEY=secret,
            BRIDGE_LOG_LEVEL="WARNING",
            BRIDGE_INSTANCE_PATH=str(tmp / f"instance-{self.label}"),
            BRIDGE_POLICY_DIR=str(tmp / "policies"),
            PYTHONPATH=str(self.path),
        )
        log = open(tmp / f"gunicorn-{self.label}.log", "wb")  # noqa: SIM115
        gunicorn = Path(sys.executable).parent / "gunicorn"
        self.proc = subprocess.Popen(
            [str(gunicorn), "--config", "gunicorn.conf.py", "bridge:create_app()"],
            cwd=self.path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label}: gunicorn exited; see {log.name}")
            try:
                if request(self.port, "GET", f"/saml/{SLUG}/metadata")[0] == 200 and self.worker():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.label}: gunicorn did not start; see {log.name}")

    def worker(self) -> int:
        assert self.proc is not None
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                stat = (entry / "stat").read_text() if (entry / "stat").exists() else ""
                if stat and int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    return int(entry.name)
        return 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def request(port: int, method: str, path: str, body: bytes | None = None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# ------------------------------------------------------------------ load


Call = tuple[str, str, bytes | None, dict[str, str], int]  # method, path, body, headers, status


def drive(server: Server, calls: list[Call], *, keep: bool) -> dict[str, float]:
    """Send `calls` from CLIENTS threads; worker CPU ms per request (all, loop thread)."""
    pid = server.worker()
    lock = threading.Lock()
    queue = iter(calls)
    bad: list[str] = []
    latencies: list[float] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        while True:
            with lock:
                item = next(queue, None)
            if item is None:
                break
            method, path, body, headers, want = item
            t0 = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException) as exc:
                status, conn = 0, http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                bad.append(repr(exc))
            with lock:
                latencies.append(time.perf_counter() - t0)
                if status != want and status:
                    bad.append(f"HTTP {status} for {method} {path}")
            if not keep:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    w0, k0, l0, m0, c0 = (
        ticks(f"/proc/{pid}/stat"),
        ticks(f"/proc/{pid}/stat", kernel_only=True),
        ticks(f"/proc/{pid}/task/{pid}/stat"),
        machine(),
        time.process_time(),
    )
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    worker = (ticks(f"/proc/{pid}/stat") - w0) / TICK
    kernel = (ticks(f"/proc/{pid}/stat", kernel_only=True) - k0) / TICK
    loop = (ticks(f"/proc/{pid}/task/{pid}/stat") - l0) / TICK
    client_cpu = time.process_time() - c0
    others = max(0.0, (machine() - m0) / TICK - worker - client_cpu)
    if bad:
        raise RuntimeError(f"{server.label}: {len(bad)} bad answers, e.g. {bad[:3]}")
    n = len(calls)
    return {
        "cpu": 1000 * worker / n,
        "loop": 1000 * loop / n,
        "kernel": 1000 * kernel / n,
        "rate": n / wall,
        "p50": 1000 * statistics.median(latencies),
        "others": others / wall,
    }


# ------------------------------------------------------------------ in-process


def inprocess_child(spec_path: str) -> None:
    """CPU ms per request through the test client (this process imports PATH's bridge)."""
    spec = json.loads(Path(spec_path).read_text())
    from bridge import create_app
    from bridge.settings import Settings

    tmp = Path(spec["tmp"])
    settings = Settings.from_env(
        {"BRIDGE_LOG_LEVEL": "WARNING", "BRIDGE_BASE_URL": BASE, "BRIDGE_SECRET_KEY": SECRET},
        database_url=spec["url"],
        instance_path=tmp / "instance-inprocess",
        policy_dir=tmp / "policies",
    )
    app = create_app(settings)
    client = app.test_client()
    out: dict[str, float] = {}
    for phase, calls in spec["phases"].items():
        t0 = time.process_time()
        for method, path, body, headers, want in calls:
            resp = client.open(path, method=method, data=body, headers=headers)
            resp.get_data()  # a streamed body is made as it is read
            if resp.status_code != want:
                raise RuntimeError(f"in-process {phase}: HTTP {resp.status_code}")
        out[phase] = 1000 * (time.process_time() - t0) / len(calls)
    app.extensions["bridge.store"].dispose()
    print(json.dumps(out))


def inprocess(path: Path, url: str, tmp: Path, phases: dict[str, list[Call]]) -> dict[str, float]:
    spec = tmp / "inprocess.json"
    encoded = {
        phase: [(m, p, b.decode() if b else None, h, s) for m, p, b, h, s in calls]
        for phase, calls in phases.items()
    }
    spec.write_text(json.dumps({"tmp": str(tmp), "url": url, "phases": encoded}))
    env = {**os.environ, "PYTHONPATH": f"{path}{os.pathsep}{ROOT}"}
    child = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--inprocess-child", str(spec)],
        cwd=path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if child.returncode != 0:
        raise RuntimeError(f"in-process child failed: {child.stderr[-1500:]}")
    return dict(json.loads(child.stdout.strip().splitlines()[-1]))


# ------------------------------------------------------------------ main


def parse_config(text: str) -> tuple[str, Path, str]:
    label, _, rest = text.partition("=")
    path, _, args = rest.partition(":")
    return label, Path(path or ".").resolve(), args


@dataclass
class Workload:
    """The requests of each phase; SAML ones signed anew at each call (assertion IDs are used
    once), first logins for users never seen."""

    n: int
    logins: Logins
    scim: dict[str, str]
    pool: list[str]  # the users of the returning logins
    ids: list[str]  # their SCIM ids
    group: str  # the SCIM id of a group of them all

    def calls(self, phase: str, scale: float = 1.0) -> tuple[list[Call], bool]:
        """(the requests, whether each client keeps its connection)."""
        n, saml = int(self.n * scale), int(len(self.pool) * scale)
        healthz: Call = ("GET", "/healthz", None, {}, 200)
        if phase == "healthz":
            return [healthz] * n, True
        if phase == "healthz, new conn":
            return [healthz] * (n // 2), False
        if phase == "SCIM GET by id":
            path = "/scim/v2/Users/{}"
            return [("GET", path.format(self.ids[i % len(self.ids)]), None, self.scim, 200)
                    for i in range(n // 2)], True  # fmt: skip
        if phase == "SCIM GET group":
            return [("GET", f"/scim/v2/Groups/{self.group}", None, self.scim, 200)] * (
                n // 30
            ), True
        users = self.pool[:saml] if phase == "SAML returning" else self.logins.new_users(saml)
        return [("POST", ACS, body, FORM, 302) for body in self.logins.bodies(users)], False


def report(rows: dict[tuple[str, str], list[dict[str, float]]], servers: list[Server],
           alone: dict[Path, dict[str, float]]) -> None:  # fmt: skip
    base = servers[0]
    print(
        "\nworker CPU ms per request through gunicorn, median over rounds (loop: the worker's "
        "event-loop thread; app: its app threads; kernel: the worker's system time), against "
        "the same requests' CPU in one process (test client, mean)"
    )
    print(
        f"{'phase':<19}{'config':<10}{'worker':>7}{'loop':>6}{'app':>6}{'kernel':>7}"
        f"{'1 proc':>7}{'x 1 proc':>9}{'req/s':>7}{'p50 ms':>7}{'vs ' + base.label:>11}"
    )
    for phase in PHASES:
        for s in servers:
            got = rows[(phase, s.label)]

            def med(key: str, got: list[dict[str, float]] = got) -> float:
                return statistics.median(x[key] for x in got)

            pairs = zip(got, rows[(phase, base.label)], strict=True)
            ratio = statistics.median(x["cpu"] / max(b["cpu"], 1e-9) for x, b in pairs)
            own = alone[s.path].get(phase.replace(", new conn", ""), float("nan"))
            print(
                f"{phase:<19}{s.label:<10}{med('cpu'):7.2f}{med('loop'):6.2f}"
                f"{med('cpu') - med('loop'):6.2f}{med('kernel'):7.2f}{own:7.2f}"
                f"{med('cpu') / own:9.2f}{med('rate'):7.0f}{med('p50'):7.1f}{ratio:10.2f}x"
            )


def main() -> int:
    global CLIENTS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=3000, help="healthz requests per round (see above)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=CLIENTS, help="client threads per phase")
    ap.add_argument("--database-url", help="PostgreSQL server URL (default: a SQLite file)")
    ap.add_argument("--config", action="append", default=[], help="LABEL=PATH[:GUNICORN ARGS]")
    ap.add_argument("--inprocess-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.n < 300:  # the group phase sends n/30 requests, the warm-up a tenth of each phase
        ap.error(f"--n {args.n}: at least 300 (the warm-up's group phase would send none)")
    if args.inprocess_child:
        inprocess_child(args.inprocess_child)
        return 0
    CLIENTS = args.clients
    configs = [parse_config(c) for c in args.config] or [("this", ROOT, "")]
    tmp = Path(tempfile.mkdtemp(prefix="bench_serving_"))
    (tmp / "policies").mkdir()
    url, drop = fresh_database(args.database_url, tmp, "serving")
    servers = [Server(label, path, extra) for label, path, extra in configs]
    try:
        setup = prepare(url, tmp)
        logins = Logins(setup["idp"])
        scim = {"Authorization": f"Bearer {setup['token']}", "Accept": "application/scim+json"}
        for s in servers:
            s.start(url, tmp, secret=SECRET)
        # the returning users, made by first logins (one client), and their SCIM ids
        pool = logins.new_users(max(CLIENTS * 5, args.n // 10))
        drive(servers[0], [("POST", ACS, b, FORM, 302) for b in logins.bodies(pool)], keep=False)
        query = f"/scim/v2/Users?count={len(pool)}&attributes=id"
        ids = [r["id"] for r in json.loads(request(servers[0].port, "GET", query, None, scim)[1])
               ["Resources"]]  # fmt: skip
        members = {"displayName": "all", "members": [{"value": i} for i in ids]}
        body = request(servers[0].port, "POST", "/scim/v2/Groups", json.dumps(members).encode(),
                       {**scim, "Content-Type": "application/scim+json"})[1]  # fmt: skip
        work = Workload(args.n, logins, scim, pool, ids, json.loads(body)["id"])
        for s in servers:  # every worker warmed on every path
            for phase in PHASES:
                calls, keep = work.calls(phase, scale=0.1)
                drive(s, calls, keep=keep)
        load = os.getloadavg()
        print(
            f"# {len(servers)} config(s), 1 worker each, {CLIENTS} clients, {args.rounds} rounds; "
            f"{'PostgreSQL' if args.database_url else 'SQLite'}; load average "
            f"{load[0]:.2f} {load[1]:.2f} on {os.cpu_count()} cores",
            flush=True,
        )
        rows: dict[tuple[str, str], list[dict[str, float]]] = {}
        for r in range(args.rounds):
            for phase in PHASES:
                for s in servers if r % 2 == 0 else servers[::-1]:
                    calls, keep = work.calls(phase)
                    rows.setdefault((phase, s.label), []).append(drive(s, calls, keep=keep))
            cpu = "; ".join(
                f"{phase} " + "/".join(f"{rows[(phase, s.label)][-1]['cpu']:.2f}" for s in servers)
                for phase in PHASES
            )
            print(f"# round {r + 1}, worker CPU ms/request: {cpu}", flush=True)
        alone: dict[Path, dict[str, float]] = {}  # the app alone, per checkout
        for s in servers:
            if s.path not in alone:
                phases = [p for p in PHASES if p != "healthz, new conn"]
                calls = {p: work.calls(p, scale=0.3)[0] for p in phases}
                alone[s.path] = inprocess(s.path, url, tmp, calls)
        report(rows, servers, alone)
        others = statistics.median(x["others"] for got in rows.values() for x in got)
        print(
            f"load average {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; "
            f"other processes kept {others:.2f} cores busy during the timed phases (median)"
        )
    finally:
        for s in servers:
            s.stop()
        drop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
