"""The audit chain: tail, verify and checkpoints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from bridge import accounts, audit, checkpoints
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


@audit_group.command("checkpoint")
@click.argument("slug")
@click.option(
    "--append", "out", type=click.Path(dir_okay=False), help="Append to FILE, not stdout."
)
@pass_ctx
@fails_cleanly
def audit_checkpoint(ctx: Context, slug: str, out: str | None) -> None:
    """Print (or append to FILE) a MAC'd checkpoint of SLUG's chain head, to keep off-database."""
    secret = ctx.settings.ensure_secret_key().secret_key or ""
    with ctx.store.read() as session:
        body = checkpoints.take(session, accounts.get_account(session, slug), secret)
    line = json.dumps(body, sort_keys=True)
    if out is None:
        click.echo(line)
        return
    with Path(out).open("a", encoding="utf-8") as f:
        f.write(line + "\n")
    click.echo(f"checkpoint of {slug} at event {body['seq']} appended to {out}")


@audit_group.command("verify")
@click.argument("slug")
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=click.Path(dir_okay=False),
    help="Also check the chain against the checkpoints in FILE.",
)
@pass_ctx
@fails_cleanly
def audit_verify(ctx: Context, slug: str, checkpoint_file: str | None) -> None:
    """Check SLUG's audit chain (and its checkpoints); exit 1 naming the first break."""
    secret = (ctx.settings.ensure_secret_key().secret_key or "") if checkpoint_file else ""
    with ctx.store.read() as session:
        account = accounts.get_account(session, slug)
        count, broken = audit.verify(session, account.id)
        held, miss = (
            checkpoints.check(session, account, Path(checkpoint_file), secret)
            if checkpoint_file and broken is None
            else (0, None)
        )
    if broken is not None:
        click.echo(
            f"audit chain of {slug} is BROKEN at event {broken.seq}: {broken.reason} "
            f"({count} events before it verified)",
            err=True,
        )
        sys.exit(1)
    if miss is not None:
        click.echo(
            f"audit chain of {slug} does NOT match checkpoint {miss.where}: {miss.reason}",
            err=True,
        )
        sys.exit(1)
    click.echo(f"audit chain of {slug} verified: {count} events intact")
    if checkpoint_file:
        click.echo(f"{held} checkpoints of {slug} in {checkpoint_file} match")
