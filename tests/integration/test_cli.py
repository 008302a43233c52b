"""The `bridge` command as an operator uses it: clear output, clear errors, non-zero exits."""

import hashlib
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from bridge import accounts
from bridge.errors import Unauthorized
from bridge.models import ScimToken


def _slug():
    return f"cli-{secrets.token_hex(4)}"


def test_accounts_create_and_list(cli):
    """A created account shows in the list, in text and JSON."""
    slug = _slug()
    assert (
        cli("accounts", "create", slug, "--name", "Acme Inc").stdout == f"created account {slug}\n"
    )
    assert f"{slug}\tAcme Inc" in cli("accounts", "list").stdout
    assert {"slug": slug, "name": "Acme Inc"} in __import__("json").loads(
        cli("accounts", "list", "--json").stdout
    )


def test_duplicate_account_is_an_error(cli):
    """Creating an existing slug fails with a message on stderr and exit 1."""
    slug = _slug()
    cli("accounts", "create", slug)
    result = cli("accounts", "create", slug)
    assert result.exit_code == 1
    assert f"account '{slug}' already exists" in result.stderr


def test_bad_slug_is_an_error(cli):
    """A slug that is not lower-case letters, digits and hyphens is refused with the rule."""
    result = cli("accounts", "create", "Not A Slug")
    assert result.exit_code == 1
    assert "must be lower-case letters" in result.stderr


def test_unknown_account_is_an_error(cli):
    """Every command naming an unknown account says so and exits 1."""
    for args in (
        ("environments", "add", "no-such-acct", "prod"),
        ("environments", "list", "no-such-acct"),
        ("tokens", "issue", "no-such-acct"),
        ("tokens", "list", "no-such-acct"),
        ("tokens", "revoke", "no-such-acct", "1"),
        ("audit", "tail", "no-such-acct"),
        ("audit", "verify", "no-such-acct"),
    ):
        result = cli(*args)
        assert result.exit_code == 1, args
        assert "no account 'no-such-acct'" in result.stderr, args


def test_environments_add_and_list(cli):
    """Environments are added once each and listed with the default marked."""
    slug = _slug()
    cli("accounts", "create", slug)
    assert cli("environments", "add", slug, "production", "--default").exit_code == 0
    assert cli("environments", "add", slug, "staging").exit_code == 0
    assert cli("environments", "list", slug).stdout == "production\t(default)\nstaging\n"
    again = cli("environments", "add", slug, "staging")
    assert again.exit_code == 1 and "already exists" in again.stderr


def test_token_issue_shows_token_once_and_stores_hash(cli, store):
    """The raw token is the last line of output; only its SHA-256 is stored."""
    slug = _slug()
    cli("accounts", "create", slug)
    raw = cli("tokens", "issue", slug, "--label", "okta").stdout.splitlines()[-1]
    assert raw.startswith("ibs_") and len(raw) > 40
    with store.read() as db:
        stored = db.scalars(select(ScimToken).where(ScimToken.prefix == raw[:10])).one()
    assert stored.token_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in repr(vars(stored))
    listing = cli("tokens", "list", slug).stdout
    assert "okta" in listing and "active" in listing and raw not in listing


def test_revoked_token_stops_working_at_once(cli, store):
    """After `tokens revoke`, the token authenticates nothing; revoking twice is an error."""
    slug = _slug()
    cli("accounts", "create", slug)
    output = cli("tokens", "issue", slug).stdout.splitlines()
    raw, token_id = output[-1], output[0].split()[1]
    account, _ = accounts.authenticate(store, raw)
    assert account.slug == slug
    assert cli("tokens", "revoke", slug, token_id).exit_code == 0
    with pytest.raises(Unauthorized, match="revoked"):
        accounts.authenticate(store, raw)
    again = cli("tokens", "revoke", slug, token_id)
    assert again.exit_code == 1 and "already revoked" in again.stderr
    unknown = cli("tokens", "revoke", slug, "999999")
    assert unknown.exit_code == 1 and "no token 999999" in unknown.stderr


def test_token_of_one_account_cannot_revoke_from_another(cli):
    """A token id is only found within its own account."""
    a, b = _slug(), _slug()
    cli("accounts", "create", a)
    cli("accounts", "create", b)
    token_id = cli("tokens", "issue", a).stdout.splitlines()[0].split()[1]
    result = cli("tokens", "revoke", b, token_id)
    assert result.exit_code == 1 and f"no token {token_id} in account '{b}'" in result.stderr


def test_unknown_token_is_unauthorized(store):
    """A token never issued is refused."""
    with pytest.raises(Unauthorized, match="unknown"):
        accounts.authenticate(store, "ibs_" + secrets.token_urlsafe(32))


def test_token_last_used_is_recorded(cli, store):
    """Authenticating records when the token was last used."""
    slug = _slug()
    cli("accounts", "create", slug)
    raw = cli("tokens", "issue", slug).stdout.splitlines()[-1]
    assert "never used" in cli("tokens", "list", slug).stdout
    accounts.authenticate(store, raw)
    assert "never used" not in cli("tokens", "list", slug).stdout


def test_commands_on_unmigrated_database_say_what_to_do(empty_database_url, tmp_path):
    """Before `idbridge db upgrade`, commands fail with that advice, not a traceback."""
    from tests.conftest import Cli

    cli = Cli({"BRIDGE_DATABASE_URL": empty_database_url(), "BRIDGE_INSTANCE_PATH": str(tmp_path)})
    result = cli("accounts", "list")
    assert result.exit_code == 1
    assert "run `idbridge db upgrade` first" in result.stderr
    assert cli("db", "upgrade").exit_code == 0
    assert cli("accounts", "list").exit_code == 0


@pytest.mark.skipif(
    shutil.which("idbridge", path=str(Path(sys.executable).parent)) is None,
    reason="the console script is installed by `pip install -e .` (make test does)",
)
def test_console_script_prints_token_alone_on_last_line(database_url, tmp_path):
    """The installed `idbridge` command works end to end in a real process."""
    exe = str(Path(sys.executable).parent / "idbridge")
    env = {**os.environ, "BRIDGE_DATABASE_URL": database_url, "BRIDGE_INSTANCE_PATH": str(tmp_path)}
    slug = _slug()
    subprocess.run([exe, "accounts", "create", slug], env=env, check=True, capture_output=True)
    out = subprocess.run(
        [exe, "tokens", "issue", slug], env=env, check=True, capture_output=True, text=True
    ).stdout
    last = out.rstrip("\n").splitlines()[-1]
    assert last.startswith("ibs_") and " " not in last


def test_commands_start_without_alembic():
    """Importing the CLI (every `idbridge` command does, before it runs) loads no Alembic: it
    took ~0.17 s, a quarter of a command's start, and only `db upgrade`, `demo` and /readyz
    use it (bridge.schema imports it there)."""
    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import bridge.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
