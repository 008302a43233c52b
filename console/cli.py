"""`idbridge console link`: a one-time sign-in link for an account's first admin."""

from __future__ import annotations

import click

from bridge import admins
from bridge.cli.base import Context, fails_cleanly, pass_ctx


@click.group("console")
def console() -> None:
    """The admin console at /console/<account>/."""


@console.command("link")
@click.argument("slug")
@click.argument("user_name", metavar="USERNAME")
@click.option(
    "--minutes",
    default=admins.LINK_MINUTES,
    show_default=True,
    type=click.IntRange(1, 60),
    help="How long the link works.",
)
@pass_ctx
@fails_cleanly
def link(ctx: Context, slug: str, user_name: str, minutes: int) -> None:
    """Print a one-time sign-in link for USERNAME (an admin of SLUG), for before SSO works."""
    issued = admins.issue_link(ctx.store, slug, user_name, actor=ctx.actor, minutes=minutes)
    click.echo(
        f"one-time console sign-in for {issued.user_name}, "
        f"valid until {issued.expires:%Y-%m-%d %H:%M} UTC, usable once:"
    )
    click.echo(f"{ctx.settings.base_url}/console/{slug}/link/{issued.raw}")


COMMANDS = (console,)
