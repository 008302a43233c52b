"""`idbridge console link`: a one-time sign-in link for an account's first admin."""

from __future__ import annotations

import click

from bridge import admins, setup_links
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


@console.command("setup-link")
@click.argument("slug")
@click.option("--sso", is_flag=True, help="The link may connect an IdP from its metadata.")
@click.option("--scim", is_flag=True, help="The link may issue one SCIM token.")
@click.option(
    "--expires",
    "hours",
    default=72,
    show_default=True,
    type=click.IntRange(1, setup_links.MAX_HOURS),
    help="Hours the link works.",
)
@pass_ctx
@fails_cleanly
def setup_link(ctx: Context, slug: str, sso: bool, scim: bool, hours: int) -> None:
    """Print a set-up link for SLUG's IT admin (both steps when neither flag is given)."""
    steps = [name for name, wanted in (("sso", sso), ("scim", scim)) if wanted]
    issued = setup_links.issue(ctx.store, slug, steps, hours=hours, actor=ctx.actor)
    click.echo(
        f"set-up link for {slug} ({', '.join(issued.steps)}), "
        f"valid until {issued.expires:%Y-%m-%d %H:%M} UTC, each step once:"
    )
    click.echo(f"{ctx.settings.base_url}/console/{slug}/setup/{issued.raw}")


COMMANDS = (console,)
