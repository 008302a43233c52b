"""What the product learns about a signed-in person: the ID token's and userinfo's claims.

`sub` is the user's id in the store: stable across renames and e-mail changes (OIDC Core §5.7
says never to key on e-mail). Grants include those a user holds through groups, each with the
environment, kind, path and level, and where it came from.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.access import access_of
from bridge.models import Account, Environment, Grant, Group, Membership, User


def _email(user: User) -> str | None:
    emails = sorted(user.emails, key=lambda e: (not e.primary, e.position))
    if emails:
        return emails[0].value
    return user.user_name if "@" in user.user_name else None


def _name(user: User) -> str:
    if user.display_name:
        return user.display_name
    if user.formatted_name:
        return user.formatted_name
    parts = [p for p in (user.given_name, user.family_name) if p]
    return " ".join(parts) or user.user_name


def identity(db: Session, user_id: uuid.UUID) -> dict[str, Any] | None:
    """The claims of the ID token (None when the user is gone or suspended)."""
    user = db.get(User, user_id)
    if user is None or user.active is False:
        return None
    account = db.get_one(Account, user.account_id)
    granted = access_of(db, user)
    environments = sorted({e["environment"] for e in granted["environments"]})
    claims: dict[str, Any] = {
        "sub": str(user.id),
        "name": _name(user),
        "preferred_username": user.user_name,
        "account": account.slug,
        "role": (granted["role"] or {}).get("role"),
        "environments": environments,
        "groups": sorted({g["group"] for g in granted["groups"]}),
    }
    email = _email(user)
    if email:
        claims["email"] = email
    return claims


def grants(db: Session, user_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every grant the user holds, directly or through a group, with its environment."""
    user = db.get_one(User, user_id)
    direct = [
        {k: g[k] for k in ("environment", "kind", "path", "level", "provenance")}
        for g in access_of(db, user)["grants"]
    ]
    through_groups = db.execute(
        select(Environment.name, Grant.kind, Grant.path, Grant.level, Group.display_name)
        .join(Grant, Grant.environment_id == Environment.id)
        .join(Group, Group.id == Grant.group_id)
        .join(Membership, Membership.group_id == Group.id)
        .where(Membership.user_id == user.id)
        .distinct()
    ).all()
    via = [
        {"environment": e, "kind": k, "path": p, "level": lv, "provenance": f"group:{group}"}
        for e, k, p, lv, group in through_groups
    ]
    return sorted(direct + via, key=lambda g: tuple(g.values()))
