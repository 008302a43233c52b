"""Policy guards on the live path: `keep_at_least_one: <role>` holds on every write of access.

`plan` and `apply` refuse a policy version that would leave nobody with a guarded role, but a
valid edit is picked up at once, and the next SCIM change or login re-evaluates its user. So the
one write path asks `hold` before applying a Decision: when it would take a guarded role from
the last user holding it, the user keeps that role (the rest of the Decision applies) and the
refusal is audited with the rule and the guard. Concurrency: the check locks the account row
(FOR NO KEY UPDATE, as the audit chain's head does), so two demotions of the last two holders
queue and the second one sees the first. `breaches` tells /readyz and `idbridge policy check`
whether the active version would break a guard, evaluating only the holders unless they all lose.

A holder is an *active* user with the role (a deactivated one cannot act on it). Deleting or
deactivating the last one (SCIM DELETE, `active: false` by PATCH, PUT or Bulk) is refused
whatever gave them the role: `keep_active_holder` raises `Refused`, the change rolls back whole,
and the refusal is audited on its own (`Refused.record`) once it has.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

import policies
from bridge import audit, profiles
from bridge.errors import GuardRefused
from bridge.models import Account, RoleAssignment, User
from bridge.policy import PolicyRegistry, policy_for

POLICY = "policy:"


def hold(
    db: Session,
    account: Account,
    user: User,
    policy: policies.Policy,
    decision: policies.Decision,
    *,
    actor: str,
) -> policies.Decision:
    """`decision`, or a copy keeping the user's guarded role when no one else would hold it."""
    if not policy.guards.keep_at_least_one:
        return decision
    current = db.scalar(select(RoleAssignment).where(RoleAssignment.user_id == user.id))
    if (
        current is None
        or current.role == decision.role
        or current.role not in policy.guards.keep_at_least_one
        or not current.provenance.startswith(POLICY)  # a manual role is never changed by policy
    ):
        return decision
    if other_holder(db, account, current.role, user):
        return decision
    guard = f"keep_at_least_one: {current.role}"
    audit.record(
        db,
        account.id,
        actor=actor,
        action="user.guard_refused",
        target_type="user",
        target_id=str(user.id),
        before={"role": current.role, "provenance": current.provenance},
        after={
            "refused_role": decision.role,
            "rule": decision.role_rule,
            "guard": guard,
            "kept": current.role,
        },
    )
    return dataclasses.replace(
        decision, role=current.role, role_rule=current.provenance.removeprefix(POLICY)
    )


def other_holder(db: Session, account: Account, role: str, user: User) -> bool:
    """Whether an active user other than `user` holds `role`, asked under the account row's
    lock (FOR NO KEY UPDATE; SQLite's write lock), so two concurrent removals of the last two
    holders queue and the second sees the first (READ COMMITTED: a fresh snapshot per query)."""
    db.scalar(select(Account.id).where(Account.id == account.id).with_for_update(key_share=True))
    found = db.scalar(
        select(RoleAssignment.id)
        .join(User, User.id == RoleAssignment.user_id)
        .where(
            User.account_id == account.id,
            User.active.is_not(False),
            RoleAssignment.role == role,
            RoleAssignment.user_id != user.id,
        )
        .limit(1)
    )
    return found is not None


class Refused(GuardRefused):
    """Deleting or deactivating the last active holder of a guarded role; `record` audits it in a
    transaction of its own, after the refused one rolled back."""

    def __init__(self, guard: str, detail: str, *, account_id: int, event: dict[str, Any]):
        super().__init__(guard, detail)
        self.account_id, self.event = account_id, event

    def record(self, db: Session) -> None:
        audit.record(db, self.account_id, action="user.guard_refused", **self.event)


def keep_active_holder(
    db: Session,
    account: Account,
    user: User,
    policy: policies.Policy | None,
    *,
    change: str,
    actor: str,
) -> None:
    """Refuse (`Refused`) `change` ("delete" or "deactivate") of the last active user holding a
    role the policy keeps at least one of, whatever gave them the role."""
    if policy is None or not policy.guards.keep_at_least_one:
        return
    current = db.scalar(select(RoleAssignment).where(RoleAssignment.user_id == user.id))
    if current is None or current.role not in policy.guards.keep_at_least_one:
        return
    if other_holder(db, account, current.role, user):
        return
    guard = f"keep_at_least_one: {current.role}"
    raise Refused(
        guard,
        f"{user.user_name!r} is the last active {current.role} of the account, so the {change} "
        f"is refused; give another active user the role {current.role} first",
        account_id=account.id,
        event={
            "actor": actor,
            "target_type": "user",
            "target_id": str(user.id),
            "before": {"role": current.role, "provenance": current.provenance, "active": True},
            "after": {"refused": change, "guard": guard, "kept": current.role},
        },
    )


_CACHE: dict[int, tuple[policies.Policy, float, list[str]]] = {}
CACHE_SECONDS = 60.0


def breaches(db: Session, account: Account, policy: policies.Policy) -> list[str]:
    """The guards `policy` would break on this account's users (cached a minute per version)."""
    cached = _CACHE.get(account.id)
    if cached is not None and cached[0] is policy and time.monotonic() - cached[1] < CACHE_SECONDS:
        return cached[2]
    found = [
        f"guard keep_at_least_one: no user would keep the role {role}"
        for role in policy.guards.keep_at_least_one
        if not _kept(db, account, policy, role)
    ]
    _CACHE[account.id] = (policy, time.monotonic(), found)
    return found


def all_breaches(db: Session, registry: PolicyRegistry | None) -> dict[str, list[str]]:
    """Every account whose active policy would break one of its guards, with which."""
    found = {}
    for account in db.scalars(select(Account).order_by(Account.slug)):
        if registry is None or registry.path_for(account.slug) is None:
            continue  # the account's defaults have no guards
        choice = policy_for(db, account, registry)
        if choice.policy is not None and choice.policy.guards.keep_at_least_one:
            broken = breaches(db, account, choice.policy)
            if broken:
                found[account.slug] = broken
    return found


def _kept(db: Session, account: Account, policy: policies.Policy, role: str) -> bool:
    """Whether someone would hold `role` under `policy`: a holder who keeps it, else anyone."""
    decide = policies.Evaluator(policy)
    holders = db.execute(
        select(User, RoleAssignment.provenance)
        .join(RoleAssignment, RoleAssignment.user_id == User.id)
        .where(
            User.account_id == account.id,
            User.active.is_not(False),
            RoleAssignment.role == role,
        )
    ).all()
    for user, provenance in holders:
        if not provenance.startswith(POLICY):
            return True  # manual: policy never takes it
        decision = decide(profiles.stored(db, user))
        if not decision.ok or decision.role == role:
            return True  # an error keeps access as it is
    last: uuid.UUID | None = None
    while True:  # nobody holding it keeps it: would anyone gain it?
        stmt = (
            select(User)
            .where(User.account_id == account.id, User.active.is_not(False))
            .order_by(User.id)
            .limit(500)
        )
        if last is not None:
            stmt = stmt.where(User.id > last)
        users = db.scalars(stmt).all()
        if not users:
            return False  # (the live guard still keeps the last holder's role in the store)
        for user in users:
            decision = decide(profiles.stored(db, user))
            if decision.ok and decision.role == role:
                return True
        last = users[-1].id
