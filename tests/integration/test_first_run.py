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


def _readme_block(after: str) -> str:
    readme = (ROOT / "README.md").read_text()
    fence = readme.index("```", readme.index(after))
    start = readme.index("\n", fence) + 1
    return readme[start : readme.index("```", start)]


@pytest.fixture
def live_server(database_url, tmp_path):
    """The service on a free port, with the default instance layout under `tmp_path`."""
    import threading

    from werkzeug.serving import make_server

    from bridge import create_app
    from bridge.settings import Settings

    settings = Settings.from_env(
        {"BRIDGE_DATABASE_URL": database_url, "BRIDGE_INSTANCE_PATH": str(tmp_path / "instance")}
    )
    app = create_app(settings)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    app.extensions["bridge.store"].dispose()  # close its connections (ResourceWarning otherwise)


@pytest.mark.skipif(
    not (VENV_BIN / "idbridge").exists(), reason="needs the console script `make` installs"
)
def test_readme_policy_walk_through_runs_as_written(database_url, tmp_path, live_server):
    """Every command of the README's policy walk-through runs as written from the project
    folder with the default settings (the service it talks to on its own port), writes the
    policy into instance/policies/ (never to /), and prints the sample output the README shows."""
    (tmp_path / "policies").symlink_to(ROOT / "policies")
    block = _readme_block("A walk through with the example")
    env = {
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",  # what `source .venv/bin/activate` does
        "HOME": str(tmp_path),
        "BRIDGE_DATABASE_URL": database_url,
        "BRIDGE_BASE_URL": live_server,
    }
    out = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", block],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "instance" / "policies" / "acme-media.yaml").is_file()
    printed = set(out.stdout.splitlines())
    samples = [line[4:] for line in block.splitlines() if line.startswith("#   ")]
    assert len(samples) > 10
    missing = [line for line in samples if line not in printed]
    assert not missing, f"README sample lines not printed: {missing}\n{out.stdout}"


def test_policy_vocabulary_lists_roles_and_levels(cli):
    """`idbridge policy vocabulary` lists role names by rank and grant levels, as the README
    and policies/README.md document them."""
    import policies

    out = cli("policy", "vocabulary")
    assert out.exit_code == 0
    assert "  1. master_admin" in out.stdout and "  7. media_library_user" in out.stdout
    assert "  1. viewer" in out.stdout and "  4. manager" in out.stdout
    data = json.loads(cli("policy", "vocabulary", "--json").stdout)
    assert data["roles"] == list(policies.ROLES) and data["levels"] == list(policies.LEVELS)
    ranked = " > ".join(f"`{r}`" for r in policies.ROLES)
    levels = " < ".join(f"`{lv}`" for lv in policies.LEVELS)
    for doc in (ROOT / "policies" / "README.md", ROOT / "README.md"):
        words = " ".join(doc.read_text().split())  # as rendered: line breaks are spaces
        assert ranked in words and levels in words, doc


def test_every_command_in_the_readme_cli_reference_exists(cli):
    """Each `idbridge ...` line of the README's CLI reference names a real command (its words
    before the first argument answer `--help`)."""
    block = _readme_block("## CLI")
    checked = 0
    for line in block.splitlines():
        if not line.startswith("idbridge "):
            continue
        words = []
        for word in line.split()[1:]:
            if not word.islower() or not word.replace("-", "").isalpha():
                break
            words.append(word)
        result = cli(*words, "--help")
        assert result.exit_code == 0, f"{line}: {result.output}"
        checked += 1
    assert checked >= 25
