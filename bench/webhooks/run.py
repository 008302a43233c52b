"""Webhook benchmark: how fast SCIM-created users reach a local webhook receiver, and what the
webhook path costs SCIM creates.

Rounds interleaved on one bridge (gunicorn, 2 workers, PostgreSQL): "off" (no endpoint, no
worker) and "on" (an endpoint subscribed to user.created, one `idbridge worker`). Each round
4 client threads create users over SCIM; the receiver verifies every delivery with the
`standardwebhooks` package and stamps its arrival. Latency = arrival - the 201 of the create.
Targets: p99 <= 1 s; "on" create throughput >= 90 % of "off" (same run).

    .venv/bin/python bench/webhooks/run.py [--quick]
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from standardwebhooks import Webhook

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scim"))
from run import CLIENTS, Harness, Server, log, tool


class Receiver:
    def __init__(self) -> None:
        self.secret = ""
        self.arrived: dict[str, float] = {}
        self.bad = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                now = time.monotonic()
                try:
                    payload = Webhook(outer.secret).verify(body, dict(self.headers.items()))
                    with outer.lock:
                        outer.arrived.setdefault(payload["data"]["user"]["id"], now)
                    code = 204
                except Exception:
                    with outer.lock:
                        outer.bad += 1
                    code = 400
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


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


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]  # nearest rank


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds, per_client = (2, 100) if args.quick else (3, 300)
    harness = Harness()
    server = harness.start_bridge("_wh")
    receiver = Receiver()
    env = harness.env(server.db, BRIDGE_ALLOW_PRIVATE_WEBHOOKS="1")
    off: list[float] = []
    on: list[float] = []
    latencies: list[float] = []
    missing = 0
    create_load(server, 25)  # warm-up
    for r in range(rounds):
        for mode in ("off", "on"):
            log(f"round {r + 1}/{rounds} {mode} (load {os.getloadavg()[0]:.1f})")
            if mode == "off":
                rate, _ = create_load(server, per_client)
                off.append(rate)
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
                check=True,
                cwd=harness.root,
            )
            receiver.secret = out.stdout.strip().splitlines()[-1]
            endpoint = out.stdout.split()[2]
            worker = subprocess.Popen(
                [tool("idbridge"), "worker"], env=env, cwd=harness.root, stderr=subprocess.DEVNULL
            )
            harness.procs.append(worker)
            time.sleep(1.0)  # the worker is up before the load starts
            rate, done = create_load(server, per_client)
            on.append(rate)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not set(done) <= set(receiver.arrived):
                time.sleep(0.05)
            for user_id, at in done.items():
                if user_id in receiver.arrived:
                    latencies.append(receiver.arrived[user_id] - at)
                else:
                    missing += 1
            worker.terminate()
            worker.wait(timeout=60)
            subprocess.run(
                [tool("idbridge"), "webhooks", "remove", "bench", endpoint],
                env=env,
                capture_output=True,
                check=True,
                cwd=harness.root,
            )
    ratio = statistics.median(on) / statistics.median(off)
    p99 = pct(latencies, 0.99)
    print(
        f"SCIM creates/s, no webhooks (median of {rounds}): {statistics.median(off):.1f}  "
        f"rounds {[round(x, 1) for x in off]}"
    )
    print(
        f"SCIM creates/s, webhook + worker:              {statistics.median(on):.1f}  "
        f"rounds {[round(x, 1) for x in on]}"
    )
    print(
        f"throughput ratio on/off: {ratio:.3f}  "
        f"{'PASS' if ratio >= 0.90 else 'MISS'} (target >= 0.90)"
    )
    print(
        f"event latency (create 201 -> receiver), {len(latencies)} events: "
        f"p50 {pct(latencies, 0.5) * 1000:.0f} ms, p95 {pct(latencies, 0.95) * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms  "
        f"{'PASS' if p99 <= 1.0 and not missing else 'MISS'} (target p99 <= 1000 ms)"
    )
    print(f"missing deliveries: {missing}, bad signatures: {receiver.bad}")


if __name__ == "__main__":
    main()
