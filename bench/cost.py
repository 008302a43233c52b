"""What one request costs the app: CPU ms and SQL statements per hot path, in one process.

    .venv/bin/python bench/cost.py [--database-url URL] [-n 200]
    PYTHONPATH=/tmp/other-checkout .venv/bin/python bench/cost.py   # another checkout's code

Through Flask's test client (no HTTP, no gunicorn, one thread), on a fresh SQLite file or a
fresh PostgreSQL database beside --database-url: SCIM create, GET by id, filter userName eq, a
page of 100 users, PATCH of one group member, first and returning SAML logins (IdP-initiated,
responses signed ahead). CPU time (time.process_time) is the app's own and barely moves with
the machine's load, so two checkouts can be compared run after run where req/s cannot;
PostgreSQL's own CPU is not in it (the wall time, which moves with load, includes it). Two
floors come first: GET /healthz (Flask, no database) and GET ServiceProviderConfig (a SCIM
request with no resource: the token's read and the request log's row). Statements are counted
with a before_cursor_execute listener over the first tenth of each path's requests (no BEGIN or
COMMIT is seen: bridge.store sends SQLite's straight to the driver), CPU timed over the rest
without it (with a listener, SQLite's statements go through SQLAlchemy: bridge.driver).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the tests' IdP (tests/saml_idp)
    sys.path.append(str(ROOT))

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BASE = "http://127.0.0.1:8000"
FORM = "application/x-www-form-urlencoded"


def fresh_database(
    url: str | None, tmp: Path, label: str = "cost"
) -> tuple[str, Callable[[], None]]:
    """A SQLite file in `tmp`, or a new PostgreSQL database beside `url`; and how to drop it."""
    if not url:
        return f"sqlite:///{tmp / label}.db", lambda: None
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"bench_{label}_{os.getpid()}"
    admin = create_engine(make_url(url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(url).set(database=name).render_as_string(hide_password=False), drop


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database-url", help="a PostgreSQL server URL (default: SQLite)")
    ap.add_argument("-n", type=int, default=200, help="requests per path")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_cost_"))
    url, drop = fresh_database(args.database_url, tmp)
    try:
        return run(url, tmp, args.n)
    finally:
        drop()


def bridge_app(url: str, tmp: Path, slug: str = "cost") -> tuple[Any, Any, str]:
    """The app on a migrated database at `url`, with account `slug` and a SCIM token for it."""
    from bridge import accounts, create_app, schema
    from bridge.settings import Settings
    from bridge.store import Store

    (tmp / "policies").mkdir()
    store = Store(url)
    schema.upgrade(store.engine)
    store.dispose()
    settings = Settings.from_env(
        {"BRIDGE_LOG_LEVEL": "WARNING"},
        database_url=url,
        instance_path=tmp,
        policy_dir=tmp / "policies",
    )
    app = create_app(settings)
    app_store = app.extensions["bridge.store"]
    accounts.create_account(app_store, slug, actor="bench")
    accounts.add_environment(app_store, slug, "production", default=True, actor="bench")
    return app, app_store, accounts.issue_token(app_store, slug, actor="bench").raw


def run(url: str, tmp: Path, n: int) -> int:
    from sqlalchemy import event

    import bridge
    from bridge import accounts, idps
    from tests.saml_idp import TestIdP

    slug = "cost"
    app, app_store, token = bridge_app(url, tmp, slug)
    idp = TestIdP()
    idps.add(app_store, slug, idp.metadata_xml(), name="test", actor="bench")

    def allow(db: Any) -> None:
        idps.get(db, accounts.get_account(db, slug).id, "test").allow_idp_initiated = True

    app_store.write(allow)
    client = app.test_client()
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    statements = [0]

    def counted(*_args: Any) -> None:
        statements[0] += 1

    def scim(method: str, path: str, body: Any = None, **query: str) -> Any:
        data = None if body is None else json.dumps(body)
        return client.open(
            f"/scim/v2/{path}", method=method, headers=auth, data=data, query_string=query
        )

    def user(i: int) -> dict[str, Any]:
        return {
            "userName": f"user{i:06d}@cost.example",
            "externalId": f"ext-{i:06d}",
            "name": {"givenName": "Cost", "familyName": f"User{i}"},
            "emails": [{"value": f"user{i:06d}@cost.example", "type": "work", "primary": True}],
        }

    def form(name: str) -> str:
        """The signed response's form, encoded before it is timed: the test client encodes a
        dict character by character (urllib's quote), a cost of the client, not of the app."""
        xml = idp.response(
            name_id=name,
            destination=f"{BASE}/saml/{slug}/acs",
            audience=f"{BASE}/saml/{slug}/metadata",
            attributes={"email": [name], "givenName": ["Cost"]},
        )
        return urlencode(idp.post_form(xml))

    def post(body: str) -> Any:
        return client.post(f"/saml/{slug}/acs", data=body, content_type=FORM)

    results: dict[str, tuple[float, float, float]] = {}

    def measure(label: str, calls: list[Callable[[], Any]], ok: int) -> None:
        """Statements counted over the first tenth of the calls, CPU timed over the rest: with
        a listener on the engine SQLite's statements go through SQLAlchemy (bridge.driver)."""
        cpu: list[float] = []
        wall: list[float] = []
        first = max(1, len(calls) // 10)
        statements[0] = 0
        had_events = app_store.engine._has_events
        event.listen(app_store.engine, "before_cursor_execute", counted)
        try:
            for call in calls[:first]:
                resp = call()
                assert resp.status_code == ok, (label, resp.status_code, resp.get_data()[:300])
        finally:
            event.remove(app_store.engine, "before_cursor_execute", counted)
            # SQLAlchemy keeps the flag once set, and then dispatches every step of every
            # statement to the (now empty) listener lists
            app_store.engine._has_events = had_events
        for call in calls[first:]:
            t0, w0 = time.process_time(), time.perf_counter()
            resp = call()
            cpu.append((time.process_time() - t0) * 1000)
            wall.append((time.perf_counter() - w0) * 1000)
            assert resp.status_code == ok, (label, resp.status_code, resp.get_data()[:300])
        median = statistics.median if cpu else lambda _values: float("nan")  # -n 1: none timed
        results[label] = (median(cpu), statements[0] / first, median(wall))

    scim("GET", "Users", count="1")  # the token's last-used write, the log's purge
    # floors: Flask alone (no database), and a SCIM request with no resource (token + log row)
    measure("floor: GET /healthz", [lambda: client.get("/healthz") for _ in range(n)], 200)
    measure(
        "floor: SCIM SP config",
        [lambda: scim("GET", "ServiceProviderConfig") for _ in range(n)],
        200,
    )
    measure("SCIM create", [lambda i=i: scim("POST", "Users", user(i)) for i in range(n)], 201)
    ids = [r["id"] for r in scim("GET", "Users", count=str(n)).json["Resources"]]
    measure("SCIM GET by id", [lambda u=u: scim("GET", f"Users/{u}") for u in ids], 200)
    measure(
        "SCIM filter userName eq",
        [
            lambda i=i: scim("GET", "Users", filter=f'userName eq "user{i:06d}@cost.example"')
            for i in range(n)
        ],
        200,
    )
    measure(
        "SCIM page of 100 users",
        [
            lambda i=i: scim("GET", "Users", count="100", startIndex=str(1 + i % 2 * 50))
            for i in range(n)
        ],
        200,
    )
    group = scim("POST", "Groups", {"displayName": "cost"}).json["id"]

    def member(op: str, uid: str) -> Callable[[], Any]:
        path = "members" if op == "add" else f'members[value eq "{uid}"]'
        value = {"value": [{"value": uid}]} if op == "add" else {}
        body = {"schemas": [PATCH_OP], "Operations": [{"op": op, "path": path, **value}]}
        return lambda: scim("PATCH", f"Groups/{group}", body)

    measure(
        "SCIM PATCH one member",
        [member("add", u) for u in ids[: n // 2]] + [member("remove", u) for u in ids[: n // 2]],
        204,
    )
    names = [f"login{i:06d}@cost.example" for i in range(n)]
    first = [form(name) for name in names]
    again = [form(name) for name in names]
    measure(
        "SAML first login",
        [lambda f=f: post(f) for f in first],
        302,
    )
    measure(
        "SAML returning login",
        [lambda f=f: post(f) for f in again],
        302,
    )
    app_store.dispose()
    kind = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    print(f"cost per request, {kind}, {n} each, code from {Path(bridge.__file__).parents[1]}")
    print(f"{'path':<26} {'CPU ms (median)':>16} {'statements':>11} {'wall ms (median)':>17}")
    for label, (cpu_ms, stmts, wall_ms) in results.items():
        print(f"{label:<26} {cpu_ms:>16.2f} {stmts:>11.1f} {wall_ms:>17.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
