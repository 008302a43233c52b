"""Accounts and their product environments."""

from __future__ import annotations

import click

from bridge import accounts
from bridge.cli.base import Context, emit, fails_cleanly, main, pass_ctx


@main.group("accounts")
def accounts_group() -> None:
    """Accounts (tenants)."""


@accounts_group.command("create")
@click.argument("slug")
@click.option("--name", help="Display name (defaults to the slug).")
@pass_ctx
@fails_cleanly
def accounts_create(ctx: Context, slug: str, name: str | None) -> None:
    """Create account SLUG."""
    account = accounts.create_account(ctx.store, slug, name=name, actor=ctx.actor)
    click.echo(f"created account {account.slug}")


@accounts_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@fails_cleanly
def accounts_list(ctx: Context, as_json: bool) -> None:
    """List accounts."""
    with ctx.store.read() as session:
        rows = [{"slug": a.slug, "name": a.name} for a in accounts.list_accounts(session)]
    if as_json:
        emit(rows)
        return
    for row in rows:
        click.echo(f"{row['slug']}\t{row['name']}")


@main.group("environments")
def environments_group() -> None:
    """Product environments of an account."""


@environments_group.command("add")
@click.argument("slug")
@click.argument("name")
@click.option("--default", is_flag=True, help="New users get this environment by default.")
@pass_ctx
@fails_cleanly
def environments_add(ctx: Context, slug: str, name: str, default: bool) -> None:
    """Add environment NAME to account SLUG."""
    accounts.add_environment(ctx.store, slug, name, default=default, actor=ctx.actor)
    click.echo(f"added environment {name} to {slug}")


@environments_group.command("list")
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@fails_cleanly
def environments_list(ctx: Context, slug: str, as_json: bool) -> None:
    """List the environments of account SLUG."""
    with ctx.store.read() as session:
        envs = accounts.list_environments(session, slug)
    if as_json:
        emit([{"name": e.name, "default": e.is_default} for e in envs])
        return
    for env in envs:
        click.echo(env.name + ("\t(default)" if env.is_default else ""))
