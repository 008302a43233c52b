"""Typed settings, read from the environment when the app or the CLI starts (never at import)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

DEFAULT_INSTANCE = "instance"
MIN_SECRET_BYTES = 32  # the key seals SP private keys (HKDF-SHA256 -> AES-256-GCM): 256 bits


class SettingsError(ValueError):
    """A setting the service refuses to start with; the message says what to change."""


@dataclass(frozen=True)
class Settings:
    """Everything a deployment configures (DESIGN §3)."""

    database_url: str
    base_url: str
    policy_dir: Path
    instance_path: Path
    secret_key: str | None = None
    max_request_bytes: int = 1_048_576
    log_level: str = "INFO"
    allow_private_metadata: bool = False
    allow_private_webhooks: bool = False
    metrics_token: str | None = None
    metrics_bind: str | None = None
    metrics_account_label: bool = False
    otlp_endpoint: str | None = None
    scim_log_days: int = 14
    delivery_log_days: int = 30
    login_log_days: int = 90

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read BRIDGE_* variables; anything in `overrides` wins."""
        env = os.environ if env is None else env
        instance = Path(env.get("BRIDGE_INSTANCE_PATH", DEFAULT_INSTANCE)).absolute()
        settings = cls(
            database_url=env.get("BRIDGE_DATABASE_URL") or f"sqlite:///{instance / 'bridge.db'}",
            base_url=(env.get("BRIDGE_BASE_URL") or "http://127.0.0.1:8000").rstrip("/"),
            policy_dir=Path(env.get("BRIDGE_POLICY_DIR") or instance / "policies"),
            instance_path=instance,
            secret_key=env.get("BRIDGE_SECRET_KEY") or None,
            max_request_bytes=int(env.get("BRIDGE_MAX_REQUEST_BYTES") or 1_048_576),
            log_level=env.get("BRIDGE_LOG_LEVEL") or "INFO",
            allow_private_metadata=env.get("BRIDGE_ALLOW_PRIVATE_METADATA", "") in ("1", "true"),
            allow_private_webhooks=env.get("BRIDGE_ALLOW_PRIVATE_WEBHOOKS", "") in ("1", "true"),
            metrics_token=env.get("BRIDGE_METRICS_TOKEN") or None,
            metrics_bind=env.get("BRIDGE_METRICS_BIND") or None,
            metrics_account_label=env.get("BRIDGE_METRICS_ACCOUNT_LABEL", "") in ("1", "true"),
            otlp_endpoint=env.get("BRIDGE_OTLP_ENDPOINT") or None,
            scim_log_days=int(env.get("BRIDGE_SCIM_LOG_DAYS") or 14),
            delivery_log_days=_days(env, "BRIDGE_DELIVERY_LOG_DAYS", 30),
            login_log_days=_days(env, "BRIDGE_LOGIN_LOG_DAYS", 90),
        )
        return replace(settings, **overrides)

    def ensure_folders(self) -> Settings:
        """The instance folder and its policy folder exist (the README's walk-through copies
        files into the policy folder before anything else would make it)."""
        self.instance_path.mkdir(parents=True, exist_ok=True)
        self.policy_dir.mkdir(parents=True, exist_ok=True)
        return self

    def ensure_secret_key(self) -> Settings:
        """Settings with a secret key: the configured one, or one kept in the instance folder."""
        if self.secret_key:
            size = len(self.secret_key.encode("utf-8"))
            if size < MIN_SECRET_BYTES:
                raise SettingsError(
                    f"BRIDGE_SECRET_KEY is {size} bytes; it must be at least {MIN_SECRET_BYTES} "
                    "(it signs sessions and seals SP private keys). Make one with "
                    "`python -c 'import secrets; print(secrets.token_hex(32))'`, or unset it "
                    "to use the key generated in the instance folder."
                )
            return self
        path = self.instance_path / "secret_key"
        if not path.exists():
            # Several workers may start at once: write aside, then link into place atomically.
            self.instance_path.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".secret_key.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return replace(self, secret_key=path.read_text().strip())


def _days(env: Mapping[str, str], name: str, default: int) -> int:
    """A retention in whole days, at least 1."""
    raw = env.get(name) or str(default)
    if not raw.isdigit() or int(raw) < 1:
        raise SettingsError(f"{name} must be a whole number of days, at least 1 (not {raw!r})")
    return int(raw)
