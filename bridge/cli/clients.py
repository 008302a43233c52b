"""OpenID Connect clients (the product signing people in through the bridge); signing keys."""

from __future__ import annotations

from typing import Any

import click

from bridge import clients, signing_keys
from bridge.cli.base import Context, emit, fails_cleanly, main, pass_ctx


@main.group("clients")
def clients_group() -> None:
    """OIDC clients of an account (relying parties)."""


@clients_group.command("add")
@click.argument("slug")
@click.option("--name", required=True, help="What the application is called.")
@click.option(
    "--redirect-uri", "redirect_uris", multiple=True, required=True, help="Exact redirect URI."
)
@click.option("--public", is_flag=True, help="No secret (native/SPA app): PKCE S256 required.")
@click.option("--backchannel-logout-uri", default=None, help="Where logout tokens are POSTed.")
@pass_ctx
@fails_cleanly
def clients_add(
    ctx: Context,
    slug: str,
    name: str,
    redirect_uris: tuple[str, ...],
    public: bool,
    backchannel_logout_uri: str | None,
) -> None:
    """Register a client; the last line is `CLIENT_ID CLIENT_SECRET` (the secret shown once)."""
    made = clients.add(
        ctx.store,
        slug,
        name=name,
        redirect_uris=list(redirect_uris),
        public=public,
        backchannel_logout_uri=backchannel_logout_uri,
        actor=ctx.actor,
    )
    click.echo(
        f"client {made.client_id} for {slug} (the secret is shown once; only its hash is kept):"
    )
    click.echo(f"{made.client_id} {made.secret or '-'}")


@clients_group.command("list")
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@fails_cleanly
def clients_list(ctx: Context, slug: str, as_json: bool) -> None:
    """List the clients of SLUG (never their secrets)."""
    with ctx.store.read() as db:
        rows: list[dict[str, Any]] = [
            {
                "client_id": c.client_id,
                "name": c.name,
                "public": c.public,
                "redirect_uris": list(c.redirect_uris),
                "backchannel_logout_uri": c.backchannel_logout_uri,
            }
            for c in clients.list_for(db, slug)
        ]
    if as_json:
        emit(rows)
        return
    for row in rows:
        kind = "public" if row["public"] else "confidential"
        click.echo(f"{row['client_id']}\t{row['name']}\t{kind}\t{' '.join(row['redirect_uris'])}")


@clients_group.command("remove")
@click.argument("slug")
@click.argument("client_id")
@pass_ctx
@fails_cleanly
def clients_remove(ctx: Context, slug: str, client_id: str) -> None:
    """Remove a client; its codes and tokens stop working at once."""
    clients.remove(ctx.store, slug, client_id, actor=ctx.actor)
    click.echo(f"removed client {client_id} of {slug}")


@clients_group.command("rotate-secret")
@click.argument("slug")
@click.argument("client_id")
@pass_ctx
@fails_cleanly
def clients_rotate(ctx: Context, slug: str, client_id: str) -> None:
    """A new secret (last line: `CLIENT_ID CLIENT_SECRET`); the old one stops working."""
    made = clients.rotate_secret(ctx.store, slug, client_id, actor=ctx.actor)
    click.echo(f"new secret for {client_id} (shown once):")
    click.echo(f"{made.client_id} {made.secret}")


@main.group("oidc-keys")
def oidc_keys_group() -> None:
    """The OIDC issuer's ID-token signing keys."""


@oidc_keys_group.command("rotate")
@pass_ctx
@fails_cleanly
def oidc_keys_rotate(ctx: Context) -> None:
    """A new key signs from now on; the previous one stays in the JWKS for a day."""
    settings = ctx.settings.ensure_secret_key()
    kid = signing_keys.rotate(ctx.store, settings.secret_key or "")
    click.echo(f"new signing key {kid}")
