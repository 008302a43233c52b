"""The first minutes of a newcomer, through the CLI as the README tells them: the `idbridge`
command on PATH after activation, and `idbridge demo` run again and again."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bridge import accounts
from bridge.errors import Unauthorized

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


@pytest.mark.skipif(
    not (VENV_BIN / "idbridge").exists() or not (VENV_BIN / "activate").exists(),
    reason="needs the venv `make` creates (the console script and its activate script)",
)
def test_readme_activation_puts_idbridge_on_path(tmp_path):
    """`source .venv/bin/activate` then `idbridge --help` is our command, not iproute2's; the
    README says so before the first command using it, and `python -m bridge` works too."""
    readme = (ROOT / "README.md").read_text()
    first_use = min(m.start() for m in re.finditer(r"^idbridge ", readme, flags=re.MULTILINE))
    assert 0 <= readme.find("source .venv/bin/activate") < first_use
    shell = f"source {VENV_BIN / 'activate'} && idbridge --help"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run(["bash", "-c", shell], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "Identity Bridge" in out.stdout and "policy" in out.stdout
    module = subprocess.run(
        [sys.executable, "-m", "bridge", "--help"], capture_output=True, text=True, env=os.environ
    )
    assert module.returncode == 0 and "Usage: idbridge" in module.stdout


def test_demo_twice_leaves_one_live_labelled_token(cli, store):
    """Each `idbridge demo` (run by `make run`) prints a token labelled demo and revokes the
    previous one: after two runs exactly one is live, and the first no longer authenticates."""
    slug = f"demo-{os.urandom(3).hex()}"
    first = cli("demo", "--slug", slug)
    second = cli("demo", "--slug", slug)
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    raw1, raw2 = first.stdout.splitlines()[-1], second.stdout.splitlines()[-1]
    assert raw1.startswith("ibs_") and raw2.startswith("ibs_") and raw1 != raw2
    tokens = json.loads(cli("tokens", "list", slug, "--json").stdout)
    live = [t for t in tokens if t["revoked"] is None]
    assert len(tokens) == 2 and all(t["label"] == "demo" for t in tokens)
    assert len(live) == 1 and live[0]["prefix"] == raw2[: len(live[0]["prefix"])]
    assert "\tdemo\tactive\t" in cli("tokens", "list", slug).stdout
    with pytest.raises(Unauthorized):
        accounts.authenticate(store, raw1)
    assert accounts.authenticate(store, raw2)[0].slug == slug
