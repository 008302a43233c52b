"""Reading an account's people and their access: what the API, the console and the CLI show.

Every row of a user's effective access carries its provenance: `scim`, `saml`, `policy:<rule>`,
`manual`, and `group:<name>` for a grant held through a group (with the group grant's own
provenance beside it). Lists page with a keyset cursor on (userName, id), so a page boundary never
moves when users are added or removed before it. Reads only; changes go through bridge.manual.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, exists, false, func, or_, select
from sqlalchemy.orm import Session

import policies
from bridge import profiles
from bridge.access import POLICY, access_of
from bridge.errors import InvalidInput, NotFound
from bridge.models import (
    Account,
    Environment,
    EnvironmentAccess,
    Grant,
    Group,
    Membership,
    RoleAssignment,
    User,
    UserEmail,
    fold,
)
from bridge.policy import Choice, PolicyRegistry, policy_for


@dataclass(frozen=True)
class UserFilter:
    """What a user list is narrowed to; None leaves a criterion out."""

    text: str | None = None
    role: str | None = None
    group: str | None = None
    environment: str | None = None
    active: bool | None = None
    provenance: str | None = None


def encode_cursor(*values: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[str]:
    """The values a cursor carries, or InvalidInput (a cursor is only ever one we made)."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("the cursor is not one this API gave out") from None
    if (
        not isinstance(values, list)
        or len(values) != size
        or not all(isinstance(v, str) for v in values)
    ):
        raise InvalidInput("the cursor is not one this API gave out")
    return values


def _provenance_match(column: Any, provenance: str) -> Any:
    return column.startswith(POLICY) if provenance == "policy" else column == provenance


def _filtered(account_id: int, f: UserFilter) -> Select[User]:
    stmt = select(User).where(User.account_id == account_id)
    if f.text:
        needle = fold(f.text)
        stmt = stmt.where(
            or_(
                User.user_name_key.contains(needle, autoescape=True),
                User.display_name.icontains(f.text, autoescape=True),
                exists().where(
                    UserEmail.user_id == User.id,
                    UserEmail.value_key.contains(needle, autoescape=True),
                ),
            )
        )
    if f.role:
        stmt = stmt.where(
            exists().where(RoleAssignment.user_id == User.id, RoleAssignment.role == f.role)
        )
    if f.group:
        stmt = stmt.where(
            exists().where(
                Membership.user_id == User.id,
                Membership.group_id == Group.id,
                Group.account_id == account_id,
                Group.display_name_key == fold(f.group),
            )
        )
    if f.environment:
        env_ids = (
            select(Environment.id)
            .where(Environment.account_id == account_id, Environment.name == f.environment)
            .scalar_subquery()
        )
        stmt = stmt.where(
            exists().where(
                EnvironmentAccess.user_id == User.id,
                or_(
                    EnvironmentAccess.environment_id.is_(None),
                    EnvironmentAccess.environment_id == env_ids,
                ),
            )
        )
    if f.active is not None:
        # NULL means the IdP never said: only an explicit false is inactive.
        stmt = stmt.where(User.active.is_not(false()) if f.active else User.active.is_(false()))
    if f.provenance:
        p = f.provenance
        stmt = stmt.where(
            or_(
                exists().where(
                    RoleAssignment.user_id == User.id,
                    _provenance_match(RoleAssignment.provenance, p),
                ),
                exists().where(
                    EnvironmentAccess.user_id == User.id,
                    _provenance_match(EnvironmentAccess.provenance, p),
                ),
                exists().where(
                    Membership.user_id == User.id, _provenance_match(Membership.provenance, p)
                ),
                exists().where(Grant.user_id == User.id, _provenance_match(Grant.provenance, p)),
            )
        )
    return stmt


def list_users(
    db: Session, account_id: int, f: UserFilter, *, cursor: str | None, limit: int
) -> tuple[list[User], str | None]:
    """A page of the account's users by userName, and the cursor of the next page."""
    stmt = _filtered(account_id, f).order_by(User.user_name_key, User.id).limit(limit + 1)
    if cursor:
        key, last_id = decode_cursor(cursor, 2)
        after = _uuid(last_id)
        stmt = stmt.where(
            or_(
                User.user_name_key > key,
                (User.user_name_key == key) & (User.id > after),
            )
        )
    rows = list(db.scalars(stmt))
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor(rows[-1].user_name_key, str(rows[-1].id)) if more and rows else None
    return rows, nxt


def get_user(db: Session, account_id: int, user_id: uuid.UUID) -> User:
    """A user of the account, or NotFound (another account's user is not found either)."""
    user = db.scalar(select(User).where(User.account_id == account_id, User.id == user_id))
    if user is None:
        raise NotFound(f"no user {user_id}")
    return user


def effective_access(db: Session, user: User) -> dict[str, Any]:
    """Role, environments, groups, own grants and grants held through groups, with provenance."""
    own = access_of(db, user)
    memberships = db.execute(
        select(Group.id, Group.display_name, Membership.provenance)
        .join(Membership, Membership.group_id == Group.id)
        .where(Membership.user_id == user.id)
        .order_by(Group.display_name_key, Membership.provenance)
    ).all()
    via = db.execute(
        select(Group.display_name, Environment.name, Grant.kind, Grant.path, Grant.level)
        .add_columns(Grant.provenance)
        .join(Grant, Grant.group_id == Group.id)
        .join(Environment, Environment.id == Grant.environment_id)
        .where(Group.id.in_({gid for gid, _, _ in memberships}))
    ).all()
    grants = [{**row, "source": None} for row in own["grants"]]
    grants += sorted(
        (
            {
                "environment": env,
                "kind": kind,
                "path": path,
                "level": level,
                "provenance": f"group:{name}",
                "source": prov,
            }
            for name, env, kind, path, level, prov in via
        ),
        key=lambda r: (r["environment"], r["kind"], r["path"], r["provenance"]),
    )
    return {
        "role": own["role"],
        "environments": own["environments"],
        "groups": [
            {"group": name, "group_id": str(gid), "provenance": prov}
            for gid, name, prov in memberships
        ],
        "grants": grants,
    }


def who_has(
    db: Session, account_id: int, environment: str, kind: str, path: str
) -> list[dict[str, Any]]:
    """Everyone with a grant covering `path` (the path or a folder above it) in `environment`,
    directly or through a group, each with the grant's provenance."""
    env = db.scalar(
        select(Environment).where(
            Environment.account_id == account_id, Environment.name == environment
        )
    )
    if env is None:
        raise NotFound(f"no environment {environment!r}")
    grants = db.execute(
        select(Grant).where(
            Grant.account_id == account_id, Grant.environment_id == env.id, Grant.kind == kind
        )
    ).scalars()
    covering = [g for g in grants if _covers(g.path, path, kind)]
    rows: list[dict[str, Any]] = []
    for grant in covering:
        base = {"path": grant.path, "level": grant.level}
        if grant.user_id is not None:
            user = db.get_one(User, grant.user_id)
            rows.append({**base, **_who(user), "provenance": grant.provenance, "source": None})
            continue
        group = db.get_one(Group, grant.group_id)
        for user, membership in db.execute(
            select(User, Membership.provenance)
            .join(Membership, Membership.user_id == User.id)
            .where(Membership.group_id == group.id)
        ):
            rows.append(
                {
                    **base,
                    **_who(user),
                    "provenance": f"group:{group.display_name}",
                    "source": grant.provenance,
                    "membership": membership,
                }
            )
    return sorted(rows, key=lambda r: (r["user_name"].casefold(), r["path"], r["provenance"]))


def _covers(granted: str, asked: str, kind: str) -> bool:
    """A folder grant covers its own path and everything below it; a collection only itself."""
    if kind == "collection" or granted == asked:
        return granted == asked
    return asked.startswith(granted if granted.endswith("/") else granted + "/")


def _who(user: User) -> dict[str, Any]:
    return {"user_id": str(user.id), "user_name": user.user_name, "active": user.active}


WHY = {
    "scim": "pushed by the IdP over SCIM",
    "saml": "sent by the IdP at SAML login",
    "manual": "given by hand (API, console or CLI)",
}


def why(provenance: str) -> str:
    """A row's provenance in words a person can act on."""
    if provenance.startswith(POLICY):
        return f"policy rule {provenance.removeprefix(POLICY)!r}"
    if provenance.startswith("group:"):
        return f"member of group {provenance.removeprefix('group:')!r}"
    return WHY.get(provenance, provenance)


def reasons(access: dict[str, Any]) -> list[dict[str, str]]:
    """Every row of effective access as (what, value, provenance, why)."""
    rows: list[tuple[str, str, str]] = []
    if access["role"]:
        rows.append(("role", access["role"]["role"], access["role"]["provenance"]))
    rows += [("environment", e["environment"], e["provenance"]) for e in access["environments"]]
    rows += [("group", g["group"], g["provenance"]) for g in access["groups"]]
    rows += [
        ("grant", f"{r['environment']}:{r['kind']}:{r['path']}:{r['level']}", r["provenance"])
        for r in access["grants"]
    ]
    return [{"what": w, "value": v, "provenance": p, "why": why(p)} for w, v, p in rows]


def explain(
    db: Session, account: Account, user: User, registry: PolicyRegistry | None
) -> tuple[Choice, policies.Decision | None, dict[str, Any]]:
    """Why the user has what they have: the policy's decision rule by rule, and every stored
    row (manual, SCIM, group) with the reason it is there."""
    choice = policy_for(db, account, registry)
    profile = profiles.stored(db, user)
    decision = policies.evaluate(choice.policy, profile) if choice.policy is not None else None
    return choice, decision, effective_access(db, user)


def environment_names(db: Session, account_id: int) -> list[Environment]:
    return list(
        db.scalars(
            select(Environment)
            .where(Environment.account_id == account_id)
            .order_by(Environment.name)
        )
    )


def list_groups(
    db: Session, account_id: int, *, text: str | None, cursor: str | None, limit: int
) -> tuple[list[tuple[Group, int]], str | None]:
    """A page of the account's groups by name, each with its member count."""
    members = (
        select(func.count(func.distinct(Membership.user_id)))
        .where(Membership.group_id == Group.id)
        .correlate(Group)
        .scalar_subquery()
    )
    stmt = (
        select(Group, members)
        .where(Group.account_id == account_id)
        .order_by(Group.display_name_key, Group.id)
        .limit(limit + 1)
    )
    if text:
        stmt = stmt.where(Group.display_name_key.contains(fold(text), autoescape=True))
    if cursor:
        key, last = decode_cursor(cursor, 2)
        after = _uuid(last)
        stmt = stmt.where(
            or_(Group.display_name_key > key, (Group.display_name_key == key) & (Group.id > after))
        )
    rows = [(g, int(n)) for g, n in db.execute(stmt)]
    more = len(rows) > limit
    rows = rows[:limit]
    last_group = rows[-1][0] if rows else None
    nxt = (
        encode_cursor(last_group.display_name_key, str(last_group.id))
        if more and last_group
        else None
    )
    return rows, nxt


def get_group(db: Session, account_id: int, group_id: uuid.UUID) -> Group:
    """A group of the account, or NotFound."""
    group = db.scalar(select(Group).where(Group.account_id == account_id, Group.id == group_id))
    if group is None:
        raise NotFound(f"no group {group_id}")
    return group


def group_members(
    db: Session, group: Group, *, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of a group's memberships (a user once per provenance), by userName."""
    stmt = (
        select(User, Membership.provenance)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.group_id == group.id)
        .order_by(User.user_name_key, User.id, Membership.provenance)
        .limit(limit + 1)
    )
    if cursor:
        key, last, prov = decode_cursor(cursor, 3)
        after = _uuid(last)
        stmt = stmt.where(
            or_(
                User.user_name_key > key,
                (User.user_name_key == key) & (User.id > after),
                (User.user_name_key == key) & (User.id == after) & (Membership.provenance > prov),
            )
        )
    rows = list(db.execute(stmt))
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = None
    if more and rows:
        user, prov = rows[-1]
        nxt = encode_cursor(user.user_name_key, str(user.id), prov)
    return [{**_who(u), "provenance": p} for u, p in rows], nxt


def _uuid(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise InvalidInput("the cursor is not one this API gave out") from None


def member_count(db: Session, group: Group) -> int:
    """How many distinct users are in the group (through any provenance)."""
    return int(
        db.scalar(
            select(func.count(func.distinct(Membership.user_id))).where(
                Membership.group_id == group.id
            )
        )
        or 0
    )


def user_by_name(db: Session, account_id: int, user_name: str) -> User:
    """A user of the account by userName (case-insensitive), or NotFound."""
    user = db.scalar(
        select(User).where(User.account_id == account_id, User.user_name_key == fold(user_name))
    )
    if user is None:
        raise NotFound(f"no user {user_name!r}")
    return user


def group_by_name(db: Session, account_id: int, name: str) -> Group:
    """A group of the account by display name (case-insensitive), or NotFound."""
    group = db.scalar(
        select(Group).where(Group.account_id == account_id, Group.display_name_key == fold(name))
    )
    if group is None:
        raise NotFound(f"no group {name!r}")
    return group
