"""SCIM bearer tokens: issue, list, revoke."""

from __future__ import annotations

import click

from bridge import accounts
from bridge.cli.base import Context, emit, fails_cleanly, main, pass_ctx


@main.group("tokens")
def tokens_group() -> None:
    """SCIM bearer tokens."""


@tokens_group.command("issue")
@click.argument("slug")
@click.option("--label", default="", help="What the token is for, e.g. 'okta'.")
@pass_ctx
@fails_cleanly
def tokens_issue(ctx: Context, slug: str, label: str) -> None:
    """Issue a SCIM token for SLUG; it is shown once, alone on the last line."""
    token = accounts.issue_token(ctx.store, slug, label=label, actor=ctx.actor)
    click.echo(f"token {token.id} for {slug} (shown once; only its hash is stored):")
    click.echo(token.raw)


@tokens_group.command("list")
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@fails_cleanly
def tokens_list(ctx: Context, slug: str, as_json: bool) -> None:
    """List the tokens of SLUG (never their values)."""
    with ctx.store.read() as session:
        rows = [
            {
                "id": t.id,
                "label": t.label,
                "prefix": t.prefix,
                "created": t.created.isoformat(timespec="seconds"),
                "last_used": t.last_used and t.last_used.isoformat(timespec="seconds"),
                "revoked": t.revoked and t.revoked.isoformat(timespec="seconds"),
            }
            for t in accounts.list_tokens(session, slug)
        ]
    if as_json:
        emit(rows)
        return
    for row in rows:
        state = f"revoked {row['revoked']}" if row["revoked"] else "active"
        used = row["last_used"] or "never used"
        click.echo(f"{row['id']}\t{row['prefix']}…\t{row['label'] or '-'}\t{state}\t{used}")


@tokens_group.command("revoke")
@click.argument("slug")
@click.argument("token_id", type=int)
@pass_ctx
@fails_cleanly
def tokens_revoke(ctx: Context, slug: str, token_id: int) -> None:
    """Revoke token TOKEN_ID of SLUG, effective immediately."""
    accounts.revoke_token(ctx.store, slug, token_id, actor=ctx.actor)
    click.echo(f"revoked token {token_id} of {slug}")
