"""The `idbridge` command (DESIGN §3): one module per command group, mounted on `main`."""

from bridge.cli import (  # noqa: F401  (each module adds its group to main)
    accounts,
    api_keys,
    audit,
    clients,
    db,
    demo,
    idps,
    logins,
    policy,
    sp_keys,
    tokens,
    vocabulary,
    webhooks,
)
from bridge.cli.base import add_adapter_commands, main

add_adapter_commands()

__all__ = ["main"]
