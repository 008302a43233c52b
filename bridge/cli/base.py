"""The core of the `idbridge` command: its context, error handling and the root group."""

from __future__ import annotations

import functools
import getpass
import json
from collections.abc import Callable
from typing import Any, TypeVar

import click
from sqlalchemy.exc import OperationalError, ProgrammingError

from bridge.errors import BridgeError
from bridge.settings import Settings, SettingsError
from bridge.store import Store

F = TypeVar("F", bound=Callable[..., Any])


class Context:
    """Settings and store, made on first use so `--help` needs no database."""

    def __init__(self) -> None:
        self.settings = Settings.from_env()
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self.settings.ensure_folders()
            self._store = Store(self.settings.database_url, policy_dir=self.settings.policy_dir)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.dispose()

    @property
    def actor(self) -> str:
        try:
            return f"cli:{getpass.getuser()}"
        except Exception:  # no login name in some containers
            return "cli"


pass_ctx = click.make_pass_decorator(Context)


def fails_cleanly(fn: F) -> F:
    """Turn domain and schema errors into one line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BridgeError as exc:
            raise click.ClickException(exc.detail) from exc
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from exc
        except (OperationalError, ProgrammingError) as exc:
            detail = str(exc.orig).strip().splitlines()[0]
            raise click.ClickException(
                f"the database is not ready ({detail}); run `idbridge db upgrade` first"
            ) from exc

    return wrapper  # type: ignore[return-value]


def emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group()
@click.pass_context
def main(click_ctx: click.Context) -> None:
    """Identity Bridge: SAML SSO and SCIM provisioning into the account store."""
    try:
        click_ctx.obj = Context()
    except (SettingsError, ValueError) as exc:  # a BRIDGE_* variable that is not usable
        raise click.ClickException(str(exc)) from exc
    click_ctx.call_on_close(click_ctx.obj.close)


def add_adapter_commands() -> None:
    """Commands the protocol adapters bring (e.g. saml's dev IdP), without bridge importing
    them by name: the adapters list is the one composition root (bridge.ADAPTERS)."""
    import importlib

    from bridge import ADAPTERS

    for adapter in ADAPTERS:
        try:
            module = importlib.import_module(f"{adapter}.cli")
        except ModuleNotFoundError:
            continue
        for command in getattr(module, "COMMANDS", ()):
            main.add_command(command)
