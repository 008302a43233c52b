"""Check mutmut's mutants one by one against chosen test files, in one process (imports paid
once: 2-5 s a mutant instead of mutmut's run over every test that reaches the function).

Run from mutants/ after mutmut has generated it (`bench/mutation.sh` or `mutmut run 'none'`):

    cd mutants && ../.venv/bin/python ../bench/mutation_fast.py NAMES OUT tests/integration/...

NAMES holds one mutant name a line (`bridge.access.x_access_of__mutmut_5`); start it with a name
that is no mutant (`clean_baseline`) so that the first line of OUT shows the tests pass
unmutated. OUT gets `name exit-code seconds` (1: killed; 0: survived), OUT.log the end of each
run's output; names already in OUT are skipped, so a stopped run resumes. SQLite, CI=1.
"""

import contextlib
import io
import os
import sys
import time

import pytest

names_file, out_file, tests = sys.argv[1], sys.argv[2], sys.argv[3:]
os.environ["CI"] = "1"
os.environ.pop("BRIDGE_TEST_DATABASE_URL", None)
sys.path.insert(0, os.getcwd())
done = set()
if os.path.exists(out_file):
    with open(out_file) as f:
        done = {line.split()[0] for line in f if line.strip()}
with open(names_file) as f:
    names = [n.strip() for n in f if n.strip() and n.strip() not in done]
for name in names:
    os.environ["MUTANT_UNDER_TEST"] = name  # mutmut's trampolines read it at each call
    start = time.time()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        rc = pytest.main(["-x", "-q", "-p", "no:cacheprovider", *tests])
    with open(out_file, "a") as f:
        f.write(f"{name} {int(rc)} {time.time() - start:.0f}\n")
    with open(out_file + ".log", "a") as f:
        f.write(f"===== {name} rc={int(rc)}\n" + buf.getvalue()[-1500:] + "\n")
