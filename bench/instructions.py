"""Instructions per request on each hot path, counted rather than timed: a same-machine comparison
of checkouts that the machine's drifting speed cannot blur.

    .venv/bin/python bench/instructions.py [--database-url URL] [-n 100] [--app-dir DIR] ...

This machine's speed drifts by 1.5-2x within minutes (issue 14's notes), so CPU times of two
builds measured minutes apart cannot show a 5 % change. Instructions can: valgrind's callgrind
tool counts every instruction the process executes, the same count for the same work whatever
else the machine does. Each checkout (`--app-dir`, repeatable; this one when none is given, and
the first is the base of the ratios) runs in a child process under callgrind with its
instrumentation off through the imports and set-up (valgrind's uninstrumented pace), on for the
measured requests only, marked with callgrind's client requests (valgrind/callgrind.h, compiled
at the start with gcc into a small library: Debian's valgrind package ships the header).

As bench/floor.py does: one process, one thread, no HTTP; prebuilt WSGI environs handed to the
checkout's Flask app (all its hooks), on a fresh SQLite file or a fresh PostgreSQL database beside
--database-url (then the driver's instructions are counted, PostgreSQL's own are not); account with
a SCIM token, a test IdP (tests/saml_idp, IdP-initiated, JIT) and `--environments` environments
(production, then staging, qa, ...: a write reads them with its account). Each path is warmed, then
N requests are counted: SCIM create (bench/floor.py's body), GET by id and filter `userName eq` (a
hit) of the users created, PATCH of one attribute of each (as Entra sends a change), PUT of each
whole (as Okta does), PATCH of a group adding one of them (as IdPs push a membership); SAML first
login (new users, forms signed before counting), returning login (the same users again, unchanged),
the same users' SP-initiated login (each answering an AuthnRequest of ours, started before the
count) and the first SAML login of the users SCIM made (found by userName, linked, changed: the
usual order with Okta and Entra). The rows a path queues for the store's writer thread (the SCIM
request log) are written in one batch before its count ends; the cycle collector is off while
counting (its collections land at allocation thresholds: one path would pay for another's garbage).
Printed: millions of instructions per request per checkout and the ratio to the first. Under
valgrind a run takes a minute or two per checkout at -n 100.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PATHS = (
    "SCIM create",
    "SCIM GET by id",
    "SCIM filter",
    "SCIM PATCH user",
    "SCIM PUT user",
    "SCIM PATCH group",
    "SAML first login",
    "SAML returning",
    "SAML SP returning",
    "SAML SCIM user",
)
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
MARKS = r"""
#include <valgrind/callgrind.h>
void cg_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void cg_zero(void) { CALLGRIND_ZERO_STATS; }
void cg_dump(const char *what) { CALLGRIND_DUMP_STATS_AT(what); }
int cg_running(void) { return RUNNING_ON_VALGRIND; }
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL to make fresh databases beside")
    parser.add_argument("-n", type=int, default=100, help="requests counted per path")
    parser.add_argument(
        "--environments", type=int, default=1, help="the account's environments (default 1)"
    )
    parser.add_argument("--app-dir", action="append", help="a checkout to count (repeatable)")
    parser.add_argument("--child", nargs=3, metavar=("DIR", "URL", "MARKS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.n < 1:
        parser.error("-n: at least one request per path")
    if not 1 <= args.environments <= 6:
        parser.error("--environments: 1 to 6")
    if args.child:
        return child(
            Path(args.child[0]), args.child[1], Path(args.child[2]), args.n, args.environments
        )
    for tool in ("valgrind", "gcc"):
        if shutil.which(tool) is None:
            sys.exit(f"instructions.py needs {tool} (Debian: apt-get install {tool})")
    dirs = [Path(d).resolve() for d in (args.app_dir or [str(ROOT)])]
    counts: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench_insn_") as tmp_name:
        tmp = Path(tmp_name)
        marks = tmp / "marks.so"
        (tmp / "marks.c").write_text(MARKS)
        built = subprocess.run(
            ["gcc", "-O1", "-shared", "-fPIC", "-o", str(marks), str(tmp / "marks.c")],
            capture_output=True,
            text=True,
        )
        if built.returncode != 0:
            sys.exit(
                f"{built.stderr.strip()}\ncould not build the callgrind marks: valgrind's "
                "header valgrind/callgrind.h is needed (Debian: apt-get install valgrind)"
            )
        sys.path[:0] = [str(ROOT / "bench")]
        from cost import fresh_database

        for i, app_dir in enumerate(dirs):
            print(f"# counting {app_dir} (a few minutes under valgrind)", file=sys.stderr)
            url, drop = fresh_database(args.database_url, tmp, f"insn{i}")
            out = tmp / f"callgrind{i}.out"
            try:
                child_run = subprocess.run(
                    [
                        "valgrind", "--tool=callgrind", "--instr-atstart=no",
                        f"--callgrind-out-file={out}", sys.executable, __file__,
                        "-n", str(args.n), "--environments", str(args.environments),
                        "--child", str(app_dir), url, str(marks),
                    ],
                    stderr=subprocess.PIPE, text=True,
                )  # fmt: skip
                if child_run.returncode != 0:  # the child's own error, without valgrind's lines
                    said = [x for x in child_run.stderr.splitlines() if not x.startswith("==")]
                    sys.exit("\n".join([*said[-30:], f"counting {app_dir} failed"]))
            finally:
                drop()
            counts.append(read_dumps(out, args.n))
    db = "PostgreSQL (this process only)" if args.database_url else "SQLite"
    envs = "" if args.environments == 1 else f", {args.environments} environments"
    print(f"millions of instructions per request (callgrind), {args.n} each, {db}{envs}")
    print(
        f"{'path':18s}" + "".join(f"{label(d, dirs):>14s}" for d in dirs) + "  ratio to the first"
    )
    for path in PATHS:
        row = [c.get(path, float("nan")) / 1e6 for c in counts]
        ratios = "  ".join(f"{r / row[0]:.3f}x" for r in row[1:])
        print(f"{path:18s}" + "".join(f"{r:14.3f}" for r in row) + f"  {ratios}")
    return 0


def label(d: Path, dirs: list[Path]) -> str:
    return "this" if d == ROOT else d.name if [x.name for x in dirs].count(d.name) == 1 else str(d)


def read_dumps(out: Path, n: int) -> dict[str, float]:
    """Each dump callgrind wrote at a mark (out.1, out.2, ...): its path and instructions per
    request."""
    found: dict[str, float] = {}
    for dump in sorted(out.parent.glob(out.name + ".*")):
        text = dump.read_text(errors="replace")
        what = re.search(r"^desc: Trigger: Client Request: (.+)$", text, re.M)
        total = re.search(r"^(?:totals|summary): (\d+)", text, re.M)
        if what and total:
            found[what.group(1)] = int(total.group(1)) / n
    return found


def child(app_dir: Path, url: str, marks_path: Path, n: int, environments: int = 1) -> int:
    """Under callgrind: set up, warm, then count each path's N requests between marks."""
    sys.path[:0] = [str(ROOT / "bench")]
    from floor import call, environ, user_doc

    sys.path.insert(0, str(app_dir))  # the checkout's bridge/, scim/, saml/ and tests/ first
    from cost import BASE, bridge_app

    marks = ctypes.CDLL(str(marks_path))
    if not marks.cg_running():
        sys.exit("not under valgrind")
    with tempfile.TemporaryDirectory(prefix="bench_insn_app_") as tmp_name:
        app, store, token = bridge_app(url, Path(tmp_name), "insn")
        from bridge import accounts, idps
        from tests.saml_idp import TestIdP

        for name in ("staging", "qa", "demo", "sandbox", "dev")[: environments - 1]:
            accounts.add_environment(store, "insn", name, actor="bench")

        keep_out_the_occasional()

        idp = TestIdP()
        idps.add(store, "insn", idp.metadata_xml(), name="test", actor="bench")

        def allow(db: Any) -> None:
            idps.get(db, accounts.get_account(db, "insn").id, "test").allow_idp_initiated = True

        store.write(allow)
        acs = "/saml/insn/acs"

        def login(name: str) -> Any:
            xml = idp.response(
                name_id=name,
                destination=f"{BASE}{acs}",
                audience=f"{BASE}/saml/insn/metadata",
                attributes={"email": [name], "givenName": ["Insn"]},
            )
            return environ_form(acs, dict(idp.post_form(xml)))

        def answer(name: str) -> Any:
            from tests.saml_idp import parse_authn_request

            browser = app.test_client()
            started = browser.get("/saml/insn/login", query_string={"idp": "test"})
            assert started.status_code == 302, started.get_data()[:300]
            request = parse_authn_request(started.headers["Location"])
            cookie = browser.get_cookie("bridge_login", path="/saml/insn/")
            assert cookie is not None and request.acs_url is not None
            xml = idp.response(
                name_id=name,
                destination=request.acs_url,
                audience=f"{BASE}/saml/insn/metadata",
                in_response_to=request.id,
                attributes={"email": [name], "givenName": ["Insn"]},
            )
            path = request.acs_url.removeprefix(BASE)
            cookies = f"bridge_login={cookie.value}"
            return environ_form(path, dict(idp.post_form(xml)), cookies)

        def run(what: str, envs: list[Any], *ok: int) -> list[bytes]:
            bodies = []
            for env in envs[:5]:  # warm: this path's statements and caches
                code, body = call(app, env)
                assert code in ok, (what, code, body[:300])
            store.flush()  # the warm requests' queued log rows
            gc.collect()
            gc.disable()
            marks.cg_zero()
            for env in envs[5:]:
                code, body = call(app, env)
                assert code in ok, (what, code, body[:300])
                bodies.append(body)
            store.flush()  # this path's queued rows (the SCIM request log), counted with it
            marks.cg_dump(what.encode())
            gc.enable()
            return bodies

        scim = "/scim/v2/Users"
        creates = [environ("POST", scim, token, user_doc(i)) for i in range(n + 5)]
        names = [f"insn{i:06d}@bench.example" for i in range(n + 5)]
        first = [login(name) for name in names]
        again = [login(name) for name in names]
        scim_users = [login(f"floor{i:06d}@bench.example") for i in range(n + 5)]
        marks.cg_start()
        ids = [json.loads(b)["id"] for b in run("SCIM create", creates, 201)]
        run("SCIM GET by id", [environ("GET", f"{scim}/{u}", token) for u in ids[:5] + ids], 200)
        hits = [f'userName eq "floor{i:06d}@bench.example"' for i in range(n + 5)]
        run("SCIM filter", [environ("GET", scim, token, filter=f) for f in hits], 200)
        warm_ids = ids[:5] + ids  # the first five warm a path, and are counted again after

        def patch(i: int, user_id: str) -> Any:  # as Entra sends a change
            op = {"op": "replace", "path": "title", "value": f"Title {i}"}
            body = {"schemas": [PATCH_OP], "Operations": [op]}
            return environ("PATCH", f"{scim}/{user_id}", token, body)

        run("SCIM PATCH user", [patch(i, u) for i, u in enumerate(warm_ids)], 200)
        # the k-th counted create was user_doc(5 + k) (five warmed the path first)
        made = [(ids[k], 5 + k) for k in range(5)] + [(ids[k], 5 + k) for k in range(n)]
        puts = [  # as Okta sends a change: the whole user
            environ("PUT", f"{scim}/{u}", token, {**user_doc(seq), "title": f"Put {i}"})
            for i, (u, seq) in enumerate(made)
        ]
        run("SCIM PUT user", puts, 200)
        group = json.loads(
            call(app, environ("POST", "/scim/v2/Groups", token, {"displayName": "Counted"}))[1]
        )["id"]
        adds = [  # one member added a request, as IdPs push a membership
            environ(
                "PATCH",
                f"/scim/v2/Groups/{group}",
                token,
                {
                    "schemas": [PATCH_OP],
                    "Operations": [{"op": "add", "path": "members", "value": [{"value": u}]}],
                },
            )
            for u in ids[:5] + ids  # the warm ones are members already: added again, no change
        ]
        run("SCIM PATCH group", adds, 200, 204)
        run("SAML first login", first, 302)
        run("SAML returning", again, 302)
        # the same returning users answering our AuthnRequest (SP-initiated, as our login page
        # starts a login): each /login made before the count, the response to its request with
        # the cookie that binds the request to this browser
        run("SAML SP returning", [answer(name) for name in names], 302)
        # the first SAML login of users SCIM made (the usual order with Okta and Entra): found by
        # userName, linked to the IdP, their attributes changed
        run("SAML SCIM user", scim_users, 302)
        store.dispose()
    return 0


def keep_out_the_occasional() -> None:
    """What a request does now and then, by the clock or by chance, would land in one path's
    count or another's: a token's last-used time and the request log's purge (once a minute;
    under valgrind a minute is a few requests), the replay cache's sweep (one login in a
    hundred) and SQLite's background checkpoint (every CHECKPOINT_EVERY writes, in a thread of
    its own). Kept out, as the statement-count test keeps them out; a checkout without one of
    these settings keeps it. And the store's writer thread writes the queued log rows only when
    flushed (once per path: a batch of N), not APPEND_DELAY after the first of a batch, whose
    size would depend on the pace valgrind runs at."""
    from datetime import timedelta

    from bridge import accounts, scim_log
    from bridge import store as store_module
    from saml import sso

    for module, name, value in (
        (accounts, "LAST_USED_EVERY", timedelta(days=1)),
        (scim_log, "PURGE_EVERY", 1e9),
        (store_module, "CHECKPOINT_EVERY", 10**9),
        (store_module, "APPEND_DELAY", 1e6),
    ):
        if hasattr(module, name):
            setattr(module, name, value)
    no_sweep = types.ModuleType("secrets")
    no_sweep.__dict__.update(vars(secrets))
    no_sweep.randbelow = lambda n: n - 1  # type: ignore[attr-defined]
    sso.secrets = no_sweep  # type: ignore[attr-defined]


def environ_form(path: str, form: dict[str, str], cookies: str | None = None) -> Any:
    from urllib.parse import urlencode

    from werkzeug.test import EnvironBuilder

    return EnvironBuilder(
        path=path,
        method="POST",
        data=urlencode(form),
        content_type="application/x-www-form-urlencoded",
        headers={"Cookie": cookies} if cookies else None,
    ).get_environ()


if __name__ == "__main__":
    sys.exit(main())
