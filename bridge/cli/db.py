"""Schema: `idbridge db upgrade`."""

from __future__ import annotations

import click

from bridge import schema
from bridge.cli.base import Context, fails_cleanly, main, pass_ctx


@main.group()
def db() -> None:
    """The account store's schema."""


@db.command("upgrade")
@pass_ctx
@fails_cleanly
def db_upgrade(ctx: Context) -> None:
    """Create or migrate the schema to the newest revision."""
    try:
        schema.upgrade(ctx.store.engine)
    except RuntimeError as exc:  # a migration that stops on data it must not change (0006, 0013)
        raise click.ClickException(f"upgrade stopped, nothing changed: {exc}") from exc
    click.echo(f"database at {schema.current(ctx.store.engine)}")
