"""The `idbridge` command (DESIGN §3): one module per command group, mounted on `main`."""

from bridge.cli import (  # noqa: F401  (each module adds its group to main)
    access,
    accounts,
    api_keys,
    audit,
    clients,
    db,
    demo,
    groups,
    idps,
    logins,
    policy,
    sp_keys,
    tokens,
    users,
    vocabulary,
    webhooks,
)
from bridge.cli.base import add_adapter_commands, main

add_adapter_commands()

__all__ = ["main"]
