"""Where a SCIM GET by id's CPU goes when gunicorn serves it: the bridge against its floors.

    /tmp/v1/bin/python bench/scim/cpu.py [--requests 3000] [--rounds 3] [--app-dir DIR]

bench/scim/run.py's req/s follow the machine's drift and how the 4 clients' connections sat on
the 2 workers (a round split 4-0 runs on one core). CPU per request follows neither: this run
reads, around each round, the CPU time (user + system, /proc) of every thread of every gunicorn
worker (the event loop is the worker's main thread; the others are the app's threads and the
store's log writer), of every PostgreSQL process and of this load generator, and divides by the
round's requests. Servers (run.py's Harness, PostgreSQL, 300 users inserted with SQL): the
bridge, the stack floor (Flask + SQLAlchemy Core, one SELECT) and the HTTP floor (the bare driver)
behind the same gunicorn (floor_app.py), in alternating rounds, 4 keep-alive clients, 400
requests each first to warm. Printed: a line per round and server, then each server's median
over the rounds and the bridge's ratio to each floor. The CPU of the whole machine per request
is what the 2 cores divide among requests: the sum of the three columns is the request's cost.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as R  # bench/scim/run.py: its Harness, load and bulk insert

TICK = os.sysconf("SC_CLK_TCK")
SERVERS = (("bridge", None), ("stack floor", "stack_app"), ("HTTP floor", "app"))


def _cpu(stat_path: str) -> float:
    """Seconds of CPU (user + system) in a /proc stat file."""
    with open(stat_path) as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def workers_cpu(master: int) -> dict[tuple[int, int], float]:
    """Each thread of each worker of `master`: (pid, tid) -> CPU seconds."""
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
    found: dict[tuple[int, int], float] = {}
    for pid in map(int, out.split()):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in map(int, tids):
            with contextlib.suppress(OSError):  # a thread that ended
                found[(pid, tid)] = _cpu(f"/proc/{pid}/task/{tid}/stat")
    return found


def postgres_cpu() -> float:
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
            total += _cpu(f"/proc/{entry}/stat")
        except OSError:
            pass
    return total


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(server: R.Server, items: list[R.Item]) -> dict[str, float | str]:
    """One round: req/s, split, latencies and CPU ms per request."""
    assert server.proc is not None
    before, pg0, me0 = workers_cpu(server.proc.pid), postgres_cpu(), own_cpu()
    result = R.load(server, items)
    after, pg1, me1 = workers_cpu(server.proc.pid), postgres_cpu(), own_cpu()
    if result.errors:
        sys.exit(f"{server.name}: {result.errors[:3]}")
    n = len(items)
    loop = sum(v - before.get(k, 0.0) for k, v in after.items() if k[0] == k[1])
    threads = sum(v - before.get(k, 0.0) for k, v in after.items() if k[0] != k[1])
    return {
        "rps": result.rps,
        "split": " ".join(result.splits) or "?",
        "p50": result.pct(50),
        "p99": result.pct(99),
        "loop": 1000 * loop / n,
        "threads": 1000 * threads / n,
        "worker": 1000 * (loop + threads) / n,
        "postgres": 1000 * (pg1 - pg0) / n,
        "client": 1000 * (me1 - me0) / n,
    }


COLUMNS = ("worker", "loop", "threads", "postgres", "client")


def _all(m: dict[str, float]) -> float:
    """A request's CPU on the whole machine: the worker's, PostgreSQL's and the client's."""
    return m["worker"] + m["postgres"] + m["client"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="per round and server")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--app-dir",
        action="append",
        help="a checkout whose bridge to serve (repeatable: each its own server and database, "
        "in the same rounds; the floors are the first's); default: this one",
    )
    args = parser.parse_args()
    if args.requests < 1 or args.rounds < 1:
        parser.error("--requests and --rounds: at least 1")
    dirs = [Path(d).resolve() for d in args.app_dir or [str(R.ROOT)]]
    harnesses = [R.Harness(d) for d in dirs]
    h = harnesses[0]
    bridges = []
    for i, (harness, d) in enumerate(zip(harnesses, dirs, strict=True)):
        bridge = harness.start_bridge(f"_{i}")
        if len(dirs) > 1:
            bridge.name = f"bridge {i + 1}"
            print(f"bridge {i + 1}: {R.git_state(d)}")
        R.bulk_insert_users(harness, bridge, "cpu", 0, 300)
        bridges.append(bridge)
    lists = {  # each server's GETs: a bridge's of its own users, a floor's of the first's
        b.name: [R.Item("GET", f"/Users/{u[0]}") for u in R.bridge_users(hh, b)]
        for hh, b in zip(harnesses, bridges, strict=True)
    }
    floors = [h.start_floor(bridges[0], name, target) for name, target in SERVERS[1:] if target]
    servers = [*bridges, *floors]
    for floor in floors:
        lists[floor.name] = lists[bridges[0].name]
    rounds: dict[str, list[dict[str, float | str]]] = {s.name: [] for s in servers}
    print(
        f"GET /Users/{{id}}, 4 clients, 2 workers, PostgreSQL; {R.git_state(h.root)}\n"
        f"CPU ms per request: worker = its event loop + its other threads; postgres = every "
        f"PostgreSQL process; client = this load generator"
    )
    header = f"{'server':12s} {'round':>5s} {'req/s':>7s} {'p50':>6s} {'p99':>6s}  " + " ".join(
        f"{c:>8s}" for c in COLUMNS
    )
    print(header)
    for r in range(args.rounds):
        for server in servers:
            mine = lists[server.name]
            R.load(server, mine[:400])  # warm: connections, statements, caches
            row = measure(server, (mine * (args.requests // len(mine) + 1))[: args.requests])
            rounds[server.name].append(row)
            print(
                f"{server.name:12s} {r + 1:5d} {row['rps']:7.0f} {row['p50']:6.2f} "
                f"{row['p99']:6.2f}  "
                + " ".join(f"{row[c]:8.3f}" for c in COLUMNS)
                + f"  split {row['split']}",
                flush=True,
            )
    print("median over the rounds")
    medians = {
        name: {c: statistics.median(float(row[c]) for row in rows) for c in ("rps", *COLUMNS)}
        for name, rows in rounds.items()
    }
    for name, m in medians.items():
        total = _all(m)
        print(
            f"{name:12s} {m['rps']:7.0f} req/s  "
            + " ".join(f"{c} {m[c]:.3f}" for c in COLUMNS)
            + f"  all {total:.3f} ms"
        )
    b = medians[bridges[0].name]
    for name in list(medians)[1:]:
        f = medians[name]
        print(
            f"{bridges[0].name} / {name}: worker {b['worker'] / f['worker']:.2f}x, "
            f"postgres {b['postgres'] / f['postgres']:.2f}x, all {_all(b) / _all(f):.2f}x"
        )
    for harness in harnesses:
        harness.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
