"""Capacity figures for docs/capacity.md: what one gunicorn worker and the PostgreSQL backends
behind it spend per SCIM write, SCIM read and SAML login, and what one account's audit-chain head
costs concurrent writers.

Run:  .venv/bin/python bench/capacity.py [--n N] [--workers W]

A fresh PostgreSQL database on 127.0.0.1:5432 (dropped at exit), 8 accounts with SCIM tokens, a
test IdP (tests/saml_idp) on the first, IdP-initiated and JIT. gunicorn from the repository
(`gunicorn.conf.py`, WEB_CONCURRENCY=W, 4 threads), BRIDGE_METRICS_BIND on a free port. 4 client
threads on keep-alive connections send a fixed number of requests per phase; for each phase:
requests/s, p50/p95 latency, and CPU ms per request of the gunicorn processes and of the
PostgreSQL backends of this database (from /proc), plus the machine's other load. CPU per request
is what sizing needs (the machine is shared, so wall-clock rates understate a quiet core). At the
end the metrics listener is scraped and the counters the load moved are printed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from bridge import accounts, idps, schema  # noqa: E402
from bridge.store import Store  # noqa: E402
from tests.saml_idp import TestIdP  # noqa: E402
from tests.servers import Gunicorn, call, free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
CLIENTS = 4
BASE = "http://bridge.bench"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def ticks(pid: int | str) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def machine() -> int:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


def backends(db: str) -> dict[int, int]:
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if cmd.startswith("postgres:") and f" {db} " in cmd:
                out[int(entry.name)] = ticks(entry.name)
    return out


class Phase:
    """A fixed list of requests sent by CLIENTS threads; timings and CPU per request."""

    def __init__(self, server: Gunicorn, db: str) -> None:
        self.server, self.db = server, db

    def snapshot(self) -> tuple[int, dict[int, int], int]:
        pids = [self.server.proc.pid, *self.server.worker_pids()]
        return sum(ticks(p) for p in pids), backends(self.db), machine()

    def run(self, name: str, requests: list[Callable[[http.client.HTTPConnection], int]]) -> dict:
        latencies: list[float] = []
        bad: list[int] = []
        lock = threading.Lock()
        queue = iter(range(len(requests)))

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=60)
            while True:
                with lock:
                    i = next(queue, None)
                if i is None:
                    break
                t = time.perf_counter()
                try:
                    status = requests[i](conn)
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=60)
                    status = 0
                with lock:
                    latencies.append(time.perf_counter() - t)
                    if status == 0 or (status >= 300 and status != 302):
                        bad.append(status)
            conn.close()

        app0, pg0, m0 = self.snapshot()
        start = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        app1, pg1, m1 = self.snapshot()
        n = len(requests)
        app = (app1 - app0) / TICK
        pg = sum(t - pg0.get(pid, 0) for pid, t in pg1.items()) / TICK
        others = max(0.0, (m1 - m0) / TICK - app - pg - 0.0)
        latencies.sort()
        row = {
            "phase": name,
            "n": n,
            "errors": len(bad),
            "req_s": n / wall,
            "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * latencies[int(0.95 * (n - 1))],
            "app_cpu_ms": 1000 * app / n,
            "pg_cpu_ms": 1000 * pg / n,
            "other_cores": others / wall,
        }
        print(
            f"{name:<34} n={n:<5} err={len(bad):<3} {row['req_s']:7.1f} req/s  "
            f"p50 {row['p50_ms']:6.1f} ms  p95 {row['p95_ms']:6.1f} ms  "
            f"app {row['app_cpu_ms']:5.2f} ms/req  pg {row['pg_cpu_ms']:5.2f} ms/req  "
            f"other load {row['other_cores']:.2f} cores",
            flush=True,
        )
        if bad:
            print(f"   statuses of errors: {sorted(set(bad))}", flush=True)
        return row


def send(method: str, path: str, body: object = None, headers: dict | None = None):
    data = json.dumps(body) if isinstance(body, dict) else body

    def request(conn: http.client.HTTPConnection) -> int:
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        return resp.status

    return request


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=600, help="requests per write phase (reads: 3x)")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    n = args.n
    db = f"bench_capacity_{os.getpid()}"
    admin = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{db}"'))
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
    store = Store(url)
    server = None
    instance = None
    try:
        schema.upgrade(store.engine)
        tokens = []
        for i in range(8):
            accounts.create_account(store, f"cap{i}", name=f"cap{i}", actor="bench")
            accounts.add_environment(store, f"cap{i}", "production", default=True, actor="bench")
            tokens.append(accounts.issue_token(store, f"cap{i}", actor="bench").raw)
        with store.engine.connect() as conn:
            empty = conn.execute(text("SELECT pg_database_size(current_database())")).scalar()
        idp = TestIdP()
        idps.add(store, "cap0", idp.metadata_xml(), name="t", allow_idp_initiated=True, actor="b")
        metrics_port = free_port()
        instance = Path(tempfile.mkdtemp(prefix=f"{db}-"))
        server = Gunicorn(
            url,
            instance,
            workers=args.workers,
            env={
                "BRIDGE_BASE_URL": BASE,
                "BRIDGE_METRICS_BIND": f"127.0.0.1:{metrics_port}",
                "BRIDGE_SECRET_KEY": secrets.token_hex(32),
            },
        ).start()
        print(
            f"# gunicorn workers={args.workers} threads=4, {CLIENTS} clients, database {db}; "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
            flush=True,
        )
        phase = Phase(server, db)

        def scim(i: int) -> dict[str, str]:
            return {
                "Authorization": f"Bearer {tokens[i]}",
                "Content-Type": "application/scim+json",
            }

        def user(name: str) -> dict:
            return {
                "schemas": [USER],
                "userName": name,
                "externalId": name,
                "name": {"givenName": "Bench", "familyName": name.split("@")[0]},
                "emails": [{"value": name, "type": "work", "primary": True}],
            }

        phase.run(  # warm-up: imports, pools, the first SP key
            "warm-up (not counted)",
            [send("POST", "/scim/v2/Users", user(f"w{i}@x.test"), scim(7)) for i in range(40)],
        )
        rows = [
            phase.run(
                "SCIM create, 1 account",
                [send("POST", "/scim/v2/Users", user(f"a{i}@x.test"), scim(0)) for i in range(n)],
            ),
            phase.run(
                "SCIM create, 8 accounts",
                [
                    send("POST", "/scim/v2/Users", user(f"b{i}@x.test"), scim(i % 8))
                    for i in range(n)
                ],
            ),
        ]
        ids = []
        reply = call(server.port, "GET", "/scim/v2/Users?count=200&attributes=id", headers=scim(0))
        ids = [r["id"] for r in reply.json()["Resources"]]
        rows.append(
            phase.run(
                "SCIM read by id",
                [
                    send("GET", f"/scim/v2/Users/{ids[i % len(ids)]}", None, scim(0))
                    for i in range(3 * n)
                ],
            )
        )
        rows.append(
            phase.run(
                "SCIM filter userName eq",
                [
                    send(
                        "GET",
                        f"/scim/v2/Users?filter=userName%20eq%20%22a{i % n}@x.test%22",
                        None,
                        scim(0),
                    )
                    for i in range(3 * n)
                ],
            )
        )
        group = call(
            server.port,
            "POST",
            "/scim/v2/Groups",
            body={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "g"},
            headers=scim(0),
        ).json()["id"]
        patch = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
        rows.append(
            phase.run(
                "SCIM PATCH add 1 member",
                [
                    send(
                        "PATCH",
                        f"/scim/v2/Groups/{group}",
                        {
                            "schemas": [patch],
                            "Operations": [
                                {"op": "add", "path": "members", "value": [{"value": ids[i]}]}
                            ],
                        },
                        scim(0),
                    )
                    for i in range(min(len(ids), n))
                ],
            )
        )

        def login(name: str):
            xml = idp.response(
                destination=f"{BASE}/saml/cap0/acs",
                audience=f"{BASE}/saml/cap0/metadata",
                name_id=name,
                attributes={"email": [name]},
            )
            form = urlencode(idp.post_form(xml))
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            return send("POST", "/saml/cap0/acs", form, headers)

        half = max(50, n // 2)
        rows.append(
            phase.run("SAML first login (JIT)", [login(f"s{i}@x.test") for i in range(half)])
        )
        rows.append(phase.run("SAML returning login", [login(f"s{i}@x.test") for i in range(half)]))
        with store.engine.connect() as conn:
            size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar()
            users = conn.execute(text("SELECT count(*) FROM users")).scalar()
            events = conn.execute(text("SELECT count(*) FROM audit_events")).scalar()
        print(
            f"# database: {size / 2**20:.1f} MiB for {users} users and {events} audit events, "
            f"{(size - empty) / max(users, 1) / 1024:.1f} KiB per user over the empty schema "
            f"({empty / 2**20:.1f} MiB)",
            flush=True,
        )
        text_ = call(metrics_port, "GET", "/metrics").body.decode()
        print("# metrics listener after the run (selected series):")
        for line in text_.splitlines():
            if line.startswith(
                (
                    "bridge_scim_operations_total",
                    "bridge_saml_logins_total",
                    "bridge_provisioning_changes_total",
                    "bridge_audit_appends_total",
                    "bridge_store_write_retries_total",
                    "bridge_db_pool_connections_in_use",
                    "bridge_policy_evaluations_total",
                )
            ):
                print("  " + line)
        print("# json " + json.dumps(rows))
    finally:
        if server is not None:
            server.stop()
        store.dispose()
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()
        if instance is not None:
            shutil.rmtree(instance, ignore_errors=True)


if __name__ == "__main__":
    main()
