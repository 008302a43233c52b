"""Groups from the command line: groups list|show (members with provenance, grants)."""

from __future__ import annotations

from typing import Any

import click

from bridge import access, directory
from bridge.accounts import get_account
from bridge.cli.base import Context, emit, fails_cleanly, main, pass_ctx


@main.group("groups")
def groups_group() -> None:
    """User groups."""


@groups_group.command("list")
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@fails_cleanly
def groups_list(ctx: Context, slug: str, as_json: bool) -> None:
    """The groups of SLUG with who manages them and their member counts."""
    with ctx.store.read() as db:
        account = get_account(db, slug)
        rows, _ = directory.list_groups(db, account.id, text=None, cursor=None, limit=100_000)
        out = [
            {"id": str(g.id), "name": g.display_name, "managed_by": g.managed_by, "members": n}
            for g, n in rows
        ]
    if as_json:
        emit(out)
        return
    for row in out:
        click.echo(f"{row['name']}\t{row['managed_by']}\t{row['members']} members\t{row['id']}")


@groups_group.command("show")
@click.argument("slug")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@fails_cleanly
def groups_show(ctx: Context, slug: str, name: str, as_json: bool) -> None:
    """A group of SLUG: its grants and its members, each with provenance."""
    with ctx.store.read() as db:
        account = get_account(db, slug)
        group = directory.group_by_name(db, account.id, name)
        members, _ = directory.group_members(db, group, cursor=None, limit=1_000_000)
        doc: dict[str, Any] = {
            "id": str(group.id),
            "name": group.display_name,
            "managed_by": group.managed_by,
            "grants": access.group_grants(db, group),
            "members": members,
        }
    if as_json:
        emit(doc)
        return
    click.echo(f"{doc['name']} ({doc['id']}), managed by {doc['managed_by']}")
    for g in doc["grants"]:
        click.echo(
            f"grant: {g['environment']} {g['kind']} {g['path']} {g['level']} [{g['provenance']}]"
        )
    for m in doc["members"]:
        click.echo(f"member: {m['user_name']} [{m['provenance']}]")
