#!/usr/bin/env bash
# Mutation testing (mutmut, pinned in the `mutation` extra) of the modules whose bugs are security
# bugs: the policy engine and the SCIM filter compiler. Not part of .ci/run: it takes about
# 25 minutes on an idle 2-core machine. Prints each module's score (killed / mutants checked).
#
#   bench/mutation.sh                       # the modules in [tool.mutmut] only_mutate
#   bench/mutation.sh scim/sql.py           # one module (must be listed in only_mutate)
#   KEEP=1 bench/mutation.sh                # reuse mutants/ (mutmut re-runs only what changed)
#   JOBS=1 bench/mutation.sh                # mutmut --max-children (default: 2)
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

[ -n "${KEEP:-}" ] || rm -rf mutants
export CI=1
unset BRIDGE_TEST_DATABASE_URL
for module in "${modules[@]}"; do
  name=${module%.py}
  name=${name//\//.}
  echo "== mutmut: $module"
  started=$(date +%s)
  # mutmut names a mutant module.function__mutmut_N (methods: module.xǁClassǁmethod__mutmut_N).
  mkdir -p mutants
  nice "$venv/bin/mutmut" run --max-children "${JOBS:-2}" "$name.*" >"mutants/run.$name.log" 2>&1 \
    || { tail -20 "mutants/run.$name.log"; exit 1; }
  echo "   $(($(date +%s) - started)) s"
done

"$venv/bin/python" - "${modules[@]}" <<'EOF'
"""One line per module: mutants, killed, survived, timeouts, score."""
import json
import sys
from pathlib import Path

print(f"| module | mutants | killed | survived | other | score |")
print("| --- | --- | --- | --- | --- | --- |")
for module in sys.argv[1:]:
    codes = json.loads(Path("mutants", module + ".meta").read_text())["exit_code_by_key"]
    checked = [c for c in codes.values() if c is not None]
    killed = sum(c in (1, 3) for c in checked)
    survived = sum(c == 0 for c in checked)
    # timeouts count as killed: the mutant made a test hang, so the suite noticed it
    timeouts = sum(c in (-24, 24, 36, 152, 255) for c in checked)
    other = len(checked) - killed - survived - timeouts
    score = (killed + timeouts) / len(checked) if checked else 0.0
    print(
        f"| `{module}` | {len(codes)} | {killed + timeouts} | {survived} | {other} "
        f"| {score:.0%} |"
    )
EOF
