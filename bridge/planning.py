"""explain, plan and apply a policy over an account's stored users.

`plan` streams every user in batches (memory stays flat), evaluates the candidate policy on the
same Profile the write path uses, and compares the access the user has now with the access
`apply` would leave: only `policy:*` rows change, `scim`/`saml`/`manual` rows stay. Guards are
checked over the whole account: a plan that would leave no active `master_admin` is refused, and
so is the apply. `apply` re-evaluates through the one write path
(bridge.provisioning.reevaluate), one audit event per changed user with the rules behind each row.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

import policies
from bridge import access, audit, profiles, provisioning
from bridge.accounts import get_account
from bridge.errors import Conflict, InvalidInput, NotFound
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
    UserPhoneNumber,
    fold,
)
from bridge.policy import Choice, policy_for
from bridge.store import Store

BATCH = 1000
POLICY = access.POLICY


@dataclass
class Access:
    """A user's effective access, as comparable sets."""

    role: str | None = None
    role_manual: bool = False
    environments: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    grants: set[str] = field(default_factory=set)
    kept_environments: set[str] = field(default_factory=set)
    kept_groups: set[str] = field(default_factory=set)
    kept_grants: set[str] = field(default_factory=set)
    # groups compare case-insensitively (folded) but are shown as the file or the IdP spells them
    group_names: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    """What one user gains and loses."""

    user_name: str
    user_id: uuid.UUID
    role: tuple[str | None, str | None] | None
    gains: dict[str, list[str]]
    losses: dict[str, list[str]]
    errors: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {
            "user": self.user_name,
            "id": str(self.user_id),
            "role": list(self.role) if self.role else None,
            "gains": self.gains,
            "losses": self.losses,
            "errors": list(self.errors),
        }


@dataclass
class Plan:
    """Who would gain or lose what; `refused` names a guard the result would break."""

    policy_source: str
    users: int = 0
    gaining: int = 0
    losing: int = 0
    role_changes: int = 0
    errors: int = 0
    changes: list[Change] = field(default_factory=list)
    changed_ids: list[uuid.UUID] = field(default_factory=list)
    role_counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    refused: str | None = None
    warnings: list[str] = field(default_factory=list)

    def count(self, change: Change) -> None:
        self.gaining += any(change.gains.values())
        self.losing += any(change.losses.values())
        self.role_changes += bool(change.role)
        self.errors += bool(change.errors)
        if not change.errors:
            self.changed_ids.append(change.user_id)

    def summary(self) -> str:
        return (
            f"{self.users} users: {self.gaining} gain, {self.losing} lose, "
            f"{self.role_changes} change role, {self.errors} kept as they are after errors"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "policy": self.policy_source,
            "users": self.users,
            "gain": self.gaining,
            "lose": self.losing,
            "change_role": self.role_changes,
            "errors": self.errors,
            "refused": self.refused,
            "warnings": self.warnings,
            "changes": [c.describe() for c in self.changes],
        }


def load_candidate(path: str, slug: str) -> policies.Policy:
    """A policy file to plan with; its `account:` must be the account's slug."""
    policy = policies.load(path)
    if policy.account != slug:
        raise InvalidInput(f"{path}: account is {policy.account!r}, not {slug!r}")
    return policy


def explain(
    store: Store,
    slug: str,
    *,
    user_name: str | None = None,
    profile: policies.Profile | None = None,
) -> tuple[Choice, policies.Decision | None, policies.Profile]:
    """The account's policy's decision for a stored user or a captured profile, and why."""
    with store.read() as db:
        account = get_account(db, slug)
        choice = policy_for(db, account, store.policies)
        if profile is None:
            user = db.scalar(
                select(User).where(
                    User.account_id == account.id, User.user_name_key == fold(user_name or "")
                )
            )
            if user is None:
                raise NotFound(f"no user {user_name!r} in account {slug!r}")
            profile = profiles.stored(db, user)
    decision = policies.evaluate(choice.policy, profile) if choice.policy is not None else None
    return choice, decision, profile


def plan(
    store: Store,
    slug: str,
    candidate: policies.Policy | None = None,
    *,
    on_change: Callable[[Change], None] | None = None,
) -> Plan:
    """What applying `candidate` (default: the account's current policy) would change.

    Each user's change goes to `on_change` as it is found (memory stays flat however many
    users change); without one, changes are collected in `Plan.changes`.
    """
    with store.read() as db:
        account = get_account(db, slug)
        if candidate is None:
            choice = policy_for(db, account, store.policies)
            if choice.policy is None:
                raise Conflict(f"the policy of {slug!r} does not load: {choice.error}")
            candidate, source = choice.policy, choice.source
        else:
            source = candidate.file
        result = Plan(source)
        names = set(
            db.scalars(select(Environment.name).where(Environment.account_id == account.id))
        )
        for missing in sorted(set(candidate.environments) - names):
            result.warnings.append(f"environment {missing!r} is not one of the account's")
        decide = policies.Evaluator(candidate)
        for batch in _batches(db, account):
            for user, profile, now in batch:
                result.users += 1
                decision = decide(profile)
                after = _after(now, decision, names) if decision.ok else now
                if after.role and user.active is not False:  # guards count active users
                    result.role_counts[after.role] += 1
                change = _diff(user, now, after, () if decision.ok else decision.errors)
                if change is not None:
                    result.count(change)
                    if on_change is None:
                        result.changes.append(change)
                    else:
                        on_change(change)
    for role in candidate.guards.keep_at_least_one:
        if result.role_counts.get(role, 0) == 0:
            result.refused = f"guard keep_at_least_one: no user would keep the role {role}"
    return result


def apply(store: Store, slug: str, *, actor: str) -> Plan:
    """Re-evaluate every user with the account's current policy, unless a guard refuses."""
    result = plan(store, slug)
    if result.refused:
        raise Conflict(f"refused: {result.refused}")

    def reconcile(db: Session) -> None:
        account = get_account(db, slug)
        choice = policy_for(db, account, store.policies)
        if choice.policy is not None:
            _reconcile_group_grants(db, account, choice.policy, actor=actor)
        audit.record(  # the event feed's policy.applied
            db,
            account.id,
            actor=actor,
            action="policy.apply",
            target_type="account",
            target_id=account.slug,
            after={"policy": choice.source, "users_changing": len(result.changed_ids)},
        )

    store.write(reconcile)
    ids = result.changed_ids
    for start in range(0, len(ids), 200):
        chunk = ids[start : start + 200]

        def work(db: Session, chunk: list[uuid.UUID] = chunk) -> None:
            account = get_account(db, slug)
            provisioning.reevaluate(db, account, chunk, registry=store.policies, actor=actor)

        store.write(work)
    return result


Row = Any
COLUMNS = [
    User.__table__.c[name]
    for name in dict.fromkeys(
        (
            "id",
            "user_name",
            "external_id",
            "active",
            "manager_id",
            "saml_attributes",
            *profiles.SCIM_PATHS,
        )
    )
]


def _batches(db: Session, account: Account) -> Iterator[list[tuple[Row, policies.Profile, Access]]]:
    """Users in id order, a batch at a time (memory stays flat), each with the Profile the
    write path would build and the access stored now; a handful of queries per batch."""
    last: uuid.UUID | None = None
    while True:
        stmt = select(*COLUMNS).where(User.account_id == account.id).order_by(User.id).limit(BATCH)
        if last is not None:
            stmt = stmt.where(User.id > last)
        users = db.execute(stmt).mappings().all()
        if not users:
            return
        ids = [u["id"] for u in users]
        emails = _values(db, UserEmail, ids, primary_first=True)
        phones = _values(db, UserPhoneNumber, ids)
        groups = _scim_groups(db, ids)
        now = _access(db, ids)
        batch = []
        for user in users:
            profile = profiles.build(
                cast(Mapping[str, Any], user),
                emails=emails.get(user["id"], ()),
                phones=phones.get(user["id"], ()),
                groups=groups.get(user["id"], ()),
            )
            batch.append((_Named(user), profile, now[user["id"]]))
        yield batch
        last = ids[-1]


class _Named:
    """A row read as attributes (user_name, id, active), like the User it stands for."""

    def __init__(self, row: Any) -> None:
        self.id, self.user_name, self.active = row["id"], row["user_name"], row["active"]


def _values(
    db: Session, model: Any, ids: list[uuid.UUID], *, primary_first: bool = False
) -> dict[uuid.UUID, tuple[str, ...]]:
    order = (
        [model.user_id, model.primary.desc(), model.position]
        if primary_first
        else [model.user_id, model.position]
    )
    found: dict[uuid.UUID, list[str]] = {}
    for user_id, value in db.execute(
        select(model.user_id, model.value).where(_within(model.user_id, ids)).order_by(*order)
    ):
        found.setdefault(user_id, []).append(value)
    return {k: tuple(v) for k, v in found.items()}


def _within(column: Any, ids: list[uuid.UUID]) -> Any:
    """Rows of a batch's users: a range on the (sorted) batch ids, which an index serves better
    than a thousand-value IN list; rows of other accounts' users in the range are skipped."""
    return column.between(ids[0], ids[-1])


def _scim_groups(db: Session, ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[str, ...]]:
    found: dict[uuid.UUID, list[str]] = {}
    for user_id, name in db.execute(
        select(Membership.user_id, Group.display_name)
        .join(Group, Group.id == Membership.group_id)
        .where(_within(Membership.user_id, ids), Membership.provenance == "scim")
        .order_by(Group.display_name)
    ):
        found.setdefault(user_id, []).append(name)
    return {k: tuple(v) for k, v in found.items()}


def _access(db: Session, ids: list[uuid.UUID]) -> dict[uuid.UUID, Access]:
    found: dict[uuid.UUID, Access] = {i: Access() for i in ids}
    for user_id, role, prov in db.execute(
        select(RoleAssignment.user_id, RoleAssignment.role, RoleAssignment.provenance).where(
            _within(RoleAssignment.user_id, ids)
        )
    ):
        if user_id not in found:
            continue
        found[user_id].role, found[user_id].role_manual = role, not prov.startswith(POLICY)
    for user_id, name, prov in db.execute(
        select(EnvironmentAccess.user_id, Environment.name, EnvironmentAccess.provenance)
        .select_from(EnvironmentAccess)
        .outerjoin(Environment, Environment.id == EnvironmentAccess.environment_id)
        .where(_within(EnvironmentAccess.user_id, ids))
    ):
        if user_id in found:
            _add(found[user_id], "environments", name or "all", prov)
    for user_id, name, prov in db.execute(
        select(Membership.user_id, Group.display_name, Membership.provenance)
        .join(Group, Group.id == Membership.group_id)
        .where(_within(Membership.user_id, ids))
    ):
        if user_id in found:
            _add(found[user_id], "groups", fold(name), prov)
            found[user_id].group_names.setdefault(fold(name), name)
    for grantee, env, kind, path, level, prov in db.execute(
        select(
            Grant.user_id, Environment.name, Grant.kind, Grant.path, Grant.level, Grant.provenance
        )
        .join(Environment, Environment.id == Grant.environment_id)
        .where(_within(Grant.user_id, ids))
    ):
        if grantee in found:
            _add(found[grantee], "grants", f"{env}:{kind}:{path}:{level}", prov)
    return found


def _add(target: Access, kind: str, value: str, provenance: str) -> None:
    getattr(target, kind).add(value)
    if not provenance.startswith(POLICY):
        getattr(target, f"kept_{kind}").add(value)


def _after(now: Access, decision: policies.Decision, names: set[str]) -> Access:
    """The access `access.apply` leaves: kept rows plus what the decision gives."""
    envs = (
        {"all"}
        if decision.environments == policies.ALL_ENVIRONMENTS
        else {e for e in decision.environments if e in names}
    )
    return Access(
        role=now.role if now.role_manual else decision.role,
        role_manual=now.role_manual,
        environments=now.kept_environments | envs,
        groups=now.kept_groups | {fold(g.name) for g in decision.groups},
        group_names={**now.group_names, **{fold(g.name): g.name for g in decision.groups}},
        grants=now.kept_grants
        | {
            f"{g.environment}:{g.kind}:{g.path}:{g.level}"
            for g in decision.grants
            if g.subject == "user" and g.environment in names
        },
    )


def _diff(user: Any, now: Access, after: Access, errors: tuple[str, ...]) -> Change | None:
    gains = {
        k: sorted(getattr(after, k) - getattr(now, k)) for k in ("environments", "groups", "grants")
    }
    losses = {
        k: sorted(getattr(now, k) - getattr(after, k)) for k in ("environments", "groups", "grants")
    }
    if "all" in after.environments:  # `all` covers every environment: moving to it loses none
        losses["environments"] = []
    names = {**now.group_names, **after.group_names}
    for found in (gains, losses):
        found["groups"] = sorted(names.get(g, g) for g in found["groups"])
    role = (now.role, after.role) if now.role != after.role else None
    if not role and not any(gains.values()) and not any(losses.values()) and not errors:
        return None
    return Change(user.user_name, user.id, role, gains, losses, errors)


def _reconcile_group_grants(
    db: Session, account: Account, policy: policies.Policy, *, actor: str
) -> None:
    """Group grants the policy declares exist; policy group grants it no longer declares go."""
    envs = dict(
        db.execute(
            select(Environment.name, Environment.id).where(Environment.account_id == account.id)
        ).all()
    )
    wanted: dict[tuple[uuid.UUID, int, str, str, str], str] = {}
    for group_name, specs in policy.group_grants.items():
        for spec in specs:
            if spec.environment not in envs:
                continue
            group = access.policy_group(db, account, spec.group or group_name)
            wanted[(group.id, envs[spec.environment], spec.kind, spec.path, spec.level)] = (
                POLICY + spec.rule
            )
    rows = db.scalars(
        select(Grant).where(
            Grant.account_id == account.id,
            Grant.group_id.is_not(None),
            Grant.provenance.startswith(POLICY),
        )
    ).all()
    have = {(r.group_id, r.environment_id, r.kind, r.path, r.level): r for r in rows}
    removed = [key for key in have if key not in wanted]
    for key in removed:
        db.delete(have[key])
    added = [key for key in wanted if key not in have]
    for group_id, env_id, kind, path, level in added:
        db.add(
            Grant(
                account_id=account.id,
                group_id=group_id,
                environment_id=env_id,
                kind=kind,
                path=path,
                level=level,
                provenance=wanted[(group_id, env_id, kind, path, level)],
            )
        )
    if added or removed:
        db.flush()
        audit.record(
            db,
            account.id,
            actor=actor,
            action="policy.group_grants",
            target_type="account",
            target_id=account.slug,
            after={
                "added": [list(map(str, k)) for k in added],
                "removed": [list(map(str, k)) for k in removed],
            },
        )


def decision_json(decision: policies.Decision) -> dict[str, Any]:
    """A Decision as plain data: what it gives, by which rule, and the explanation."""
    envs = decision.environments
    return {
        "role": {"value": decision.role, "rule": decision.role_rule},
        "environments": {
            "value": envs if isinstance(envs, str) else list(envs),
            "rule": decision.environments_rule,
        },
        "groups": [{"name": g.name, "rule": g.rule} for g in decision.groups],
        "grants": [
            {
                "subject": g.group or "user",
                "environment": g.environment,
                g.kind: g.path,
                "level": g.level,
                "rule": g.rule,
            }
            for g in decision.grants
        ],
        "errors": list(decision.errors),
        "explanation": [
            {"rule": s.rule, "matched": s.matched, "detail": s.detail} for s in decision.explanation
        ],
    }
