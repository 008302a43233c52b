"""Manual access from the command line: access grant|revoke|set-role (break-glass and scripts),
through the same service as the API (bridge.manual): audited, guarded."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import click

from bridge import directory, manual
from bridge.accounts import get_account
from bridge.cli.base import Context, fails_cleanly, main, pass_ctx

F = TypeVar("F", bound=Callable[..., Any])


@main.group("access")
def access_group() -> None:
    """Manual access: grants, roles."""


def _ids(
    ctx: Context, slug: str, user_name: str | None, group: str | None
) -> tuple[int, uuid.UUID]:
    if (user_name is None) == (group is None):
        raise click.UsageError("give exactly one of USER_NAME or --group")
    with ctx.store.read() as db:
        account = get_account(db, slug)
        if group is not None:
            return account.id, directory.group_by_name(db, account.id, group).id
        return account.id, directory.user_by_name(db, account.id, user_name or "").id


def grant_options(level: bool) -> Callable[[F], F]:
    """SLUG [USER_NAME] --group --environment --path --kind [--level]."""

    def wrap(fn: Any) -> Any:
        fn = click.option("--kind", type=click.Choice(manual.KINDS), default="folder")(fn)
        fn = click.option("--path", required=True, help="Folder (e.g. marketing/) or collection.")(
            fn
        )
        fn = click.option("--environment", required=True)(fn)
        fn = click.option("--group", help="Grant to this group instead of a user.")(fn)
        if level:
            fn = click.option("--level", required=True, type=click.Choice(manual.LEVELS))(fn)
        return click.argument("slug")(click.argument("user_name", required=False)(fn))

    return wrap


@access_group.command("grant")
@grant_options(level=True)
@pass_ctx
@fails_cleanly
def access_grant(
    ctx: Context,
    slug: str,
    user_name: str | None,
    group: str | None,
    environment: str,
    path: str,
    kind: str,
    level: str,
) -> None:
    """Give USER_NAME (or --group) a manual grant in SLUG."""
    account_id, subject = _ids(ctx, slug, user_name, group)
    spec = manual.GrantSpec(environment, kind, path, level)
    if group is not None:
        manual.set_group_grant(ctx.store, account_id, subject, spec, present=True, actor=ctx.actor)
    else:
        manual.set_user_grant(ctx.store, account_id, subject, spec, present=True, actor=ctx.actor)
    click.echo(f"granted {level} on {kind} {path} in {environment} to {group or user_name}")


@access_group.command("revoke")
@grant_options(level=False)
@pass_ctx
@fails_cleanly
def access_revoke(
    ctx: Context,
    slug: str,
    user_name: str | None,
    group: str | None,
    environment: str,
    path: str,
    kind: str,
) -> None:
    """Remove a manual grant of USER_NAME (or --group) in SLUG."""
    account_id, subject = _ids(ctx, slug, user_name, group)
    spec = manual.GrantSpec(environment, kind, path, "viewer")
    if group is not None:
        manual.set_group_grant(ctx.store, account_id, subject, spec, present=False, actor=ctx.actor)
    else:
        manual.set_user_grant(ctx.store, account_id, subject, spec, present=False, actor=ctx.actor)
    click.echo(
        f"revoked the manual grant on {kind} {path} in {environment} of {group or user_name}"
    )


@access_group.command("set-role")
@click.argument("slug")
@click.argument("user_name")
@click.argument("role", required=False, type=click.Choice(manual.ROLES))
@click.option("--clear", is_flag=True, help="Clear the manual role (the policy's applies).")
@pass_ctx
@fails_cleanly
def access_set_role(ctx: Context, slug: str, user_name: str, role: str | None, clear: bool) -> None:
    """Give USER_NAME of SLUG a manual ROLE (it outranks the policy's), or --clear it."""
    if (role is None) != clear:
        raise click.UsageError("give a ROLE or --clear")
    account_id, user_id = _ids(ctx, slug, user_name, None)
    access = manual.set_role(ctx.store, account_id, user_id, role, actor=ctx.actor)
    now = access["role"]
    click.echo(
        f"{user_name}: role {now['role']} [{now['provenance']}]" if now else f"{user_name}: no role"
    )
