"""Issue 9: policy files and patterns that ate CPU (7), smaller correctness holes (10) and
secrets at rest (11), each through HTTP or the CLI, on SQLite and PostgreSQL."""

import json
import os
import stat
import textwrap

import pytest
from sqlalchemy import func, select

from bridge import create_app
from bridge.models import AuditEvent, User
from bridge.settings import Settings, SettingsError
from policies.conditions import compile_regex
from tests.integration.test_scim_protocol import scim_error

ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
GOOD = """
account: {slug}
environments: [production, staging]
defaults: {{role: media_library_user, environments: [production]}}
rules:
  - name: tri-admins
    when: {{groups: {{matches: ".*-.*-.*-admins"}}}}
    then: {{role: admin}}
"""


def write(path, text):
    path.write_text(textwrap.dedent(text))
    st = path.stat()  # every edit visible even within one mtime tick
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


@pytest.fixture
def policy_path(settings, account):
    path = settings.policy_dir / f"{account.slug}.yaml"
    yield path
    path.unlink(missing_ok=True)


def stored_role(store, user_id):
    from bridge.access import access_of

    with store.read() as db:
        return access_of(db, db.get(User, user_id))["role"]["role"]


def test_polynomial_pattern_runs_on_re2_and_decides(cli, account, tmp_path):
    """`.*-.*-.*-admins` (accepted at load) runs on RE2: a login carrying 40 values of 1 KB
    (36 s of backtracking on Python's engine) is decided at once, both ways."""
    assert type(compile_regex(".*-.*-.*-admins", True)).__module__.startswith("re2")
    (tmp_path / "policies").mkdir()
    write(tmp_path / "policies" / f"{account.slug}.yaml", GOOD.format(slug=account.slug))
    claim = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"
    near_miss = ["a-" * 509 + "admin"] * 40  # 1,023 characters each
    for groups, role in (
        (near_miss, "media_library_user"),
        ([*near_miss, "x-y-z-admins"], "admin"),
    ):
        profile = tmp_path / "p.json"
        profile.write_text(json.dumps({"userName": "u@a.test", "attributes": {claim: groups}}))
        result = cli("policy", "explain", account.slug, "--profile", str(profile), "--json")
        assert result.exit_code == 0, result.output
        decision = json.loads(result.output)
        assert decision["role"]["value"] == role and decision["errors"] == []


def test_pattern_re2_cannot_run_is_refused_at_load(cli, tmp_path):
    """A lookahead (no linear-time engine runs it) is a policy error naming file and line."""
    path = tmp_path / "acme.yaml"
    path.write_text(
        "account: acme\nrules:\n  - name: r\n    when: {email: {matches: '(?=a).*'}}\n"
        "    then: {role: admin}\n"
    )
    result = cli("policy", "check", str(path))
    assert result.exit_code == 1
    assert "not supported by the linear-time engine (RE2)" in result.output
    assert "acme.yaml:4" in result.output


def test_deeply_nested_file_is_a_policy_error_and_last_good_keeps_serving(
    scim, store, client, policy_path, settings
):
    """3,000 nested `[` is a policy error like any other: /readyz stays 200 and names the file
    (not its absolute path), SCIM writes keep the last good version's decisions."""
    write(policy_path, GOOD.format(slug=scim.account.slug))
    group = scim.post("Groups", json={"displayName": "x-y-z-admins"}).json
    first = scim.post("Users", json={"userName": "a@a.test"})
    write(policy_path, f"account: {scim.account.slug}\nrules: " + "[" * 3000 + "]" * 3000 + "\n")
    ready = client.get("/readyz")
    assert ready.status_code == 200
    errors = ready.json["policy_errors"]
    assert policy_path.name in errors
    assert "nest deeper than 64" in errors[policy_path.name]
    assert str(settings.policy_dir) not in ready.get_data(as_text=True)
    second = scim.post("Users", json={"userName": "b@a.test"})
    assert first.status_code == second.status_code == 201
    members = [{"value": first.json["id"]}, {"value": second.json["id"]}]
    patch = {"Operations": [{"op": "add", "path": "members", "value": members}]}
    assert scim.patch(f"Groups/{group['id']}", json=patch).status_code == 204
    import uuid

    assert stored_role(store, uuid.UUID(second.json["id"])) == "admin"  # the last good version


def test_patch_cannot_give_a_user_another_users_external_id(scim, store):
    """Two users never share an externalId: PATCH and PUT to a taken one are 409 uniqueness."""
    one = scim.post("Users", json={"userName": "one@a.test", "externalId": "ext-1"}).json
    two = scim.post("Users", json={"userName": "two@a.test", "externalId": "ext-2"}).json
    patch = {"Operations": [{"op": "replace", "path": "externalId", "value": "ext-1"}]}
    body = scim_error(scim.patch(f"Users/{two['id']}", json=patch), 409, "uniqueness")
    assert "externalId is already taken" in body["detail"]
    put = scim.put(f"Users/{two['id']}", json={"userName": "two@a.test", "externalId": "ext-1"})
    scim_error(put, 409, "uniqueness")
    assert scim.get(f"Users/{two['id']}").json["externalId"] == "ext-2"
    assert scim.get(f"Users/{one['id']}").json["externalId"] == "ext-1"


@pytest.mark.parametrize(
    "spell", [str.upper, lambda s: "{" + s + "}", lambda s: s.replace("-", "")]
)
def test_a_user_cannot_be_their_own_manager_in_any_spelling(scim, store, spell):
    """The manager id is compared as a UUID: upper case, braces or no dashes are still self."""
    user = scim.post("Users", json={"userName": "boss@a.test"}).json
    patch = {
        "Operations": [{"op": "replace", "path": f"{ENT}:manager", "value": spell(user["id"])}]
    }
    body = scim_error(scim.patch(f"Users/{user['id']}", json=patch), 400, "invalidValue")
    assert "their own manager" in body["detail"]
    assert ENT not in scim.get(f"Users/{user['id']}").json


def test_sqlite_database_file_is_private(tmp_path):
    """The SQLite file (PII, token hashes, sealed SP keys) is created 0600, and an existing 0644
    file is made 0600 when the service starts."""
    from bridge.store import Store

    fresh = tmp_path / "new" / "bridge.db"
    Store(f"sqlite:///{fresh}").dispose()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    old = tmp_path / "old.db"
    old.touch(mode=0o644)
    old.chmod(0o644)
    Store(f"sqlite:///{old}").dispose()
    assert stat.S_IMODE(old.stat().st_mode) == 0o600


def test_sqlite_file_made_by_the_cli_is_private(cli, tmp_path):
    """`idbridge db upgrade` on a new SQLite file leaves it 0600, with its WAL files."""
    path = tmp_path / "cli.db"
    env = {**cli.env, "BRIDGE_DATABASE_URL": f"sqlite:///{path}"}
    from click.testing import CliRunner

    from bridge.cli import main

    result = CliRunner().invoke(main, ["db", "upgrade"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for p in tmp_path.glob("cli.db*"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


def test_short_secret_key_is_refused_at_start(tmp_path, database_url):
    """BRIDGE_SECRET_KEY under 32 bytes stops the app from starting with a clear message;
    the generated default and a 32-byte key start."""
    env = {"BRIDGE_INSTANCE_PATH": str(tmp_path), "BRIDGE_DATABASE_URL": database_url}
    with pytest.raises(SettingsError, match="BRIDGE_SECRET_KEY is 1 bytes; it must be at least 32"):
        create_app(Settings.from_env({**env, "BRIDGE_SECRET_KEY": "x"}))
    create_app(Settings.from_env(env)).extensions["bridge.store"].dispose()
    app = create_app(Settings.from_env({**env, "BRIDGE_SECRET_KEY": "k" * 32}))
    app.extensions["bridge.store"].dispose()


def test_short_secret_key_is_a_cli_error(cli, account):
    """The CLI commands that seal keys say the same, on stderr, exit 1, nothing written."""
    from click.testing import CliRunner

    from bridge.cli import main

    env = {**cli.env, "BRIDGE_SECRET_KEY": "short"}
    result = CliRunner().invoke(main, ["sp-keys", "rotate", account.slug], env=env)
    assert result.exit_code == 1
    assert "BRIDGE_SECRET_KEY is 5 bytes; it must be at least 32" in result.output
    assert "Traceback" not in result.output


def test_audit_untouched_by_refused_writes(scim, store):
    """The refusals above write nothing: no audit event for a refused externalId change."""
    two = scim.post("Users", json={"userName": "x@a.test", "externalId": "e1"}).json
    scim.post("Users", json={"userName": "y@a.test", "externalId": "e2"})
    with store.read() as db:
        count = db.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.account_id == scim.account.id)
        )
    patch = {"Operations": [{"op": "replace", "path": "externalId", "value": "e2"}]}
    scim_error(scim.patch(f"Users/{two['id']}", json=patch), 409, "uniqueness")
    with store.read() as db:
        assert count == db.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.account_id == scim.account.id)
        )
