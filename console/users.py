"""Users: search and filter, a user's effective access with provenance and why, their sessions,
manual access (grants, role), their audit trail. Reads through bridge.directory, changes
through bridge.manual and bridge.sessions."""

from __future__ import annotations

import uuid
from typing import Any

from flask import g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from bridge import audit, directory, manual, planning, sessions
from bridge.errors import InvalidInput
from bridge.models import Account
from bridge.web import get_store
from console.base import PAGE, bp

ACTIVE = {"": None, "yes": True, "no": False}
FILTERS = ("q", "role", "group", "environment", "active", "provenance")


@bp.get("/<slug>/users", endpoint="users")
def users_page(slug: str) -> ResponseReturnValue:
    """The account's users a page at a time, filtered by text, role, group, environment,
    active and provenance."""
    args = {k: request.args.get(k, "").strip() for k in FILTERS}
    if args["active"] not in ACTIVE:
        raise InvalidInput("active must be yes, no or empty")
    if args["role"] and args["role"] not in manual.ROLES:
        raise InvalidInput(f"role must be one of {', '.join(manual.ROLES)}")
    f = directory.UserFilter(
        args["q"] or None,
        args["role"] or None,
        args["group"] or None,
        args["environment"] or None,
        ACTIVE[args["active"]],
        args["provenance"] or None,
    )
    with get_store().read() as db:
        found, nxt = directory.list_users(
            db, g.admin.account_id, f, cursor=request.args.get("cursor") or None, limit=PAGE
        )
        envs = [e.name for e in directory.environment_names(db, g.admin.account_id)]
        rows = [_summary(u) for u in found]
    return render_template(
        "console/users.html",
        users=rows,
        next_cursor=nxt,
        args=args,
        keep={k: v for k, v in args.items() if v},
        roles=manual.ROLES,
        environments=envs,
    )


def _summary(user: Any) -> dict[str, Any]:
    return {
        "id": user.id,
        "user_name": user.user_name,
        "display_name": user.display_name,
        "active": user.active,
        "emails": [e.value for e in user.emails],
    }


@bp.get("/<slug>/users/<uuid:user_id>", endpoint="user")
def user_page(slug: str, user_id: uuid.UUID) -> ResponseReturnValue:
    """A user: attributes, effective access with provenance and why, the policy's reasoning,
    sessions, manual access, audit trail."""
    store = get_store()
    with store.read() as db:
        account = db.get_one(Account, g.admin.account_id)
        user = directory.get_user(db, account.id, user_id)
        choice, decision, access = directory.explain(db, account, user, store.policies)
        live = sessions.live_for_user(db, user.id)
        trail = audit.page(db, account.id, target=f"user:{user.id}", limit=20)
        envs = [e.name for e in directory.environment_names(db, account.id)]
        details = {
            "user_name": user.user_name,
            "display_name": user.display_name,
            "external_id": user.external_id,
            "active": user.active,
            "emails": [e.value for e in user.emails],
            "department": user.department,
            "title": user.title,
            "created": user.created,
            "last_modified": user.last_modified,
        }
    return render_template(
        "console/user.html",
        user_id=user_id,
        user=details,
        access=access,
        why=directory.why,
        policy_source=choice.source,
        policy_error=choice.error,
        decision=None if decision is None else planning.decision_json(decision),
        sessions=live,
        trail=[audit.describe(e) for e in trail],
        roles=manual.ROLES,
        kinds=manual.KINDS,
        levels=manual.LEVELS,
        environments=envs,
    )


def _back(user_id: uuid.UUID, done: str) -> ResponseReturnValue:
    return redirect(url_for("console.user", user_id=user_id, done=done) + "#access")


@bp.post("/<slug>/users/<uuid:user_id>/grants")
def add_grant(slug: str, user_id: uuid.UUID) -> ResponseReturnValue:
    """Give the user a manual grant (or change its level)."""
    spec = grant_spec(level=request.form.get("level", ""))
    manual.set_user_grant(
        get_store(), g.admin.account_id, user_id, spec, present=True, actor=g.admin.actor
    )
    return _back(user_id, "grant-added")


@bp.post("/<slug>/users/<uuid:user_id>/grants/remove")
def remove_grant(slug: str, user_id: uuid.UUID) -> ResponseReturnValue:
    """Take away a manual grant (grants of other provenance stay)."""
    spec = grant_spec(level="viewer")
    manual.set_user_grant(
        get_store(), g.admin.account_id, user_id, spec, present=False, actor=g.admin.actor
    )
    return _back(user_id, "grant-removed")


def grant_spec(*, level: str) -> manual.GrantSpec:
    form = request.form
    spec = manual.GrantSpec(
        form.get("environment", "").strip(),
        form.get("kind", "folder"),
        form.get("path", "").strip(),
        level,
    )
    spec.check()
    return spec


@bp.post("/<slug>/users/<uuid:user_id>/role")
def set_role(slug: str, user_id: uuid.UUID) -> ResponseReturnValue:
    """Set a manual role (it outranks the policy's), or clear it (the policy's applies again)."""
    role = request.form.get("role", "")
    manual.set_role(get_store(), g.admin.account_id, user_id, role or None, actor=g.admin.actor)
    return _back(user_id, "role-set" if role else "role-cleared")


@bp.post("/<slug>/users/<uuid:user_id>/sessions/end")
def end_sessions(slug: str, user_id: uuid.UUID) -> ResponseReturnValue:
    """End one of the user's sessions (`session` given) or all of them."""
    one = request.form.get("session", type=int)
    sessions.end_by_admin(get_store(), g.admin.account_id, user_id, one, actor=g.admin.actor)
    return redirect(url_for("console.user", user_id=user_id, done="sessions-ended") + "#sessions")
