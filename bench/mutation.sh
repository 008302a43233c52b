#!/usr/bin/env bash
# Mutation testing (mutmut, pinned in the `mutation` extra) of the modules whose bugs are security
# bugs: the policy engine, the SCIM filter compiler, applying access and the API's key scopes.
# Not part of .ci/run: it takes well over 25 minutes on an idle 2-core machine. Prints each
# module's score (killed / mutants checked).
#
#   bench/mutation.sh                       # the modules in [tool.mutmut] only_mutate
#   bench/mutation.sh scim/sql.py           # one module (must be listed in only_mutate)
#   KEEP=1 bench/mutation.sh                # reuse mutants/ (mutmut re-runs only what changed;
#                                           # it copies the other source files only once, so
#                                           # after changing one of those, run without KEEP)
#   JOBS=1 bench/mutation.sh                # mutmut --max-children (default: 2)
#   SAMPLE=60 bench/mutation.sh             # a random sample of 60 mutants per module (for a
#                                           # busy machine); the table says how many were checked
#
# Quicker (how issue 16's modules were measured: policies/ in 26 minutes, the scim/ modules at
# 7-10 mutants a minute, about 2 hours for their 952, at load 3-9):
# bench/mutation_fast.py --generate, --stats, then a run with --tests-from (see its docstring).
# The figures measured, and each equivalent mutant with why: docs/mutation.md.
#
# Runs on SQLite with CI=1 so that Hypothesis is derandomized (the same examples every run).
# Survivors: `.venv/bin/mutmut results`, then `.venv/bin/mutmut show NAME`.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${VENV:-.venv}
if ! "$venv/bin/python" -c 'import mutmut' 2>/dev/null; then
  make "$venv/bin/.installed"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -e '.[test,mutation]'
fi

modules=("$@")
if [ ${#modules[@]} -eq 0 ]; then
  mapfile -t modules < <("$venv/bin/python" -c '
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["tool"]["mutmut"]["only_mutate"]))')
fi

sample_of() {  # SAMPLE mutant names of module $1, the same ones every run
  "$venv/bin/python" -c '
import json, random, sys
from pathlib import Path
codes = json.loads(Path("mutants", sys.argv[1] + ".meta").read_text())["exit_code_by_key"]
names = sorted(codes)
print("\n".join(random.Random(16).sample(names, min(int(sys.argv[2]), len(names)))))' "$1" "$SAMPLE"
}

[ -n "${KEEP:-}" ] || rm -rf mutants
export CI=1
unset BRIDGE_TEST_DATABASE_URL
for module in "${modules[@]}"; do
  name=${module%.py}
  name=${name//\//.}
  echo "== mutmut: $module"
  started=$(date +%s)
  mkdir -p mutants
  # mutmut names a mutant module.function__mutmut_N (methods: module.xǁClassǁmethod__mutmut_N).
  selection=("$name.*")
  if [ -n "${SAMPLE:-}" ]; then
    if [ ! -f "mutants/$module.meta" ]; then  # generate the mutants (and test stats) first
      nice "$venv/bin/mutmut" run "no mutant has this name" >/dev/null 2>&1 || true
    fi
    mapfile -t selection < <(sample_of "$module")
    if [ ${#selection[@]} -eq 0 ]; then  # no names would make mutmut run every module's mutants
      echo "no mutants of $module to sample (see: $venv/bin/mutmut run 'no mutant has this name')"
      exit 1
    fi
  fi
  nice "$venv/bin/mutmut" run --max-children "${JOBS:-2}" "${selection[@]}" \
    >"mutants/run.$name.log" 2>&1 || { tail -20 "mutants/run.$name.log"; exit 1; }
  echo "   $(($(date +%s) - started)) s"
done

"$venv/bin/python" - "${modules[@]}" <<'EOF'
"""One line per module: mutants, checked, killed, survived, other outcomes, score."""
import json
import sys
from pathlib import Path

print("| module | mutants | checked | killed | survived | other | score |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for module in sys.argv[1:]:
    codes = json.loads(Path("mutants", module + ".meta").read_text())["exit_code_by_key"]
    checked = [c for c in codes.values() if c is not None]
    killed = sum(c in (1, 3) for c in checked)
    survived = sum(c == 0 for c in checked)
    # timeouts count as killed: the mutant made a test hang, so the suite noticed it
    timeouts = sum(c in (-24, 24, 36, 152, 255) for c in checked)
    other = len(checked) - killed - survived - timeouts  # no tests, suspicious, segfault
    score = (killed + timeouts) / len(checked) if checked else 0.0
    print(
        f"| `{module}` | {len(codes)} | {len(checked)} | {killed + timeouts} | {survived} "
        f"| {other} | {score:.0%} |"
    )
EOF
