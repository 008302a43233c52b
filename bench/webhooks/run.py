"""Webhook benchmark: how fast SCIM-created users reach a local webhook receiver, and what the
webhook path costs SCIM creates.

Rounds interleaved on one bridge (gunicorn, 2 workers, PostgreSQL): "off" (no endpoint, no
worker) and "on" (an endpoint subscribed to user.created, one `idbridge worker`). Each round
4 client threads create users over SCIM; the receiver verifies every delivery with the
`standardwebhooks` package and stamps its arrival. Latency = arrival - the 201 of the create.
Targets: p99 <= 1 s; "on" create throughput >= 90 % of "off" (same run). Also printed: the
worker's CPU per event and gunicorn's own CPU per create in each mode (from /proc): on 2 shared
cores the worker, the receiver and PostgreSQL take CPU from gunicorn, so the throughput ratio
mixes what webhooks cost a create (gunicorn's CPU per create, on vs off) with box contention.

    .venv/bin/python bench/webhooks/run.py [--quick] [--baseline OTHER_CHECKOUT]
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import multiprocessing
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scim"))
from run import CLIENTS, Harness, Server, log, tool


def _verified(secret: str, body: bytes, headers: dict[str, str]) -> Any:
    """The payload if `secret` signed this delivery, else None."""
    try:
        return Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return None


def _receive(secret_queue: Any, arrivals: Any, port_out: Any) -> None:
    """The receiver, in its own process (a real receiver is another service: it must not share
    the load clients' interpreter lock): verifies each delivery, reports (user id, arrival)."""
    secrets: list[str] = [secret_queue.get()]  # every round's endpoint secret, newest last

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as production web servers do

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            now = time.monotonic()
            while not secret_queue.empty():
                secrets.append(secret_queue.get())
            headers = dict(self.headers.items())
            found = next(
                (
                    (age, payload)
                    for age, secret in enumerate(reversed(secrets))
                    if (payload := _verified(secret, body, headers)) is not None
                ),
                None,
            )
            if found is None:
                arrivals.put(("bad", now))
            else:
                # signed with an earlier round's secret: a send the worker gave up on (its
                # timeout) that this receiver read only after the next round had begun
                age, payload = found
                arrivals.put(("late", now) if age else (payload["data"]["user"]["id"], now))
            code = 400 if found is None else 204
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port_out.put(server.server_port)
    server.serve_forever()


class Receiver:
    def __init__(self) -> None:
        self.secrets: Any = multiprocessing.Queue()
        self.arrivals: Any = multiprocessing.Queue()
        port: Any = multiprocessing.Queue()
        self.secrets.put("whsec_" + "A" * 43 + "=")
        self.proc = multiprocessing.Process(
            target=_receive, args=(self.secrets, self.arrivals, port), daemon=True
        )
        self.proc.start()
        self.url = f"http://127.0.0.1:{port.get(timeout=30)}/hook"
        self.arrived: dict[str, float] = {}
        self.bad = 0
        self.late = 0

    def set_secret(self, secret: str) -> None:
        self.secrets.put(secret)

    def drain(self) -> None:
        while not self.arrivals.empty():
            user_id, at = self.arrivals.get()
            if user_id == "bad":
                self.bad += 1
            elif user_id == "late":
                self.late += 1
            else:
                self.arrived.setdefault(user_id, at)


def create_load(server: Server, per_client: int) -> tuple[float, dict[str, float]]:
    """CLIENTS threads creating users; (creates per second, user id -> time its 201 came)."""
    done: dict[str, float] = {}
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        headers = {
            "Authorization": f"Bearer {server.token}",
            "Content-Type": "application/scim+json",
        }
        for _ in range(per_client):
            body = json.dumps({"userName": f"{uuid.uuid4().hex}@bench.example"})
            conn.request("POST", "/scim/v2/Users", body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 201:
                raise RuntimeError(f"create -> {resp.status}: {data[:200]!r}")
            with lock:
                done[json.loads(data)["id"]] = time.monotonic()
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(done) / (time.monotonic() - started), done


def _cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (Linux /proc): less sensitive to a busy machine than
    wall-clock throughput."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _gunicorn_cpu(master: int) -> float:
    """CPU seconds of the gunicorn master and its workers: what the SCIM creates themselves cost,
    apart from the worker, the receiver and the database sharing the machine with them."""
    total = _cpu_seconds(master)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[1]) == master:
                total += _cpu_seconds(int(stat.parent.name))
        except (OSError, ValueError):  # a process that ended while we looked
            continue
    return total


WORKER_APP = "bench-webhooks-worker"  # the worker's backends' application_name (PGAPPNAME)


def _pg_cpu(harness: Any, db: str, app: str | None = None) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend serving the bench's database (PostgreSQL runs on
    this machine): the database's own work for the creates and, in "on" rounds, the worker
    (with `app`, only the backends of that application_name)."""
    with harness.pg() as conn:
        pids = [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
                " AND (%s::text IS NULL OR application_name = %s)",
                (db, app, app),
            )
        ]
    found: dict[int, float] = {}
    for pid in pids:
        try:
            found[pid] = _cpu_seconds(pid)
        except OSError:  # ended while we looked
            continue
    return found


def _pg_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU the backends used between two looks (a backend new since the first counts whole;
    one that ended before the second is lost: the bench keeps its backends open)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]  # nearest rank


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also run rounds whose worker is another checkout's code (DIR first on its "
        "PYTHONPATH; the same bridge, database and receiver): a same-run comparison of two "
        "workers, since this machine's load moves every figure more than a change does",
    )
    args = parser.parse_args()
    rounds, per_client = (2, 50) if args.quick else (3, 250)
    modes = ("off", "on", "base") if args.baseline else ("off", "on")
    harness = Harness()
    server = harness.start_bridge("_wh")
    receiver = Receiver()
    env = harness.env(server.db, BRIDGE_ALLOW_PRIVATE_WEBHOOKS="1")
    rates: dict[str, list[float]] = {mode: [] for mode in modes}  # creates per second
    web_cpu: dict[str, list[float]] = {mode: [] for mode in modes}  # gunicorn's CPU per create
    pg_cpu: dict[str, list[float]] = {mode: [] for mode in modes}  # PostgreSQL's, likewise
    # per worker mode, per round: the worker's CPU ms per event delivered, the bench receiver's
    # (not the bridge's), PostgreSQL's for the worker's own backends; latencies of all rounds
    worker_cpu: dict[str, list[float]] = {mode: [] for mode in modes[1:]}
    receiver_cpu: dict[str, list[float]] = {mode: [] for mode in modes[1:]}
    pg_worker: dict[str, list[float]] = {mode: [] for mode in modes[1:]}
    latencies: dict[str, list[float]] = {mode: [] for mode in modes[1:]}
    missing = attempts = 0
    assert server.proc is not None
    failures: list[Any] = []
    create_load(server, 25)  # warm-up
    for r in range(rounds):
        for mode in modes:
            log(f"round {r + 1}/{rounds} {mode} (load {os.getloadavg()[0]:.1f})")
            if mode == "off":
                web_before = _gunicorn_cpu(server.proc.pid)
                pg_before = _pg_cpu(harness, server.db)
                rate, done = create_load(server, per_client)
                web_cpu["off"].append((_gunicorn_cpu(server.proc.pid) - web_before) / len(done))
                pg_cpu["off"].append(_pg_spent(pg_before, _pg_cpu(harness, server.db)) / len(done))
                rates["off"].append(rate)
                continue
            out = subprocess.run(
                [
                    tool("idbridge"),
                    "webhooks",
                    "add",
                    "bench",
                    receiver.url,
                    "--events",
                    "user.created",
                ],
                env=env,
                capture_output=True,
                text=True,
                cwd=harness.root,
            )
            if out.returncode != 0:
                raise RuntimeError(f"webhooks add failed: {out.stderr}")
            receiver.set_secret(out.stdout.strip().splitlines()[-1])
            endpoint = out.stdout.split()[2]
            worker_env = {**env, "PGAPPNAME": WORKER_APP}
            if mode == "base":
                path = os.pathsep.join(p for p in (args.baseline, env.get("PYTHONPATH")) if p)
                worker_env["PYTHONPATH"] = path
            worker = subprocess.Popen(
                [tool("idbridge"), "worker"],
                env=worker_env,
                cwd=harness.root,
                stderr=subprocess.DEVNULL,
            )
            harness.procs.append(worker)
            # The worker is up (its first delivery arrived) before the load starts.
            _, warm = create_load(server, 1)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not set(warm) <= set(receiver.arrived):
                time.sleep(0.05)
                receiver.drain()
            cpu_before = _cpu_seconds(worker.pid)
            receiver_before = _cpu_seconds(receiver.proc.pid)
            web_before = _gunicorn_cpu(server.proc.pid)
            pg_before = _pg_cpu(harness, server.db)
            worker_pg_before = _pg_cpu(harness, server.db, WORKER_APP)
            rate, done = create_load(server, per_client)
            web_cpu[mode].append((_gunicorn_cpu(server.proc.pid) - web_before) / len(done))
            rates[mode].append(rate)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not set(done) <= set(receiver.arrived):
                time.sleep(0.05)
                receiver.drain()
            # the database's CPU until the last delivery arrived: the worker's statements too
            pg_cpu[mode].append(_pg_spent(pg_before, _pg_cpu(harness, server.db)) / len(done))
            worker_pg = _pg_spent(worker_pg_before, _pg_cpu(harness, server.db, WORKER_APP))
            pg_worker[mode].append(worker_pg / len(done) * 1000)
            worker_cpu[mode].append((_cpu_seconds(worker.pid) - cpu_before) / len(done) * 1000)
            received = _cpu_seconds(receiver.proc.pid) - receiver_before
            receiver_cpu[mode].append(received / len(done) * 1000)
            for user_id, at in done.items():
                if user_id in receiver.arrived:
                    latencies[mode].append(receiver.arrived[user_id] - at)
                else:
                    missing += 1
            worker.terminate()  # it records what it sent before it exits
            worker.wait(timeout=60)
            with harness.pg(server.db) as conn:  # before the endpoint (and its log) goes
                failures += conn.execute(
                    "SELECT coalesce(status::text, left(error, 60)), count(*)"
                    " FROM delivery_attempts WHERE status IS NULL OR status >= 300 GROUP BY 1"
                ).fetchall()
                attempts += conn.execute("SELECT count(*) FROM delivery_attempts").fetchone()[0]
            subprocess.run(
                [tool("idbridge"), "webhooks", "remove", "bench", endpoint],
                env=env,
                capture_output=True,
                check=True,
                cwd=harness.root,
            )
    _report(modes, rounds, rates, web_cpu, pg_cpu, worker_cpu, receiver_cpu, pg_worker, latencies)
    print(
        f"missing deliveries: {missing}{' (a MISS)' if missing else ''}, "
        f"bad signatures: {receiver.bad}, signed for an earlier round (read late): {receiver.late}"
    )
    print(f"delivery attempts: {attempts}; failed ones by status/error: {failures}")


def _ms(values: list[float], scale: float = 1.0) -> str:
    return f"median {statistics.median(values) * scale:.2f} ms  rounds " + str(
        [round(x * scale, 2) for x in values]
    )


def _report(
    modes: tuple[str, ...],
    rounds: int,
    rates: dict[str, list[float]],
    web_cpu: dict[str, list[float]],
    pg_cpu: dict[str, list[float]],
    worker_cpu: dict[str, list[float]],
    receiver_cpu: dict[str, list[float]],
    pg_worker: dict[str, list[float]],
    latencies: dict[str, list[float]],
) -> None:
    """The figures per mode; "on" is this checkout's worker, "base" the --baseline one's."""
    off = statistics.median(rates["off"])
    print(
        f"SCIM creates/s, no webhooks (median of {rounds}): {off:.1f}  "
        f"rounds {[round(x, 1) for x in rates['off']]}"
    )
    for mode in modes[1:]:
        tag = "" if mode == "on" else " (baseline worker)"
        ratio = statistics.median(rates[mode]) / off
        values = latencies[mode]
        p99 = pct(values, 0.99)
        print(
            f"SCIM creates/s, webhook + worker{tag}: {statistics.median(rates[mode]):.1f}  "
            f"rounds {[round(x, 1) for x in rates[mode]]}"
        )
        print(
            f"  throughput ratio {mode}/off: {ratio:.3f}  "
            f"{'PASS' if ratio >= 0.90 else 'MISS'} (target >= 0.90); per-round pairs "
            f"{[round(x / y, 3) for x, y in zip(rates[mode], rates['off'], strict=True)]}"
        )
        print(
            f"  event latency (create 201 -> receiver), {len(values)} events: "
            f"p50 {pct(values, 0.5) * 1000:.0f} ms, p95 {pct(values, 0.95) * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms, max {max(values) * 1000:.0f} ms  "
            f"{'PASS' if p99 <= 1.0 else 'MISS'} (target p99 <= 1000 ms)"
        )
        print(f"  worker CPU per event (user+system, from /proc): {_ms(worker_cpu[mode])}")
        print(f"  PostgreSQL CPU per event, the worker's backends: {_ms(pg_worker[mode])}")
        print(f"  bench receiver CPU per event (it shares the cores): {_ms(receiver_cpu[mode])}")
    for mode in modes:
        print(f"gunicorn CPU per create, {mode} (master + workers): {_ms(web_cpu[mode], 1000)}")
    for mode in modes:
        print(f"PostgreSQL CPU per create, {mode} (the bench database): {_ms(pg_cpu[mode], 1000)}")
    web = statistics.median(web_cpu["off"])
    print(
        "gunicorn CPU per create on/off: "
        + ", ".join(f"{m} {statistics.median(web_cpu[m]) / web:.3f}" for m in modes[1:])
    )


if __name__ == "__main__":
    main()
