"""Groups: the account's groups with member counts, a group's members (each with the provenance
of their membership) and grants, manual grants of any group, and manual groups made, renamed and
deleted by hand. Reads through bridge.directory, changes through bridge.groups and bridge.manual
(the services the management API uses)."""

from __future__ import annotations

import uuid

from flask import g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from bridge import access, directory, groups, manual
from bridge.errors import InvalidInput
from bridge.web import get_store
from console.base import PAGE, bp
from console.users import grant_spec


@bp.get("/<slug>/groups", endpoint="groups")
def groups_page(slug: str) -> ResponseReturnValue:
    """The account's groups by name, a page at a time, with who manages each."""
    text = request.args.get("q", "").strip()
    with get_store().read() as db:
        rows, nxt = directory.list_groups(
            db,
            g.admin.account_id,
            text=text or None,
            cursor=request.args.get("cursor") or None,
            limit=PAGE,
        )
    return render_template(
        "console/groups.html", rows=rows, next_cursor=nxt, q=text, keep={"q": text or None}
    )


@bp.post("/<slug>/groups")
def create_group(slug: str) -> ResponseReturnValue:
    """Make a manual group (SCIM and policy groups are made by the IdP and the policy)."""
    name = request.form.get("display_name", "")
    out = groups.create_group(
        get_store(), g.admin.account_id, name, actor=g.admin.actor, managed_by=manual.MANUAL
    )
    return redirect(url_for("console.group", group_id=out.group_id, done="created"))


@bp.get("/<slug>/groups/<uuid:group_id>", endpoint="group")
def group_page(slug: str, group_id: uuid.UUID) -> ResponseReturnValue:
    """A group: who manages it, its grants with provenance, its members a page at a time."""
    with get_store().read() as db:
        group = directory.get_group(db, g.admin.account_id, group_id)
        members, nxt = directory.group_members(
            db, group, cursor=request.args.get("cursor") or None, limit=PAGE
        )
        details = {
            "id": group.id,
            "display_name": group.display_name,
            "external_id": group.external_id,
            "managed_by": group.managed_by,
            "members": directory.member_count(db, group),
            "created": group.created,
            "last_modified": group.last_modified,
        }
        grants = access.group_grants(db, group)
        envs = [e.name for e in directory.environment_names(db, g.admin.account_id)]
    return render_template(
        "console/group.html",
        group=details,
        grants=grants,
        members=members,
        next_cursor=nxt,
        why=directory.why,
        kinds=manual.KINDS,
        levels=manual.LEVELS,
        environments=envs,
    )


def _back(group_id: uuid.UUID, done: str, anchor: str = "") -> ResponseReturnValue:
    return redirect(url_for("console.group", group_id=group_id, done=done) + anchor)


@bp.post("/<slug>/groups/<uuid:group_id>/rename")
def rename_group(slug: str, group_id: uuid.UUID) -> ResponseReturnValue:
    """Rename a manual group (a SCIM or policy group is refused: it is changed where it is
    managed)."""
    name = request.form.get("display_name", "")
    groups.update_group(
        get_store(),
        g.admin.account_id,
        group_id,
        lambda _db, _group: groups.GroupChange(display_name=name),
        actor=g.admin.actor,
        managed_by=manual.MANUAL,
    )
    return _back(group_id, "renamed")


@bp.post("/<slug>/groups/<uuid:group_id>/delete")
def delete_group(slug: str, group_id: uuid.UUID) -> ResponseReturnValue:
    """Delete a manual group with its memberships and grants."""
    groups.delete_group(
        get_store(), g.admin.account_id, group_id, actor=g.admin.actor, managed_by=manual.MANUAL
    )
    return redirect(url_for("console.groups", deleted=1))


@bp.post("/<slug>/groups/<uuid:group_id>/grants")
def add_group_grant(slug: str, group_id: uuid.UUID) -> ResponseReturnValue:
    """Give the group a manual grant (or change its level): its members hold it."""
    spec = grant_spec(level=request.form.get("level", ""))
    manual.set_group_grant(
        get_store(), g.admin.account_id, group_id, spec, present=True, actor=g.admin.actor
    )
    return _back(group_id, "grant-added", "#grants")


@bp.post("/<slug>/groups/<uuid:group_id>/grants/remove")
def remove_group_grant(slug: str, group_id: uuid.UUID) -> ResponseReturnValue:
    """Take away a manual grant of the group (the policy's grants are the policy's)."""
    spec = grant_spec(level="viewer")
    manual.set_group_grant(
        get_store(), g.admin.account_id, group_id, spec, present=False, actor=g.admin.actor
    )
    return _back(group_id, "grant-removed", "#grants")


@bp.post("/<slug>/groups/<uuid:group_id>/members")
def add_member(slug: str, group_id: uuid.UUID) -> ResponseReturnValue:
    """Put a user (by userName) in the group by hand."""
    with get_store().read() as db:
        directory.get_group(db, g.admin.account_id, group_id)
        user = directory.user_by_name(db, g.admin.account_id, request.form.get("user_name", ""))
    manual.set_membership(
        get_store(), g.admin.account_id, user.id, group_id, present=True, actor=g.admin.actor
    )
    return _back(group_id, "member-added", "#members")


@bp.post("/<slug>/groups/<uuid:group_id>/members/remove")
def remove_member(slug: str, group_id: uuid.UUID) -> ResponseReturnValue:
    """Take away a manual membership (SCIM and policy memberships stay)."""
    user_id = _uuid(request.form.get("user_id", ""))
    manual.set_membership(
        get_store(), g.admin.account_id, user_id, group_id, present=False, actor=g.admin.actor
    )
    return _back(group_id, "member-removed", "#members")


def _uuid(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise InvalidInput("no such user") from None
