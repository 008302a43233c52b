"""Where a SAML login's CPU goes: python3-saml's own floor, the floors under the app, and the rest.

    .venv/bin/python bench/saml/login_floor.py [--database-url URL] [-n 200]

In one process, one thread, no HTTP: each login is a prebuilt WSGI environ (the IdP's POST form,
signed ahead by tests/saml_idp) handed to the bridge's Flask app with all its hooks, on a fresh
SQLite file or a fresh PostgreSQL database beside --database-url; account "floor" with one test
IdP, IdP-initiated logins allowed, JIT on. Two workloads: first logins (new users) and returning
logins (the same users again, attributes unchanged). CPU is time.process_time (the app's own;
it barely moves with the machine's load). Printed per login, for both workloads:

- **bridge**: the whole login's CPU and wall (medians), its statements and transaction ends.
- **python3-saml floor**: `OneLogin_Saml2_Response` + `is_valid(raise_exceptions=True)` +
  `get_nameid()` + `get_attributes()` on the same response, with the very settings object the
  app validates with (saml.sso.settings: same switches, XSD cache as in the app), request by
  request alternating with the app. This is the denominator of issue 14's logins/floor ratio.
- **framework floor**: GET /healthz through the same app (Flask, Werkzeug, every app-wide hook).
- **DB floor**: the very statements the login sent (captured with engine events), replayed
  through the bare driver (sqlite3 / psycopg: execute, fetchall, commit) on a copy of the
  database as it was before the workload: CPU and wall (PostgreSQL's own work is in the wall);
  and the same SQL through SQLAlchemy sessions (no statement building, no ORM objects).
- **the ratio at the floors**: python3-saml / (python3-saml + framework + driver): the best the
  ratio can be in this process if everything of ours cost nothing; and what 0.7x allows: the
  CPU a login may take (floor / 0.7) and what is left of it above the three floors.
- **where the rest goes**: a second pass (new users, then them again) sampled every 0.5 ms by a
  thread reading the main thread's CPU clock and stack (bench/floor.py's sampler, with layers for
  python3-saml, its schema check as saml.sso caches it included, and regions for the login's
  parts); each sample is charged to the innermost
  non-stdlib frame's layer and, below our code, to the innermost region it runs in; shares of the
  sampled CPU, scaled to the unsampled medians.

Through gunicorn (bench/saml/run.py) a login also pays HTTP parsing and the worker's own loop,
which this leaves out; the ratios there are lower still.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]

import floor  # noqa: E402
from cost import BASE, bridge_app, fresh_database  # noqa: E402
from floor import Capture, call, layer_of, replayed, snapshot  # noqa: E402

SLUG = "floor"
KINDS = ("first", "returning")
TARGET = 0.7  # issue 14: logins per worker >= 0.7x python3-saml's is_valid floor

# (file suffix, function or None) -> region; the innermost match wins
REGIONS = (
    ("saml/sso.py", "validate", "validation: our checks"),
    ("saml/sso.py", "inspect", "validation: our checks"),
    ("saml/sso.py", "decode", "validation: our checks"),
    ("saml/sso.py", "claim", "replay cache"),
    ("saml/views.py", "_account", "account, IdPs, SP keys read"),
    ("saml/views.py", "_idp_for", "account, IdPs, SP keys read"),
    ("saml/views.py", "_sp", "account, IdPs, SP keys read"),
    ("saml/views.py", "_provision", "provisioning (write path)"),
    ("bridge/provisioning.py", "unchanged_login", "returning-user check"),
    ("bridge/sessions.py", "start_in", "session row"),
    ("bridge/logins.py", "record_in", "login record"),
    ("bridge/audit.py", None, "audit chain"),
    ("bridge/store.py", "write", "write transaction (begin, commit)"),
    ("saml/views.py", "work", "the login's transaction (rest)"),
)


def saml_layer(filename: str, function: str) -> str | None:
    """bench/floor.py's layers, with python3-saml (and the lxml/xmlsec it calls) as one."""
    f = filename.replace("\\", "/")
    if "/onelogin/" in f or "/xmlsec" in f or "/lxml/" in f:
        return "python3-saml"
    if f.endswith("saml/sso.py") and function in ("_validate_xml", "_schema"):
        return "python3-saml"  # the library's schema check, with the app's cached XSD (floor too)
    if f.endswith("bench/saml/login_floor.py"):
        return "harness"
    return layer_of(filename, function)


def region_of(frame: Any) -> str:
    while frame is not None:
        code = frame.f_code
        for suffix, function, name in REGIONS:
            if code.co_filename.endswith(suffix) and function in (None, code.co_name):
                return name
        frame = frame.f_back
    return "request (view, cookies, redirect)"


def sampled(charge: Counter[str]) -> AbstractContextManager[None]:
    """bench/floor.py's sampler with this bench's layers and regions (the standard library's
    own time told apart by region too)."""
    return floor.sampled(
        charge, layer=saml_layer, region=region_of, regional=(*floor.REGIONAL, "stdlib")
    )


def environ(path: str, form: dict[str, str] | None = None) -> dict[str, Any]:
    """A POST of `form` (the IdP's form, as the browser posts it), or a GET without one."""
    from werkzeug.test import EnvironBuilder

    method = "GET" if form is None else "POST"
    built: dict[str, Any] = EnvironBuilder(
        base_url=BASE, path=path, method=method, data=form
    ).get_environ()
    return built


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database-url", help="a PostgreSQL server URL (default: SQLite)")
    ap.add_argument("-n", type=int, default=200, help="logins per workload and pass")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_saml_floor_"))
    url, drop = fresh_database(args.database_url, tmp)
    try:
        return run(url, tmp, args.n)
    finally:
        drop()


def run(url: str, tmp: Path, n: int) -> int:
    import bridge
    from bridge import accounts, idps
    from bridge import sp_keys as keys
    from saml import sso
    from tests.saml_idp import TestIdP

    app, store, _token = bridge_app(url, tmp, SLUG)
    idp = TestIdP()
    idps.add(store, SLUG, idp.metadata_xml(), name="test", actor="bench")

    def allow(db: Any) -> None:
        idps.get(db, accounts.get_account(db, SLUG).id, "test").allow_idp_initiated = True

    store.write(allow)
    acs = f"/saml/{SLUG}/acs"

    def form(name: str) -> dict[str, str]:
        xml = idp.response(
            name_id=name,
            destination=f"{BASE}{acs}",
            audience=f"{BASE}/saml/{SLUG}/metadata",
            attributes={"email": [name], "givenName": ["Floor"]},
        )
        return dict(idp.post_form(xml))

    def forms(start: int) -> dict[str, list[dict[str, str]]]:
        names = [f"floor{start + i:06d}@floor.example" for i in range(n)]
        return {"first": [form(x) for x in names], "returning": [form(x) for x in names]}

    # warm: imports, caches, the account's SP key (made by the first login)
    for i in range(10):
        assert call(app, environ(acs, form(f"warm{i}@floor.example")))[0] == 302
        call(app, environ("/healthz"))

    # the settings object the app validates with, and python3-saml alone on it
    config = app.config["BRIDGE_SETTINGS"]
    with store.read() as db:
        account = accounts.get_account(db, SLUG)
        the_idp = idps.get(db, account.id, "test")
    pairs = keys.active(store, account.id, SLUG, config.secret_key)
    sp = sso.Sp(SLUG, config.base_url, tuple(pairs))
    settings = sso.settings(sp, the_idp)

    def library(f: dict[str, str]) -> float:
        from onelogin.saml2.response import OneLogin_Saml2_Response

        data = sso.request_data(sp, acs, post=f)
        t0 = time.process_time()
        response = OneLogin_Saml2_Response(settings, f["SAMLResponse"])
        response.is_valid(data, raise_exceptions=True)
        if not response.get_nameid():
            raise AssertionError("no NameID")
        response.get_attributes()
        return (time.process_time() - t0) * 1000

    capture = Capture(store.engine)
    cpu: dict[str, list[float]] = {k: [] for k in ("healthz", *KINDS)}
    wall: dict[str, list[float]] = {k: [] for k in KINDS}
    floor: dict[str, list[float]] = {k: [] for k in KINDS}
    captured: dict[str, list[list[tuple[Any, ...]]]] = {}
    snaps: dict[str, dict[str, tuple[str, Callable[[], None]]]] = {}
    first_pass = forms(0)
    for kind in KINDS:
        # the database before this workload, twice: its statements replay on each copy once
        snaps[kind] = {through: snapshot(store, url, f"{kind}_{through}") for through in ("d", "s")}
        start = len(capture.requests)
        for f in first_pass[kind]:
            floor[kind].append(library(f))
            env = environ(acs, f)
            with capture.request():
                t0, w0 = time.process_time(), time.perf_counter()
                code, body = call(app, env)
                cpu[kind].append((time.process_time() - t0) * 1000)
                wall[kind].append((time.perf_counter() - w0) * 1000)
            assert code == 302, (kind, code, body[:300])
        captured[kind] = capture.requests[start:]
    for _ in range(n):
        env = environ("/healthz")
        t0 = time.process_time()
        assert call(app, env)[0] == 200
        cpu["healthz"].append((time.process_time() - t0) * 1000)

    driver: dict[str, tuple[float, float]] = {}
    orm: dict[str, tuple[float, float]] = {}
    for kind in KINDS:
        driver[kind] = replayed(snaps[kind]["d"][0], captured[kind], "driver")
        orm[kind] = replayed(snaps[kind]["s"][0], captured[kind], "session")
        for _url, drop in snaps[kind].values():
            drop()

    charges: dict[str, Counter[str]] = {}
    second_pass = forms(n)
    for kind in KINDS:
        with sampled(charges.setdefault(kind, Counter())):
            for f in second_pass[kind]:
                assert call(app, environ(acs, f))[0] == 302
    store.dispose()

    med = {k: statistics.median(v) for k, v in cpu.items()}
    kind_name = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    code = Path(bridge.__file__).parents[1]
    print(f"floor of a SAML login, {kind_name}, {n} each, code from {code}")
    print("CPU ms per login (medians; wall where it says so, PostgreSQL's own work in it)")
    print(f"{'':<46}" + "".join(f"{k:>11}" for k in KINDS))

    def row(label: str, values: list[float], fmt: str = "{:>11.2f}") -> None:
        print(f"{label:<46}" + "".join(fmt.format(v) for v in values))

    def each(f: Callable[[str], float]) -> list[float]:
        return [f(k) for k in KINDS]

    healthz = med["healthz"]
    saml = {k: statistics.median(floor[k]) for k in KINDS}
    row("bridge", each(lambda k: med[k]))
    row("bridge wall", each(lambda k: statistics.median(wall[k])))
    row(
        "statements + transaction ends",
        each(lambda k: statistics.median(len(r) for r in captured[k])),
        "{:>11.0f}",
    )
    row("python3-saml floor (is_valid + NameID + attrs)", each(lambda k: saml[k]))
    row("framework floor: GET /healthz", [healthz] * len(KINDS))
    row("DB floor: bare driver", each(lambda k: driver[k][0]))
    row("DB floor: bare driver, wall", each(lambda k: driver[k][1]))
    row("same SQL via SQLAlchemy sessions", each(lambda k: orm[k][0]))
    row(
        "above the three floors (ours + ORM)",
        each(lambda k: med[k] - saml[k] - healthz - driver[k][0]),
    )
    row("ratio python3-saml / bridge", each(lambda k: saml[k] / med[k]), "{:>10.2f}x")
    row(
        "ratio at the floors (nothing of ours)",
        each(lambda k: saml[k] / (saml[k] + healthz + driver[k][0])),
        "{:>10.2f}x",
    )
    row(
        "ratio at the floors + SQLAlchemy sessions",
        each(lambda k: saml[k] / (saml[k] + healthz + orm[k][0])),
        "{:>10.2f}x",
    )
    row(f"CPU a login may take at {TARGET}x", each(lambda k: saml[k] / TARGET))
    row(
        f"  of it left above the three floors at {TARGET}x",
        each(lambda k: saml[k] / TARGET - saml[k] - healthz - driver[k][0]),
    )
    print("\nwhere the bridge's CPU goes: layer: region (sampled pass, scaled to the medians)")
    for layer in sorted({k for c in charges.values() for k in c} - {"harness"}):
        row(
            f"  {layer}"[:46],
            each(lambda k, la=layer: charges[k][la] / sum(charges[k].values()) * med[k]),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
