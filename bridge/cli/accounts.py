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


@accounts_group.command("verified-domains")
@click.argument("slug")
@click.argument("domains", nargs=-1)
@click.option("--clear", is_flag=True, help="Remove all of the account's verified domains.")
@pass_ctx
@fails_cleanly
def accounts_verified_domains(
    ctx: Context, slug: str, domains: tuple[str, ...], clear: bool
) -> None:
    """Show account SLUG's verified e-mail domains, or make DOMAINS its whole list (--clear:
    none).

    An IdP added with --link-by-email joins a first login to an existing user only by an
    e-mail address on one of these. They are declared by you, not checked in DNS: declare
    only domains whose mailboxes the account's IdPs vouch for."""
    if clear and domains:
        raise click.UsageError("give domains or --clear, not both")
    with ctx.store.read() as session:
        account = accounts.get_account(session, slug)
        account_id, found = account.id, sorted(account.verified_domains)
    if domains or clear:
        found = accounts.set_verified_domains(ctx.store, account_id, list(domains), actor=ctx.actor)
    click.echo(f"verified domains of {slug}: " + (", ".join(found) if found else "none"))


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
