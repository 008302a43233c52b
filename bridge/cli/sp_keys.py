"""The account's SAML SP keys: rotate, retire."""

from __future__ import annotations

import click

from bridge import accounts, sp_keys
from bridge.cli.base import Context, fails_cleanly, main, pass_ctx


@main.group("sp-keys")
def sp_keys_group() -> None:
    """The account's SAML SP signing/encryption keys."""


@sp_keys_group.command("rotate")
@click.argument("slug")
@pass_ctx
@fails_cleanly
def sp_keys_rotate(ctx: Context, slug: str) -> None:
    """Add a new SP key that signs from now on; the previous one stays published until retired."""
    settings = ctx.settings.ensure_secret_key()
    with ctx.store.read() as session:
        account = accounts.get_account(session, slug)
    sp_keys.active(ctx.store, account.id, slug, settings.secret_key or "")
    key_id = sp_keys.rotate(ctx.store, account.id, slug, settings.secret_key or "", actor=ctx.actor)
    click.echo(f"new SP key {key_id} for {slug}")
    click.echo("give the IdPs the SP metadata again, then retire the previous key")


@sp_keys_group.command("retire")
@click.argument("slug")
@click.argument("key_id", type=int)
@pass_ctx
@fails_cleanly
def sp_keys_retire(ctx: Context, slug: str, key_id: int) -> None:
    """Stop publishing and using SP key KEY_ID."""
    with ctx.store.read() as session:
        account = accounts.get_account(session, slug)
    sp_keys.retire(ctx.store, account.id, key_id, actor=ctx.actor)
    click.echo(f"retired SP key {key_id} of {slug}")
