"""Where the delivery worker's CPU goes under the webhook benchmark's create load.

Starts what bench/webhooks/run.py starts (gunicorn, 2 workers, PostgreSQL; the verifying
receiver; an endpoint subscribed to user.created), runs the worker in a child process with a
cProfile per worker thread (the loop, the recorder, the senders) and counts its statements and
commits with SQLAlchemy engine events, then prints: the worker's CPU per event (from /proc),
statements and commits per event and per projected batch, the statements by text, and the top
functions by own and cumulative CPU time (each thread's) across threads.

    .venv/bin/python bench/webhooks/profile_worker.py [--creates 1000] [--top 40]
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import json
import os
import pstats
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

_spec = importlib.util.spec_from_file_location("webhooks_run", Path(__file__).with_name("run.py"))
assert _spec is not None and _spec.loader is not None
webhooks_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(webhooks_run)  # puts bench/scim first on sys.path: `run` is its run.py
from run import Harness, log, tool  # noqa: E402


def _child(out: str, profiled: bool, poll: float | None, linger: float | None) -> None:
    """The worker, profiled thread by thread, until SIGTERM; results to `out`."""
    from sqlalchemy import event

    from bridge import delivery
    from bridge.cli.base import Context

    ctx = Context()
    settings = ctx.settings.ensure_secret_key()
    store = ctx.store
    statements: Counter[str] = Counter()
    rows: Counter[str] = Counter()
    commits = [0]

    def on_statement(_conn: Any, _cur: Any, sql: str, params: Any, _ctx: Any, many: bool) -> None:
        key = re.sub(r"\s+", " ", sql)[:110]
        statements[key] += 1
        rows[key] += len(params) if many else 1

    event.listen(store.engine, "before_cursor_execute", on_statement)
    event.listen(store.engine, "commit", lambda _c: commits.__setitem__(0, commits[0] + 1))

    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start_profiling(*_args: Any) -> None:
        profile = cProfile.Profile(time.thread_time)  # CPU, not waits
        with lock:
            profiles.append(profile)
        profile.enable()  # replaces this hook for the thread

    if profiled:
        threading.setprofile(start_profiling)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    tuning = delivery.Tuning()
    if poll is not None:
        tuning = replace(tuning, poll_seconds=poll)
    if linger is not None:
        delivery.Recorder.LINGER = linger
    sender = delivery.Sender(
        store, settings.secret_key or "", settings.base_url, settings.allow_private_webhooks, tuning
    )
    loop = threading.Thread(target=delivery.run, args=(store, sender), kwargs={"stop": stop})
    loop.start()
    while loop.is_alive():
        loop.join(0.2)
    threading.setprofile(None)  # type: ignore[arg-type]
    stats: pstats.Stats | None = None
    for profile in profiles:
        profile.disable()
        if stats is None:
            stats = pstats.Stats(profile)
        else:
            stats.add(profile)
    if stats is not None:
        stats.dump_stats(out + ".pstats")
    Path(out).write_text(
        json.dumps({"statements": statements, "rows": rows, "commits": commits[0]})
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--creates", type=int, default=1000)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--no-profile", action="store_true", help="CPU and statements only")
    parser.add_argument("--poll", type=float, help="the worker's poll seconds (Tuning)")
    parser.add_argument("--linger", type=float, help="the recorder's linger seconds")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, not args.no_profile, args.poll, args.linger)
        return
    harness = Harness()
    server = harness.start_bridge("_whp")
    receiver = webhooks_run.Receiver()
    env = harness.env(server.db, BRIDGE_ALLOW_PRIVATE_WEBHOOKS="1")
    added = subprocess.run(
        [tool("idbridge"), "webhooks", "add", "bench", receiver.url, "--events", "user.created"],
        env=env,
        capture_output=True,
        text=True,
        cwd=harness.root,
        check=True,
    )
    receiver.set_secret(added.stdout.strip().splitlines()[-1])
    out = str(harness.tmp / "profile.json")
    worker = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--child",
            out,
            *(["--no-profile"] if args.no_profile else []),
            *(["--poll", str(args.poll)] if args.poll is not None else []),
            *(["--linger", str(args.linger)] if args.linger is not None else []),
        ],
        env=env,
        cwd=harness.root,
    )
    harness.procs.append(worker)
    webhooks_run.create_load(server, 25)  # warm-up, and the worker is up once these arrived
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(receiver.arrived) < 100:
        time.sleep(0.05)
        receiver.drain()
    before = webhooks_run._cpu_seconds(worker.pid)
    log(f"load {os.getloadavg()[0]:.1f}: {args.creates} creates")
    rate, done = webhooks_run.create_load(server, args.creates // 4)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not set(done) <= set(receiver.arrived):
        time.sleep(0.05)
        receiver.drain()
    cpu = webhooks_run._cpu_seconds(worker.pid) - before
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=120)
    found = json.loads(Path(out).read_text())
    with harness.pg(server.db) as conn:
        failures = conn.execute(
            "SELECT coalesce(status::text, left(error, 60)), count(*)"
            " FROM delivery_attempts WHERE status IS NULL OR status >= 300 GROUP BY 1"
        ).fetchall()
        attempts, p50, p95 = conn.execute(
            "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),"
            " percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) FROM delivery_attempts"
        ).fetchone()
    print(
        f"delivery attempts: {attempts} (send p50 {p50:.0f} ms, p95 {p95:.0f} ms); "
        f"failed ones by status/error: {failures}"
    )
    events = len(done) + 100  # the warm-up's events are in the counts too
    print(
        f"creates/s {rate:.1f}; load {os.getloadavg()[0]:.1f}; "
        f"missing {len(set(done) - set(receiver.arrived))}"
    )
    print(f"worker CPU per event during the load (from /proc): {cpu / len(done) * 1000:.2f} ms")
    total = sum(found["statements"].values())
    print(
        f"statements {total} ({total / events:.2f}/event), commits {found['commits']} "
        f"({found['commits'] / events:.2f}/event), over {events} events (warm-up included)"
    )
    for sql, n in sorted(found["statements"].items(), key=lambda kv: -kv[1]):
        print(f"  {n:6d} x ({found['rows'][sql]:6d} rows)  {sql}")
    if args.no_profile:
        return
    stats = pstats.Stats(out + ".pstats")
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
