"""Settings come from the environment when asked, with documented defaults."""

from pathlib import Path

from bridge.settings import Settings


def test_defaults_follow_design(tmp_path, monkeypatch):
    """Unset variables give the defaults of DESIGN §3, relative to the instance folder."""
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings.database_url == f"sqlite:///{tmp_path / 'instance' / 'bridge.db'}"
    assert settings.base_url == "http://127.0.0.1:8000"
    assert settings.policy_dir == tmp_path / "instance" / "policies"


def test_environment_overrides():
    """BRIDGE_* variables win over defaults; a trailing slash on the base URL is dropped."""
    settings = Settings.from_env(
        {
            "BRIDGE_DATABASE_URL": "postgresql+psycopg://db/bridge",
            "BRIDGE_BASE_URL": "https://sso.example.com/",
            "BRIDGE_POLICY_DIR": "/etc/bridge/policies",
            "BRIDGE_SECRET_KEY": "k" * 32,
        }
    )
    assert settings.database_url == "postgresql+psycopg://db/bridge"
    assert settings.base_url == "https://sso.example.com"
    assert settings.policy_dir == Path("/etc/bridge/policies")
    assert settings.ensure_secret_key().secret_key == "k" * 32


def test_secret_key_generated_once_and_kept(tmp_path):
    """Without BRIDGE_SECRET_KEY a key is made on first run, kept private, and reused."""
    first = Settings.from_env({"BRIDGE_INSTANCE_PATH": str(tmp_path)}).ensure_secret_key()
    second = Settings.from_env({"BRIDGE_INSTANCE_PATH": str(tmp_path)}).ensure_secret_key()
    assert first.secret_key and len(first.secret_key) == 64
    assert second.secret_key == first.secret_key
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]
