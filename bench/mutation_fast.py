"""Check mutmut's mutants one by one against chosen test files, in one process (imports paid
once: 2-5 s a mutant instead of mutmut's run over every test that reaches the function).

1. Make the mutants, from the repository root (no statistics or clean run, unlike `mutmut run`;
   a few seconds). This replaces mutants/ and writes mutants/names/<module>.txt, one mutant
   name a line, headed by `clean_baseline` (no mutant has that name):

       .venv/bin/python bench/mutation_fast.py --generate [scim/sql.py ...]  # default: all
                                                             # of [tool.mutmut] only_mutate

   After adding tests, `--copy-tests` copies tests/ into mutants/ again (the mutants stay).

2. Run them from mutants/:

       cd mutants && nice ../.venv/bin/python ../bench/mutation_fast.py NAMES OUT tests/...

   NAMES holds one mutant name a line (`bridge.access.x_access_of__mutmut_5`); start it with
   `clean_baseline` so that the first line of OUT shows the tests pass unmutated. OUT gets
   `name exit-code seconds` (1: killed; 0: survived; `timeout`: the tests ran past --timeout
   seconds, default 120, and were stopped), OUT.log the end of each run's output; names
   already in OUT are skipped, so a stopped run resumes. SQLite, CI=1 (Hypothesis
   derandomized); `--database postgresql+psycopg://...` runs them on PostgreSQL instead (the
   PostgreSQL-only branches of scim/sql.py, such as COLLATE "C", are only mutated there).

   A test that killed a mutant (and passes alone, unmutated) is tried first, alone, on the
   next mutants of the same function (and of the last few ones): a mutant it kills costs a
   second instead of the run up to that test; the others get the whole run as before.

   `--fresh` runs each mutant in a new `python -m pytest` process with MUTANT_UNDER_TEST set
   before anything is imported (about 10 s more a mutant). Use it on the survivors of a
   one-process run: a function that runs at import time (the SCIM attribute maps are built by
   `scim.sql._multi` when the module loads) is only mutated this way, and nothing cached by an
   earlier mutant's run can hide a mutant. A survivor of `--fresh` is a real survivor.

   `--stats STATS.json tests...` runs the tests once, unmutated, and records which mutated
   functions each test calls; `--tests-from STATS.json` then runs each mutant against only the
   tests that call its function (in their order; a mutant no test reaches gets exit code 5),
   which is what mutmut does: a survivor costs the tests that reach it, not all of them.

3. Score: `.venv/bin/python bench/mutation_fast.py --score OUT...` prints killed / run.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BASELINE = "clean_baseline"


def generate(modules: list[str]) -> None:
    """mutmut's own mutant generation (the first step of `mutmut run`), nothing else."""
    from mutmut.__main__ import create_mutants
    from mutmut.configuration import config
    from mutmut.mutation.trampoline import set_mutant_under_test
    from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir, setup_source_paths

    only = list(config().only_mutate)
    for module in modules:
        if module not in only:
            sys.exit(f"{module} is not in [tool.mutmut] only_mutate: {only}")
    shutil.rmtree("mutants", ignore_errors=True)
    set_mutant_under_test("mutant_generation")
    with contextlib.redirect_stdout(io.StringIO()):
        copy_src_dir()
        copy_also_copy_files()
        setup_source_paths()
        create_mutants(1)
    Path("mutants/names").mkdir()
    for module in modules or only:
        meta = json.loads(Path("mutants", module + ".meta").read_text())
        names = sorted(meta["exit_code_by_key"], key=_order)
        out = Path("mutants/names", module.removesuffix(".py").replace("/", ".") + ".txt")
        out.write_text("\n".join([BASELINE, *names]) + "\n")
        print(f"{module}: {len(names)} mutants -> {out}")


def _order(name: str) -> tuple[str, int]:
    head, _, number = name.rpartition("__mutmut_")
    return head, int(number)


class _Hits:
    """Which mutated functions each test calls (mutmut's trampolines record them under
    MUTANT_UNDER_TEST=stats), in the order the tests ran."""

    def __init__(self) -> None:
        self.by_function: dict[str, list[str]] = {}

    def pytest_runtest_call(self, item: Any) -> None:
        from mutmut.state import state

        state()._stats.clear()  # what setup (session fixtures included) called is not counted

    def pytest_runtest_teardown(self, item: Any) -> None:
        from mutmut.state import state

        for function in state()._stats:
            self.by_function.setdefault(function, []).append(item.nodeid)
        state()._stats.clear()


def collect_stats(out: str, tests: list[str]) -> None:
    import pytest

    os.environ["CI"] = "1"
    os.environ.pop("BRIDGE_TEST_DATABASE_URL", None)
    os.environ["MUTANT_UNDER_TEST"] = "stats"
    sys.path.insert(0, os.getcwd())
    hits = _Hits()
    rc = pytest.main(["-q", "-p", "no:cacheprovider", *tests], plugins=[hits])
    if rc != 0:
        sys.exit(f"the tests fail unmutated (exit {rc}): no statistics written")
    Path(out).write_text(json.dumps(hits.by_function, indent=0))
    print(f"{out}: {len(hits.by_function)} functions called by the tests")


def copy_tests() -> None:
    shutil.copytree("tests", "mutants/tests", dirs_exist_ok=True)


def score(outs: list[str]) -> None:
    for out in outs:
        rows = [line.split() for line in Path(out).read_text().splitlines() if line.strip()]
        codes = [row[1] for row in rows if row[0] != BASELINE]
        killed = sum(c in ("1", "timeout") for c in codes)
        print(
            f"{out}: {killed} killed ({codes.count('timeout')} by timeout) of {len(codes)}, "
            f"{codes.count('0')} survived, {codes.count('5')} reached by no test"
        )


class MutantTimeout(Exception):
    """The tests ran longer than the timeout under this mutant (a loop it made endless?)."""


def run(
    names_file: str,
    out_file: str,
    tests: list[str],
    *,
    fresh: bool,
    timeout: int,
    stats: dict[str, list[str]] | None,
    database: str | None,
) -> None:
    os.environ["CI"] = "1"
    os.environ.pop("BRIDGE_TEST_DATABASE_URL", None)
    if database:
        os.environ["BRIDGE_TEST_DATABASE_URL"] = database
    sys.path.insert(0, os.getcwd())
    done = set()
    if os.path.exists(out_file):
        with open(out_file) as f:
            done = {line.split()[0] for line in f if line.strip()}
    with open(names_file) as f:
        names = [n.strip() for n in f if n.strip() and n.strip() not in done]
    args = ["-x", "-q", *tests]
    options = [t for i, t in enumerate(tests) if t.startswith("-") or tests[i - 1] == "--deselect"]
    killers: dict[str, list[str]] = {}  # function -> tests that killed one of its mutants
    recent: list[str] = []  # the last tests that killed anything
    checked: dict[str, bool] = {}  # test -> passes alone, unmutated
    for name in names:
        start = time.time()
        function = name.rpartition("__mutmut_")[0]
        first = list(dict.fromkeys([*killers.get(function, [])[-5:], *recent[-3:]]))
        rc, output, failed = "0", "", []
        chosen = args
        if stats is not None and name != BASELINE:  # only the tests that call the function
            chosen = ["-x", "-q", *options, *stats.get(function, [])]
            if len(chosen) == 2 + len(options):
                rc, output = "5", "no test calls this function"
        if rc == "5":
            pass
        elif fresh:
            rc, output = _fresh(name, chosen, timeout)
        else:
            if first:  # a test that killed a sibling mutant usually kills this one: try it first
                rc, output, failed = _in_process(name, ["-x", "-q", *options, *first], timeout)
                output = f"(tried first: {first})\n{output}"
            if rc != "1":
                rc, output, failed = _in_process(name, chosen, timeout)
        if rc == "1" and failed and failed[0] not in first:
            test = failed[0]
            if test not in checked:  # a killer must pass alone without a mutant
                checked[test] = _in_process(BASELINE, ["-q", *options, test], timeout)[0] == "0"
            if checked[test]:
                killers.setdefault(function, []).append(test)
                recent.append(test)
        with open(out_file, "a") as f:
            f.write(f"{name} {rc} {time.time() - start:.0f}\n")
        with open(out_file + ".log", "a") as f:
            f.write(f"===== {name} rc={rc}\n" + output[-1500:] + "\n")


class _Quick:
    """Hypothesis reports the first failing example as it is (no shrinking: a mutant's
    failure need not be minimal, and shrinking one over database queries took minutes)."""

    def pytest_sessionstart(self, session: Any) -> None:  # after the conftests' profiles
        from hypothesis import Phase, settings

        quick = settings(settings.default, phases=[Phase.explicit, Phase.reuse, Phase.generate])
        settings.register_profile("mutation", quick)
        settings.load_profile("mutation")


class _Failed:
    """Collects the ids of the tests that failed (in a test, its setup or teardown)."""

    def __init__(self) -> None:
        self.nodeids: list[str] = []

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.failed and report.nodeid not in self.nodeids:
            self.nodeids.append(report.nodeid)


def _in_process(name: str, args: list[str], timeout: int) -> tuple[str, str, list[str]]:
    import pytest

    def expire(signum: int, frame: object) -> None:
        raise MutantTimeout(f"{name}: the tests ran past {timeout} s")

    os.environ["MUTANT_UNDER_TEST"] = name  # mutmut's trampolines read it at each call
    buf = io.StringIO()
    failed = _Failed()
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(timeout)
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            rc = str(
                int(
                    pytest.main(
                        ["-p", "no:cacheprovider", "--tb=line", *args], plugins=[failed, _Quick()]
                    )
                )
            )
    except MutantTimeout:  # raised outside a test (a fixture's teardown, collection)
        rc = "timeout"
    finally:
        fired = signal.alarm(0) == 0
        signal.signal(signal.SIGALRM, previous)
    if fired and "MutantTimeout" in buf.getvalue():
        rc = "timeout"
    return rc, buf.getvalue(), failed.nodeids


def _fresh(name: str, args: list[str], timeout: int) -> tuple[str, str]:
    env = {**os.environ, "MUTANT_UNDER_TEST": name, "PYTHONPATH": os.getcwd()}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode()
        return "timeout", out
    return str(done.returncode), done.stdout + done.stderr


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--generate":
        generate(argv[1:])
        return
    if argv and argv[0] == "--copy-tests":
        copy_tests()
        return
    if argv and argv[0] == "--score":
        score(argv[1:])
        return
    if argv and argv[0] == "--stats":
        collect_stats(argv[1], argv[2:])
        return
    fresh = "--fresh" in argv
    timeout, stats = 120, None
    rest = [a for a in argv if a != "--fresh"]
    if "--timeout" in rest:
        i = rest.index("--timeout")
        timeout = int(rest[i + 1])
        del rest[i : i + 2]
    if "--tests-from" in rest:
        i = rest.index("--tests-from")
        stats = json.loads(Path(rest[i + 1]).read_text())
        del rest[i : i + 2]
    database = None
    if "--database" in rest:
        i = rest.index("--database")
        database = rest[i + 1]
        del rest[i : i + 2]
    run(rest[0], rest[1], rest[2:], fresh=fresh, timeout=timeout, stats=stats, database=database)


if __name__ == "__main__":
    main(sys.argv[1:])
