"""How long a write holds its account's audit-chain head lock, against the whole write.

Run:  .venv/bin/python bench/audit_head.py [--n N]

Sequential creates through `provisioning.provision` (the SCIM create's service call, no HTTP) on
a fresh PostgreSQL database on 127.0.0.1 (dropped at exit). The head row is locked inside
`audit.record` (SELECT ... FOR NO KEY UPDATE) and released by COMMIT; the time from that
statement to the end of the commit is what every other writer of the same account waits for,
so 1 / (that window) bounds one account's write rate however many instances run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, event, text

import policies
from bridge import accounts, provisioning, schema
from bridge.store import Store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    db = f"bench_audit_head_{os.getpid()}"
    server = "postgresql+psycopg://postgres@127.0.0.1:5432"
    admin = create_engine(f"{server}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db}"'))
    store = Store(f"{server}/{db}")
    try:
        schema.upgrade(store.engine)
        account = accounts.create_account(store, "head", name="head", actor="bench")
        accounts.add_environment(store, "head", "production", default=True, actor="bench")
        held: list[float] = []
        locked_at: list[float] = []  # creates run one at a time: one pending lock at most

        @event.listens_for(store.engine, "after_cursor_execute")
        def _locked(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if "FOR NO KEY UPDATE" in statement:  # audit.record takes the head lock
                locked_at.append(time.perf_counter())

        @event.listens_for(store.sessions, "after_commit")
        def _released(_session: Any) -> None:
            if locked_at:
                held.append(time.perf_counter() - locked_at.pop())

        whole = []
        for i in range(args.n):
            profile = policies.Profile(
                source=policies.Source.SCIM, user_name=f"u{i}@x.test", external_id=f"u{i}"
            )
            start = time.perf_counter()
            provisioning.provision(store, account.id, profile, actor="bench", must_create=True)
            whole.append(time.perf_counter() - start)
        held.sort()
        whole.sort()
        p50, p95 = statistics.median(held), held[int(0.95 * (len(held) - 1))]
        print(
            f"creates {len(whole)}: whole write p50 {1000 * statistics.median(whole):.2f} ms; "
            f"head lock held p50 {1000 * p50:.2f} ms, p95 {1000 * p95:.2f} ms "
            f"({100 * p50 / statistics.median(whole):.1f}% of a write); "
            f"one account's writes bounded near {1 / p50:.0f}/s; "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )
    finally:
        store.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
