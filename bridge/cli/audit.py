"""The audit chain: tail and verify."""

from __future__ import annotations

import sys

import click

from bridge import accounts, audit
from bridge.cli.base import Context, emit, fails_cleanly, main, pass_ctx


@main.group("audit")
def audit_group() -> None:
    """The tamper-evident audit log."""


@audit_group.command("tail")
@click.argument("slug")
@click.option("-n", "limit", default=20, show_default=True, help="How many events.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@fails_cleanly
def audit_tail(ctx: Context, slug: str, limit: int, as_json: bool) -> None:
    """Show the newest audit events of SLUG, oldest first."""
    with ctx.store.read() as session:
        account = accounts.get_account(session, slug)
        rows = [audit.describe(e) for e in audit.tail(session, account.id, limit)]
    if as_json:
        emit(rows)
        return
    for row in rows:
        click.echo(
            f"{row['seq']:>6} {row['at']} {row['actor']:<20} {row['action']:<18} {row['target']}"
        )


@audit_group.command("verify")
@click.argument("slug")
@pass_ctx
@fails_cleanly
def audit_verify(ctx: Context, slug: str) -> None:
    """Check SLUG's audit chain; exit 1 naming the first broken event."""
    with ctx.store.read() as session:
        account = accounts.get_account(session, slug)
        count, broken = audit.verify(session, account.id)
    if broken is not None:
        click.echo(
            f"audit chain of {slug} is BROKEN at event {broken.seq}: {broken.reason} "
            f"({count} events before it verified)",
            err=True,
        )
        sys.exit(1)
    click.echo(f"audit chain of {slug} verified: {count} events intact")
