"""Applying a policy Decision to a user, and reading back what access a user has.

Only rows whose provenance is `policy:*` are replaced; `scim`, `saml` and `manual` rows are never
touched. A manual role outranks any policy role. Environments or groups a Decision names that the
account lacks grant nothing.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import String, Table, bindparam, literal, null, select, union_all
from sqlalchemy.orm import Session

import policies
from bridge import audit, metrics, tracing, values
from bridge.models import (
    Account,
    Environment,
    EnvironmentAccess,
    Grant,
    Group,
    Membership,
    RoleAssignment,
    User,
    fold,
)
from bridge.policy import environments_of

POLICY = "policy:"


@tracing.step("provisioning.access")
def apply(
    db: Session,
    account: Account,
    user: User,
    decision: policies.Decision,
    *,
    actor: str,
    known: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Make the stored user's policy-provenance rows exactly what `decision` says. `actor` is
    audited on a group grant this adds (the user's own rows are audited by the caller).

    `known`: the user's access as `access_of` read it earlier in this transaction (the user's
    row locked). Then their access now is returned, without reading it again: the rows of other
    provenances as known (this never touches them), the policy's as this left them. When the
    policy's rows in `known` are already what `decision` gives (`_holds`), nothing is read or
    written here: an update or a returning login that changes no access costs no statement."""
    environments = {name: env_id for env_id, name, _default in environments_of(db, account.id)}
    envs = _wanted_environments(decision, environments)
    if known is not None and _holds(known, decision, environments, envs):
        return known
    db.flush()
    role = _apply_role(db, user, decision)
    _apply_environments(db, user, envs)
    groups = _wanted_groups(db, account, decision)
    _apply_groups(db, user, groups)
    grants = _wanted_grants(db, account, decision, environments, actor)
    _apply_grants(db, account, user, grants)
    if known is None:
        return None
    names = {env_id: name for name, env_id in environments.items()}

    def kept(part: str) -> list[dict[str, Any]]:
        return [e for e in known[part] if not e["provenance"].startswith(POLICY)]

    return _shaped(
        role,
        [(e["environment"], e["provenance"]) for e in kept("environments")]
        + [(None if env_id is None else names[env_id], prov) for env_id, prov in envs],
        [(e["group"], e["provenance"]) for e in kept("groups")]
        + [(name, prov) for (_group_id, prov), name in groups.items()],
        [
            (e["environment"], e["kind"], e["path"], e["level"], e["provenance"])
            for e in kept("grants")
        ]
        + [(names[e], kind, path, level, prov) for (e, kind, path, prov), level in grants.items()],
    )


def _holds(
    known: Mapping[str, Any],
    decision: policies.Decision,
    environments: Mapping[str, int],
    envs: set[tuple[int | None, str]],
) -> bool:
    """Whether the policy-provenance rows in `known` (as `access_of` shapes them) are exactly
    the rows `decision` gives (`envs`: its environments), so that `apply` would change nothing.

    Compared by name, which is what `known` holds: a group's display name names one group of
    the account (unique; `policy_group` finds a group by it), an environment's name one
    environment. Where a name could stand for two rows (an environment named "all", which is how
    `access_of` shows access to all of them), a row shows twice, or a part needs rows `known`
    does not hold (a group's grants), the answer is False and `apply` reads the rows."""
    if "all" in environments:
        return False
    role = known["role"]
    if role is None:
        return False
    wanted_role = (decision.role, POLICY + decision.role_rule)
    if role["provenance"].startswith(POLICY) and (role["role"], role["provenance"]) != wanted_role:
        return False  # (a manual role outranks any policy's: nothing to change there)
    if any(s.subject != "user" and s.environment in environments for s in decision.grants):
        return False  # a group grant the group may lack (`_ensure_group_grant` reads it)

    def held(part: str, *keys: str) -> set[tuple[Any, ...]] | None:
        rows = [
            tuple(e[k] for k in keys) for e in known[part] if e["provenance"].startswith(POLICY)
        ]
        return set(rows) if len(set(rows)) == len(rows) else None

    names = {env_id: name for name, env_id in environments.items()}
    want_envs = {("all" if e is None else names[e], prov) for e, prov in envs}
    want_groups = {(spec.name, POLICY + spec.rule) for spec in decision.groups}
    want_grants = {
        (spec.environment, spec.kind, spec.path, POLICY + spec.rule, spec.level)
        for spec in decision.grants
        if spec.environment in environments
    }
    if len({g[:4] for g in want_grants}) != len(want_grants):
        return False  # one key at two levels: `apply` keeps the last, so let it decide
    return (
        held("environments", "environment", "provenance") == want_envs
        and held("groups", "group", "provenance") == want_groups
        and held("grants", "environment", "kind", "path", "provenance", "level") == want_grants
    )


@tracing.step("provisioning.access")
def create(
    db: Session,
    account: Account,
    user_id: uuid.UUID,
    decision: policies.Decision,
    *,
    actor: str,
) -> dict[str, Any]:
    """`apply` for a user created in this transaction: they have no access rows yet, so none
    are read, and the rows `decision` gives are written with one Core INSERT per table (values
    checked as a flush would: bridge.values). Returns their access as `access_of` would read it
    back: what was written is all there is."""
    environments = {name: env_id for env_id, name, _default in environments_of(db, account.id)}
    envs = _wanted_environments(decision, environments)
    groups = _wanted_groups(db, account, decision)
    grants = _wanted_grants(db, account, decision, environments, actor)
    role = (decision.role, POLICY + decision.role_rule)
    _insert(db, ROLES, [{"user_id": user_id, "role": role[0], "provenance": role[1]}], "role")
    _insert(
        db,
        ENVIRONMENT_ACCESS,
        [{"user_id": user_id, "environment_id": e, "provenance": p} for e, p in envs],
        "environment",
    )
    _insert(
        db,
        MEMBERSHIPS,
        [{"group_id": g, "user_id": user_id, "provenance": p} for g, p in groups],
        "membership",
    )
    _insert(
        db,
        GRANTS,
        [
            {
                "account_id": account.id,
                "user_id": user_id,
                "environment_id": env_id,
                "kind": kind,
                "path": path,
                "level": level,
                "provenance": prov,
            }
            for (env_id, kind, path, prov), level in grants.items()
        ],
        "grant",
    )
    names = {env_id: name for name, env_id in environments.items()}
    return _shaped(
        role,
        [(None if env_id is None else names[env_id], prov) for env_id, prov in envs],
        [(name, prov) for (_group_id, prov), name in groups.items()],
        [(names[e], kind, path, level, prov) for (e, kind, path, prov), level in grants.items()],
    )


ROLES: Table = RoleAssignment.__table__  # type: ignore[assignment]
ENVIRONMENT_ACCESS: Table = EnvironmentAccess.__table__  # type: ignore[assignment]
MEMBERSHIPS: Table = Membership.__table__  # type: ignore[assignment]
GRANTS: Table = Grant.__table__  # type: ignore[assignment]
ENVIRONMENTS: Table = Environment.__table__  # type: ignore[assignment]
GROUPS: Table = Group.__table__  # type: ignore[assignment]


def _insert(db: Session, table: Table, rows: list[dict[str, Any]], kind: str) -> None:
    """`rows` in one checked Core INSERT (none: no statement), counted as `kind`."""
    values.insert_rows(db, table, rows)
    if rows:
        metrics.count_created(db, kind, len(rows))


def _wanted_environments(
    decision: policies.Decision, environments: Mapping[str, int]
) -> set[tuple[int | None, str]]:
    """(environment id, None for all, provenance) of the environments `decision` gives."""
    provenance = POLICY + decision.environments_rule
    if decision.environments == policies.ALL_ENVIRONMENTS:
        return {(None, provenance)}
    return {
        (environments[name], provenance)
        for name in decision.environments
        if name in environments  # an environment the account lacks grants nothing
    }


def _wanted_groups(
    db: Session, account: Account, decision: policies.Decision
) -> dict[tuple[uuid.UUID, str], str]:
    """(group id, provenance) -> group name, of the groups `decision` puts the user in (made
    when the account lacks them)."""
    wanted: dict[tuple[uuid.UUID, str], str] = {}
    for spec in decision.groups:
        group = policy_group(db, account, spec.name)
        wanted[group.id, POLICY + spec.rule] = group.display_name
    return wanted


def _wanted_grants(
    db: Session,
    account: Account,
    decision: policies.Decision,
    environments: Mapping[str, int],
    actor: str,
) -> dict[tuple[int, str, str, str], str]:
    """The user grants `decision` gives: (environment id, kind, path, provenance) -> level. The
    group grants it names are added to their groups on the way (`_ensure_group_grant`)."""
    wanted: dict[tuple[int, str, str, str], str] = {}
    for spec in decision.grants:
        if spec.environment not in environments:
            continue
        key: tuple[int, str, str, str] = (
            environments[spec.environment],
            spec.kind,
            spec.path,
            POLICY + spec.rule,
        )
        if spec.subject == "user":
            wanted[key] = spec.level
        elif spec.group is not None:
            group = policy_group(db, account, spec.group)
            _ensure_group_grant(db, account, group, key, spec.level, actor)
    return wanted


def _apply_role(db: Session, user: User, decision: policies.Decision) -> tuple[str, str]:
    """Returns the user's role and its provenance now."""
    assignment = db.scalar(select(RoleAssignment).where(RoleAssignment.user_id == user.id))
    provenance = POLICY + decision.role_rule
    if assignment is None:
        db.add(RoleAssignment(user_id=user.id, role=decision.role, provenance=provenance))
    elif not assignment.provenance.startswith(POLICY):  # a manual role outranks any policy
        return assignment.role, assignment.provenance
    elif (assignment.role, assignment.provenance) != (decision.role, provenance):
        assignment.role, assignment.provenance = decision.role, provenance
    return decision.role, provenance


def _apply_environments(db: Session, user: User, wanted: set[tuple[int | None, str]]) -> None:
    rows = db.scalars(
        select(EnvironmentAccess).where(
            EnvironmentAccess.user_id == user.id,
            EnvironmentAccess.provenance.startswith(POLICY),
        )
    ).all()
    have = {(row.environment_id, row.provenance): row for row in rows}
    for key, row in have.items():
        if key not in wanted:
            db.delete(row)
    for env_id, prov in wanted - have.keys():
        db.add(EnvironmentAccess(user_id=user.id, environment_id=env_id, provenance=prov))


def _apply_groups(db: Session, user: User, wanted: Mapping[tuple[uuid.UUID, str], str]) -> None:
    rows = db.scalars(
        select(Membership).where(
            Membership.user_id == user.id, Membership.provenance.startswith(POLICY)
        )
    ).all()
    have = {(row.group_id, row.provenance): row for row in rows}
    for key, row in have.items():
        if key not in wanted:
            db.delete(row)
    for group_id, prov in wanted.keys() - have.keys():
        db.add(Membership(group_id=group_id, user_id=user.id, provenance=prov))


def policy_group(db: Session, account: Account, name: str) -> Group:
    """The group a policy names, created (as policy-managed) when the account lacks it."""
    group = db.scalar(
        select(Group).where(Group.account_id == account.id, Group.display_name_key == fold(name))
    )
    if group is None:  # a concurrent creator makes our insert fail; the retry then finds theirs
        group = Group(
            account_id=account.id,
            display_name=name,
            display_name_key=fold(name),
            managed_by="policy",
        )
        db.add(group)
        db.flush()
    return group


def _apply_grants(
    db: Session, account: Account, user: User, wanted: Mapping[tuple[int, str, str, str], str]
) -> None:
    # A grant is one row per (environment, kind, path, provenance): the level is what it says,
    # so a policy that changes a level updates the row (a delete and an insert of the same key
    # in one flush would break the unique index: SQLAlchemy inserts before it deletes).
    rows = db.scalars(
        select(Grant).where(Grant.user_id == user.id, Grant.provenance.startswith(POLICY))
    ).all()
    have = {(r.environment_id, r.kind, r.path, r.provenance): r for r in rows}
    for held, row in have.items():
        if held not in wanted:
            db.delete(row)
        elif row.level != wanted[held]:
            row.level = wanted[held]
    for key, level in wanted.items():
        if key in have:
            continue
        env_id, kind, path, prov = key
        db.add(
            Grant(
                account_id=account.id,
                user_id=user.id,
                environment_id=env_id,
                kind=kind,
                path=path,
                level=level,
                provenance=prov,
            )
        )


def _ensure_group_grant(
    db: Session,
    account: Account,
    group: Group,
    key: tuple[int, str, str, str],
    level: str,
    actor: str,
) -> None:
    """Add a policy group grant the group lacks. An existing one keeps its level here even if the
    policy now says another: a group's grants are every member's, so changing one is
    `policy apply`'s account-wide reconcile (which audits each member's change), not one
    user's login's."""
    env_id, kind, path, prov = key
    exists = db.scalar(
        select(Grant.id).where(
            Grant.group_id == group.id,
            Grant.environment_id == env_id,
            Grant.kind == kind,
            Grant.path == path,
            Grant.provenance == prov,
        )
    )
    if exists is None:
        before = group_grants(db, group)
        db.add(
            Grant(
                account_id=account.id,
                group_id=group.id,
                environment_id=env_id,
                kind=kind,
                path=path,
                level=level,
                provenance=prov,
            )
        )
        record_group_grants(db, account.id, group, before, actor=actor, action=GROUP_POLICY)


GROUP_POLICY = "group.policy_grants"  # audit actions of a change to a group's grants
GROUP_MANUAL = "group.manual_grant"


def group_grants(db: Session, group: Group) -> list[dict[str, Any]]:
    """A group's grants with provenance, sorted."""
    rows = db.execute(
        select(Environment.name, Grant.kind, Grant.path, Grant.level, Grant.provenance)
        .join(Environment, Environment.id == Grant.environment_id)
        .where(Grant.group_id == group.id)
        .order_by(Environment.name, Grant.kind, Grant.path, Grant.provenance)
    ).all()
    return [
        {"environment": e, "kind": k, "path": p, "level": lv, "provenance": pr}
        for e, k, p, lv, pr in rows
    ]


def record_group_grants(
    db: Session,
    account_id: int,
    group: Group,
    before: list[dict[str, Any]],
    *,
    actor: str,
    action: str,
) -> list[dict[str, Any]]:
    """Audit a change to a group's grants (every member's access): the group's grants before
    and after, if they differ. The event feed's `group.grants_changed`. Returns them after."""
    db.flush()
    after = group_grants(db, group)
    if after != before:
        audit.record(
            db,
            account_id,
            actor=actor,
            action=action,
            target_type="group",
            target_id=str(group.id),
            before={"grants": before},
            after={"display_name": group.display_name, "grants": after},
        )
    return after


def access_of(db: Session, user: User) -> dict[str, Any]:
    """Role, environments, groups and grants of a user, each with its provenance (one Core
    statement on the session's connection, what the session holds flushed first: the ORM's
    execution of it cost about twice the CPU)."""
    rows = values.flushed(db).execute(_access_statement(), {"user_id": user.id}).all()
    role = next(((r[1], r[2]) for r in rows if r[0] == "role"), None)
    envs = [(r[1], r[2]) for r in rows if r[0] == "environment"]
    groups = [(r[1], r[2]) for r in rows if r[0] == "group"]
    grants = [(r[1], r[3], r[4], r[5], r[2]) for r in rows if r[0] == "grant"]
    return _shaped(role, envs, groups, grants)


def no_access() -> dict[str, Any]:
    """What `access_of` answers for a user with no access rows at all."""
    return _shaped(None, [], [], [])


def _shaped(
    role: tuple[str, str] | None,
    envs: list[tuple[str | None, str]],
    groups: list[tuple[str, str]],
    grants: list[tuple[str, str, str, str, str]],
) -> dict[str, Any]:
    """What `access_of` answers, from (role, provenance), (environment name or None for all,
    provenance), (group name, provenance) and (environment, kind, path, level, provenance)."""
    return {
        "role": None if role is None else {"role": role[0], "provenance": role[1]},
        "environments": sorted(
            [{"environment": name or "all", "provenance": prov} for name, prov in envs],
            key=lambda e: (e["environment"], e["provenance"]),
        ),
        "groups": sorted(
            [{"group": name, "provenance": prov} for name, prov in groups],
            key=lambda g: (g["group"], g["provenance"]),
        ),
        "grants": sorted(
            [
                {"environment": e, "kind": k, "path": p, "level": lv, "provenance": pr}
                for e, k, p, lv, pr in grants
            ],
            key=lambda g: tuple(g.values()),
        ),
    }


@functools.cache
def _access_statement() -> Any:
    """The query of `access_of`, built once (building the union costs more than running it), on
    the tables."""
    text = String()
    none = null().cast(text)
    roles, env_access, memberships, grants = ROLES.c, ENVIRONMENT_ACCESS.c, MEMBERSHIPS.c, GRANTS.c
    envs, groups = ENVIRONMENTS.c, GROUPS.c
    user_id = bindparam("user_id", type_=roles.user_id.type)
    return union_all(
        select(
            literal("role", text), roles.role.cast(text), roles.provenance, none, none, none
        ).where(roles.user_id == user_id),
        select(literal("environment", text), envs.name, env_access.provenance, none, none, none)
        .select_from(ENVIRONMENT_ACCESS)
        .outerjoin(ENVIRONMENTS, envs.id == env_access.environment_id)
        .where(env_access.user_id == user_id),
        select(
            literal("group", text), groups.display_name, memberships.provenance, none, none, none
        )
        .join(MEMBERSHIPS, memberships.group_id == groups.id)
        .where(memberships.user_id == user_id),
        select(
            literal("grant", text),
            envs.name,
            grants.provenance,
            grants.kind.cast(text),
            grants.path,
            grants.level.cast(text),
        )
        .join(ENVIRONMENTS, envs.id == grants.environment_id)
        .where(grants.user_id == user_id),
    )
