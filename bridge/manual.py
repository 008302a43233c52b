"""Access given by hand (API, console, CLI): rows with provenance `manual`, through the one write
path, audited with the user's state before and after.

Manual rows are never touched by a policy re-evaluation or a SCIM change (bridge.access replaces
only `policy:*` rows); a manual role outranks the policy's. Clearing a manual role hands the role
back to the policy at once (the user is re-evaluated in the same transaction). Every change is
checked against the account policy's guards before it commits: a change that would leave no user
with a `keep_at_least_one` role is refused (GuardRefused) and nothing is written. Concurrency:
the user's row is locked (FOR UPDATE) for the transaction, so two changes to one user queue.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

import policies
from bridge import access, provisioning
from bridge.access import group_grants, record_group_grants
from bridge.accounts import get_account
from bridge.errors import Conflict, GuardRefused, InvalidInput, NotFound
from bridge.models import (
    Account,
    Environment,
    EnvironmentAccess,
    Grant,
    Group,
    Membership,
    RoleAssignment,
    User,
)
from bridge.store import Store

MANUAL = "manual"
ROLES = (
    "master_admin",
    "admin",
    "technical_admin",
    "media_library_admin",
    "billing",
    "reports",
    "media_library_user",
)
KINDS = ("folder", "collection")
LEVELS = ("viewer", "contributor", "editor", "manager")
ALL = "all"


@dataclass(frozen=True)
class GrantSpec:
    """A manual grant: environment name, folder or collection path, level."""

    environment: str
    kind: str
    path: str
    level: str

    def check(self) -> None:
        if self.kind not in KINDS:
            raise InvalidInput(f"kind must be one of {', '.join(KINDS)}")
        if self.level not in LEVELS:
            raise InvalidInput(f"level must be one of {', '.join(LEVELS)}")
        if not self.path.strip() or len(self.path) > 1024:
            raise InvalidInput("path must be 1 to 1024 characters")


UserChange = Callable[[Session, Account, User], None]


def _change_user(
    store: Store, account_id: int, user_id: uuid.UUID, change: UserChange, *, actor: str
) -> dict[str, Any]:
    """Run `change` on the locked user, re-apply the policy, enforce guards, audit."""

    def work(db: Session) -> dict[str, Any]:
        account = db.get_one(Account, account_id)
        user = db.scalar(
            select(User).where(User.account_id == account_id, User.id == user_id).with_for_update()
        )
        if user is None:
            raise NotFound(f"no user {user_id}")
        before = provisioning.snapshot(db, user)
        change(db, account, user)
        db.flush()
        choice = provisioning.reapply(db, account, user, registry=store.policies, actor=actor)
        if choice.policy is not None and user.active is not False:
            held = (before["access"].get("role") or {}).get("role")
            now = db.scalar(select(RoleAssignment.role).where(RoleAssignment.user_id == user.id))
            lost = {held} - {now} if isinstance(held, str) else set()
            check_guards(db, account, choice.policy, lost=lost)
        provisioning.record_change(
            db, account, user, before, actor=actor, action="user.manual_access"
        )
        return provisioning.snapshot(db, user)["access"]  # type: ignore[no-any-return]

    return store.write(work)


def check_guards(db: Session, account: Account, policy: policies.Policy, *, lost: set[str]) -> None:
    """Refuse (GuardRefused) when the change took away a role (`lost`: the roles the changed
    user held before it) that the policy must keep and no active user holds now. A change that
    takes no holder away is never refused: an account left without one (a new account, say) can
    still be worked on while someone is given the role."""
    guarded = [role for role in policy.guards.keep_at_least_one if role in lost]
    if not guarded:
        return
    db.flush()
    # Counted under the account row's lock: two concurrent removals of the last two holders
    # queue, and the second counts after the first committed (bridge.guards.other_holder).
    db.scalar(select(Account.id).where(Account.id == account.id).with_for_update(key_share=True))
    for role in guarded:
        held = db.scalar(
            select(func.count())
            .select_from(RoleAssignment)
            .join(User, User.id == RoleAssignment.user_id)
            .where(
                User.account_id == account.id,
                User.active.is_not(False),  # a deactivated holder cannot act on the role
                RoleAssignment.role == role,
            )
        )
        if not held:
            raise GuardRefused(f"keep_at_least_one: {role}", f"no user would keep the role {role}")


def set_role(
    store: Store, account_id: int, user_id: uuid.UUID, role: str | None, *, actor: str
) -> dict[str, Any]:
    """Give the user a manual role (it outranks the policy's), or clear it (None)."""
    if role is not None and role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}")

    def change(db: Session, account: Account, user: User) -> None:
        current = db.scalar(select(RoleAssignment).where(RoleAssignment.user_id == user.id))
        if role is None:
            if current is None or current.provenance != MANUAL:
                raise Conflict("the user has no manual role to clear")
            db.delete(current)
        elif current is None:
            db.add(RoleAssignment(user_id=user.id, role=role, provenance=MANUAL))
        else:
            current.role, current.provenance = role, MANUAL

    return _change_user(store, account_id, user_id, change, actor=actor)


def _environment(db: Session, account: Account, name: str) -> Environment:
    env = db.scalar(
        select(Environment).where(Environment.account_id == account.id, Environment.name == name)
    )
    if env is None:
        raise NotFound(f"no environment {name!r}")
    return env


def set_environment(
    store: Store, account_id: int, user_id: uuid.UUID, name: str, *, present: bool, actor: str
) -> dict[str, Any]:
    """Add (present) or remove manual access to an environment (`all`: every environment)."""

    def change(db: Session, account: Account, user: User) -> None:
        env_id = None if name == ALL else _environment(db, account, name).id
        row = db.scalar(
            select(EnvironmentAccess).where(
                EnvironmentAccess.user_id == user.id,
                EnvironmentAccess.provenance == MANUAL,
                EnvironmentAccess.environment_id.is_(None)
                if env_id is None
                else EnvironmentAccess.environment_id == env_id,
            )
        )
        if present and row is None:
            db.add(EnvironmentAccess(user_id=user.id, environment_id=env_id, provenance=MANUAL))
        elif not present:
            if row is None:
                raise NotFound(f"the user has no manual access to {name!r}")
            db.delete(row)

    return _change_user(store, account_id, user_id, change, actor=actor)


def _put_grant(
    db: Session, account: Account, holder: dict[str, Any], spec: GrantSpec, *, present: bool
) -> None:
    """Add, re-level (present) or remove the manual grant `spec` of one holder: `holder` is
    {"user_id": ...} or {"group_id": ...}."""
    (column, holder_id), *_ = holder.items()
    env = _environment(db, account, spec.environment)
    row = db.scalar(
        select(Grant).where(
            getattr(Grant, column) == holder_id,
            Grant.environment_id == env.id,
            Grant.kind == spec.kind,
            Grant.path == spec.path,
            Grant.provenance == MANUAL,
        )
    )
    if not present:
        if row is None:
            who = "user" if column == "user_id" else "group"
            raise NotFound(f"the {who} has no manual grant on {spec.kind} {spec.path!r}")
        db.delete(row)
    elif row is not None:
        row.level = spec.level
    else:
        db.add(
            Grant(
                account_id=account.id,
                environment_id=env.id,
                kind=spec.kind,
                path=spec.path,
                level=spec.level,
                provenance=MANUAL,
                **holder,
            )
        )


def set_user_grant(
    store: Store,
    account_id: int,
    user_id: uuid.UUID,
    spec: GrantSpec,
    *,
    present: bool,
    actor: str,
) -> dict[str, Any]:
    """Add or change (present) or remove a manual grant of the user."""
    spec.check()

    def change(db: Session, account: Account, user: User) -> None:
        _put_grant(db, account, {"user_id": user.id}, spec, present=present)

    return _change_user(store, account_id, user_id, change, actor=actor)


def set_group_grant(
    store: Store,
    account_id: int,
    group_id: uuid.UUID,
    spec: GrantSpec,
    *,
    present: bool,
    actor: str,
) -> list[dict[str, Any]]:
    """Add or change (present) or remove a manual grant of a group; audited on the group."""
    spec.check()

    def work(db: Session) -> list[dict[str, Any]]:
        account = db.get_one(Account, account_id)
        group = db.scalar(
            select(Group)
            .where(Group.account_id == account_id, Group.id == group_id)
            .with_for_update()
        )
        if group is None:
            raise NotFound(f"no group {group_id}")
        before = group_grants(db, group)
        _put_grant(db, account, {"group_id": group.id}, spec, present=present)
        after = record_group_grants(
            db, account.id, group, before, actor=actor, action=access.GROUP_MANUAL
        )
        if after != before:
            group.touch()
        return after

    return store.write(work)


def set_membership(
    store: Store,
    account_id: int,
    user_id: uuid.UUID,
    group_id: uuid.UUID,
    *,
    present: bool,
    actor: str,
) -> dict[str, Any]:
    """Put the user in a group by hand (present), or take that manual membership away."""

    def change(db: Session, account: Account, user: User) -> None:
        group = db.scalar(select(Group).where(Group.account_id == account.id, Group.id == group_id))
        if group is None:
            raise NotFound(f"no group {group_id}")
        row = db.scalar(
            select(Membership).where(
                Membership.group_id == group.id,
                Membership.user_id == user.id,
                Membership.provenance == MANUAL,
            )
        )
        if present and row is None:
            db.add(Membership(group_id=group.id, user_id=user.id, provenance=MANUAL))
        elif not present:
            if row is None:
                raise NotFound("the user is not a manual member of this group")
            db.delete(row)

    return _change_user(store, account_id, user_id, change, actor=actor)


def account_by_slug(store: Store, slug: str) -> int:
    """The id of the account with this slug (for the CLI, which names accounts by slug)."""
    with store.read() as db:
        return get_account(db, slug).id
