"""People and their access: users list|show|explain (the API's services, for scripts and
break-glass use)."""

from __future__ import annotations

from typing import Any

import click

from bridge import directory, planning
from bridge.accounts import get_account
from bridge.cli.base import Context, emit, fails_cleanly, main, pass_ctx
from bridge.manual import ROLES


@main.group("users")
def users_group() -> None:
    """Users and their effective access."""


@users_group.command("list")
@click.argument("slug")
@click.option("--text", "-q", help="Text in userName, name or e-mail.")
@click.option("--role", type=click.Choice(ROLES))
@click.option("--group", help="A group's display name.")
@click.option("--environment")
@click.option("--active/--inactive", default=None)
@click.option("--provenance", help="scim, saml, manual, policy or policy:<rule>.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@fails_cleanly
def users_list(
    ctx: Context,
    slug: str,
    text: str | None,
    role: str | None,
    group: str | None,
    environment: str | None,
    active: bool | None,
    provenance: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List the users of SLUG, filtered, by userName."""
    f = directory.UserFilter(text, role, group, environment, active, provenance)
    with ctx.store.read() as db:
        account = get_account(db, slug)
        users, _ = directory.list_users(db, account.id, f, cursor=None, limit=limit)
        rows = [
            {
                "id": str(u.id),
                "user_name": u.user_name,
                "active": u.active,
                "role": (directory.effective_access(db, u)["role"] or {}).get("role"),
            }
            for u in users
        ]
    if as_json:
        emit(rows)
        return
    for row in rows:
        state = "inactive" if row["active"] is False else "active"
        click.echo(f"{row['user_name']}\t{row['role'] or '-'}\t{state}\t{row['id']}")


def _show(ctx: Context, slug: str, user_name: str) -> dict[str, Any]:
    with ctx.store.read() as db:
        account = get_account(db, slug)
        user = directory.user_by_name(db, account.id, user_name)
        return {
            "id": str(user.id),
            "user_name": user.user_name,
            "active": user.active,
            "access": directory.effective_access(db, user),
        }


@users_group.command("show")
@click.argument("slug")
@click.argument("user_name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@fails_cleanly
def users_show(ctx: Context, slug: str, user_name: str, as_json: bool) -> None:
    """A user of SLUG with every row of their access and its provenance."""
    doc = _show(ctx, slug, user_name)
    if as_json:
        emit(doc)
        return
    access = doc["access"]
    click.echo(f"{doc['user_name']} ({doc['id']}){' inactive' if doc['active'] is False else ''}")
    role = access["role"]
    click.echo(f"role: {role['role']} [{role['provenance']}]" if role else "role: -")
    for e in access["environments"]:
        click.echo(f"environment: {e['environment']} [{e['provenance']}]")
    for g in access["groups"]:
        click.echo(f"group: {g['group']} [{g['provenance']}]")
    for g in access["grants"]:
        via = f" (group grant: {g['source']})" if g["source"] else ""
        what = f"{g['environment']} {g['kind']} {g['path']} {g['level']}"
        click.echo(f"grant: {what} [{g['provenance']}]{via}")


@users_group.command("explain")
@click.argument("slug")
@click.argument("user_name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@fails_cleanly
def users_explain(ctx: Context, slug: str, user_name: str, as_json: bool) -> None:
    """Why a user of SLUG has what they have: the policy rule by rule, then every stored row."""
    with ctx.store.read() as db:
        account = get_account(db, slug)
        user = directory.user_by_name(db, account.id, user_name)
        choice, decision, access = directory.explain(db, account, user, ctx.store.policies)
    rows = directory.reasons(access)
    if as_json:
        emit(
            {
                "policy": choice.source,
                "policy_error": choice.error,
                "decision": decision and planning.decision_json(decision),
                "rows": rows,
            }
        )
        return
    click.echo(f"policy: {choice.source}" + (f" ({choice.error})" if choice.error else ""))
    if decision is not None:
        for step in decision.explanation:
            click.echo(f"  [{'x' if step.matched else ' '}] {step.rule}: {step.detail}")
    click.echo("stored access:")
    for row in rows:
        click.echo(f"  {row['what']} {row['value']}: {row['why']}")
