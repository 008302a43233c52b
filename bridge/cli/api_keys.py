"""Management API keys: issue, list, revoke."""

from __future__ import annotations

import click

from bridge import api_keys
from bridge.accounts import get_account
from bridge.cli.base import Context, emit, fails_cleanly, main, pass_ctx


@main.group("api-keys")
def api_keys_group() -> None:
    """Management API keys (Authorization: Bearer ibk_...)."""


@api_keys_group.command("issue")
@click.argument("slug")
@click.option("--scope", required=True, type=click.Choice(api_keys.SCOPES))
@click.option("--label", default="", help="Who or what the key is for.")
@click.option("--expires", "expires_days", type=int, help="Days until the key stops working.")
@pass_ctx
@fails_cleanly
def api_keys_issue(
    ctx: Context, slug: str, scope: str, label: str, expires_days: int | None
) -> None:
    """Issue an API key for SLUG; it is shown once, alone on the last line."""
    key = api_keys.issue(
        ctx.store, slug, scope=scope, label=label, expires_days=expires_days, actor=ctx.actor
    )
    until = f", expires {key.expires.isoformat(timespec='seconds')}" if key.expires else ""
    click.echo(
        f"API key {key.id} for {slug}, scope {scope}{until} (shown once; only its hash is stored):"
    )
    click.echo(key.raw)


@api_keys_group.command("list")
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@fails_cleanly
def api_keys_list(ctx: Context, slug: str, as_json: bool) -> None:
    """List the API keys of SLUG (never their values)."""
    with ctx.store.read() as db:
        rows = [api_keys.describe(k) for k in api_keys.list_keys(db, get_account(db, slug).id)]
    if as_json:
        emit(rows)
        return
    for row in rows:
        state = f"revoked {row['revoked']}" if row["revoked"] else "active"
        if row["expires"] and not row["revoked"]:
            state += f" until {row['expires']}"
        used = row["last_used"] or "never used"
        click.echo(
            f"{row['id']}\t{row['prefix']}…\t{row['scope']}\t{row['label'] or '-'}\t{state}\t{used}"
        )


@api_keys_group.command("revoke")
@click.argument("slug")
@click.argument("key_id", type=int)
@pass_ctx
@fails_cleanly
def api_keys_revoke(ctx: Context, slug: str, key_id: int) -> None:
    """Revoke API key KEY_ID of SLUG, effective immediately."""
    with ctx.store.read() as db:
        account_id = get_account(db, slug).id
    api_keys.revoke(ctx.store, account_id, key_id, actor=ctx.actor)
    click.echo(f"revoked API key {key_id} of {slug}")
