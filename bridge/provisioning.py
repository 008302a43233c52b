"""The one write path for users: Profile -> policy Decision -> store, in one transaction, audited.

SAML just-in-time login, SCIM, the CLI and policy re-evaluation all call `provision`. It matches
the profile to a stored user (by id, SAML identity, externalId, then userName; never by e-mail),
creates or updates the user, applies the account policy's Decision with provenance on every row,
and appends an audit event with the state before and after. Re-applying a Decision replaces only
rows whose provenance is `policy:*`; `scim`, `saml` and `manual` rows are never touched here.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

import policies
from bridge import audit
from bridge.errors import Conflict, InvalidInput, NotFound
from bridge.models import (
    Account,
    Environment,
    EnvironmentAccess,
    Grant,
    Group,
    IdentityProvider,
    Membership,
    RoleAssignment,
    SamlIdentity,
    User,
    UserAddress,
    UserEmail,
    UserPhoneNumber,
    fold,
)
from bridge.policy import policy_for
from bridge.store import Store

SCALAR_FIELDS = frozenset(
    {
        "external_id",
        "active",
        "formatted_name",
        "family_name",
        "given_name",
        "middle_name",
        "honorific_prefix",
        "honorific_suffix",
        "display_name",
        "nick_name",
        "profile_url",
        "title",
        "user_type",
        "preferred_language",
        "locale",
        "timezone",
        "employee_number",
        "cost_center",
        "organization",
        "division",
        "department",
        "manager_id",
    }
)
MULTI_VALUED: dict[str, type[UserEmail | UserPhoneNumber | UserAddress]] = {
    "emails": UserEmail,
    "phone_numbers": UserPhoneNumber,
    "addresses": UserAddress,
}
ENTRY_KEYS = {
    "emails": ("value", "type", "primary", "display"),
    "phone_numbers": ("value", "type", "primary", "display"),
    "addresses": (
        "type",
        "primary",
        "formatted",
        "street_address",
        "locality",
        "region",
        "postal_code",
        "country",
    ),
}
POLICY = "policy:"


@dataclass(frozen=True)
class Outcome:
    """What a provisioning call did."""

    user_id: uuid.UUID
    created: bool
    changed: bool
    decision: policies.Decision


def provision(
    store: Store,
    account_id: int,
    profile: policies.Profile,
    *,
    actor: str,
    user_id: uuid.UUID | None = None,
    create: bool = True,
    must_create: bool = False,
) -> Outcome:
    """Create or update the user `profile` describes and apply the account's policy.

    `user_id` names the user to update (NotFound if absent); `create=False` refuses unknown users;
    `must_create=True` refuses a profile that matches a stored user (Conflict).
    """

    def work(db: Session) -> Outcome:
        account = _account(db, account_id)
        user = _find(db, account, profile, user_id)
        if user is None:
            if user_id is not None or not create:
                raise NotFound(f"no user {profile.user_name!r} in account {account.slug!r}")
            user = User(id=uuid.uuid4(), account_id=account.id, active=True)
            before = None
        elif must_create:
            raise Conflict(f"userName {profile.user_name!r} is already taken")
        else:
            before = snapshot(db, user)
        _set_identity(db, account, user, profile)
        if before is None:
            db.add(user)
        _set_fields(db, user, profile.fields)
        _link_identity(db, account, user, profile.idp)
        decision = policies.evaluate(policy_for(db, account), profile)
        _apply(db, account, user, decision)
        after = snapshot(db, user)
        changed = before != after
        if changed:
            if before is not None:
                user.touch()  # children may be all that changed: the row's version says so too
            audit.record(
                db,
                account.id,
                actor=actor,
                action="user.create" if before is None else "user.update",
                target_type="user",
                target_id=str(user.id),
                before=before,
                after=after,
            )
        return Outcome(user.id, before is None, changed, decision)

    return store.write(work)


def delete_user(store: Store, account_id: int, user_id: uuid.UUID, *, actor: str) -> None:
    """Remove a user with their memberships, grants, identities and sessions."""

    def work(db: Session) -> None:
        account = _account(db, account_id)
        user = db.scalar(select(User).where(User.account_id == account.id, User.id == user_id))
        if user is None:
            raise NotFound(f"no user {user_id} in account {account.slug!r}")
        before = snapshot(db, user)
        db.delete(user)
        audit.record(
            db,
            account.id,
            actor=actor,
            action="user.delete",
            target_type="user",
            target_id=str(user_id),
            before=before,
        )

    store.write(work)


def _account(db: Session, account_id: int) -> Account:
    account = db.get(Account, account_id)
    if account is None:
        raise NotFound(f"no account {account_id}")
    return account


def _find(
    db: Session, account: Account, profile: policies.Profile, user_id: uuid.UUID | None
) -> User | None:
    """The stored user this profile describes. E-mail alone never identifies anyone."""
    in_account = select(User).where(User.account_id == account.id)
    if user_id is not None:
        return db.scalar(in_account.where(User.id == user_id))
    if profile.idp is not None:
        linked = db.scalar(
            in_account.join(SamlIdentity, SamlIdentity.user_id == User.id)
            .join(IdentityProvider, IdentityProvider.id == SamlIdentity.idp_id)
            .where(
                IdentityProvider.entity_id == profile.idp.entity_id,
                SamlIdentity.name_id == profile.idp.name_id,
            )
        )
        if linked is not None:
            return linked
    if profile.external_id:
        by_external = db.scalar(in_account.where(User.external_id == profile.external_id))
        if by_external is not None:
            return by_external
    by_name = db.scalar(in_account.where(User.user_name_key == fold(profile.user_name)))
    if (
        by_name is not None
        and profile.external_id
        and by_name.external_id
        and by_name.external_id != profile.external_id
    ):
        raise Conflict(f"userName {profile.user_name!r} belongs to another externalId")
    return by_name


def _set_identity(db: Session, account: Account, user: User, profile: policies.Profile) -> None:
    name = profile.user_name.strip()
    if not name:
        raise InvalidInput("userName must not be empty")
    key = fold(name)
    if key != user.user_name_key:
        taken = db.scalar(
            select(User.id).where(
                User.account_id == account.id, User.user_name_key == key, User.id != user.id
            )
        )
        if taken is not None:
            raise Conflict(f"userName {name!r} is already taken")
    user.user_name, user.user_name_key = name, key
    if profile.external_id is not None and "external_id" not in profile.fields:
        user.external_id = profile.external_id


def _set_fields(db: Session, user: User, fields: Mapping[str, Any]) -> None:
    for key, value in fields.items():
        if key in MULTI_VALUED:
            _set_multi(user, key, value or [])
        elif key == "manager_id":
            _set_manager(db, user, value)
        elif key in SCALAR_FIELDS:
            if key == "active" and not isinstance(value, bool):
                raise InvalidInput("active must be true or false")
            if getattr(user, key) != value:
                setattr(user, key, value)
        else:
            raise InvalidInput(f"unknown user field {key!r}")


def _set_multi(user: User, key: str, entries: list[Mapping[str, Any]]) -> None:
    keys = ENTRY_KEYS[key]
    wanted: list[dict[str, Any]] = [{k: entry.get(k) for k in keys} for entry in entries]
    for entry in wanted:
        entry["primary"] = bool(entry["primary"])
        if key != "addresses" and not entry["value"]:
            raise InvalidInput(f"every entry of {key} needs a value")
    if sum(1 for entry in wanted if entry["primary"]) > 1:
        raise InvalidInput(f"at most one entry of {key} may be primary")  # RFC 7643 §2.4
    current = getattr(user, key)
    if [{k: getattr(row, k) for k in keys} for row in current] == wanted:
        return
    model = MULTI_VALUED[key]
    rows = []
    for position, entry in enumerate(wanted):
        extra = {"value_key": fold(entry["value"])} if model is UserEmail else {}
        rows.append(model(position=position, **entry, **extra))
    current[:] = rows


def _set_manager(db: Session, user: User, manager_id: uuid.UUID | None) -> None:
    if manager_id is not None:
        if manager_id == user.id:
            raise InvalidInput("a user cannot be their own manager")
        exists = db.scalar(
            select(User.id).where(User.account_id == user.account_id, User.id == manager_id)
        )
        if exists is None:
            raise InvalidInput(f"manager {manager_id} is not a user of this account")
    if user.manager_id != manager_id:
        user.manager_id = manager_id


def _link_identity(
    db: Session, account: Account, user: User, link: policies.IdpLink | None
) -> None:
    if link is None:
        return
    idp = db.scalar(
        select(IdentityProvider).where(
            IdentityProvider.account_id == account.id,
            IdentityProvider.entity_id == link.entity_id,
        )
    )
    if idp is None:
        raise InvalidInput(f"IdP {link.entity_id!r} is not registered for this account")
    db.flush()
    current = db.scalar(
        select(SamlIdentity).where(
            SamlIdentity.idp_id == idp.id, SamlIdentity.name_id == link.name_id
        )
    )
    if current is None:
        db.add(SamlIdentity(idp_id=idp.id, user_id=user.id, name_id=link.name_id))
    elif current.user_id != user.id:
        raise Conflict("this IdP identity is linked to another user")


def _apply(db: Session, account: Account, user: User, decision: policies.Decision) -> None:
    """Make the user's policy-provenance rows exactly what `decision` says."""
    db.flush()
    _apply_role(db, user, decision)
    environments: dict[str, int] = {
        name: env_id
        for name, env_id in db.execute(
            select(Environment.name, Environment.id).where(Environment.account_id == account.id)
        )
    }
    _apply_environments(db, user, decision, environments)
    _apply_groups(db, account, user, decision)
    _apply_grants(db, account, user, decision, environments)


def _apply_role(db: Session, user: User, decision: policies.Decision) -> None:
    assignment = db.scalar(select(RoleAssignment).where(RoleAssignment.user_id == user.id))
    provenance = POLICY + decision.role_rule
    if assignment is None:
        db.add(RoleAssignment(user_id=user.id, role=decision.role, provenance=provenance))
    elif assignment.provenance.startswith(POLICY) and (  # a manual role outranks any policy
        (assignment.role, assignment.provenance) != (decision.role, provenance)
    ):
        assignment.role, assignment.provenance = decision.role, provenance


def _apply_environments(
    db: Session, user: User, decision: policies.Decision, environments: Mapping[str, int]
) -> None:
    provenance = POLICY + decision.environments_rule
    if decision.environments == policies.ALL_ENVIRONMENTS:
        wanted: set[tuple[int | None, str]] = {(None, provenance)}
    else:
        wanted = {
            (environments[name], provenance)
            for name in decision.environments
            if name in environments  # an environment the account lacks grants nothing
        }
    rows = db.scalars(
        select(EnvironmentAccess).where(
            EnvironmentAccess.user_id == user.id, EnvironmentAccess.provenance.startswith(POLICY)
        )
    ).all()
    have = {(row.environment_id, row.provenance): row for row in rows}
    for key, row in have.items():
        if key not in wanted:
            db.delete(row)
    for env_id, prov in wanted - have.keys():
        db.add(EnvironmentAccess(user_id=user.id, environment_id=env_id, provenance=prov))


def _apply_groups(db: Session, account: Account, user: User, decision: policies.Decision) -> None:
    wanted: set[tuple[uuid.UUID, str]] = set()
    for spec in decision.groups:
        wanted.add((_policy_group(db, account, spec.name).id, POLICY + spec.rule))
    rows = db.scalars(
        select(Membership).where(
            Membership.user_id == user.id, Membership.provenance.startswith(POLICY)
        )
    ).all()
    have = {(row.group_id, row.provenance): row for row in rows}
    for key, row in have.items():
        if key not in wanted:
            db.delete(row)
    for group_id, prov in wanted - have.keys():
        db.add(Membership(group_id=group_id, user_id=user.id, provenance=prov))


def _policy_group(db: Session, account: Account, name: str) -> Group:
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
    db: Session,
    account: Account,
    user: User,
    decision: policies.Decision,
    environments: Mapping[str, int],
) -> None:
    wanted: set[tuple[int, str, str, str, str]] = set()
    for spec in decision.grants:
        if spec.environment not in environments:
            continue
        key: tuple[int, str, str, str, str] = (
            environments[spec.environment],
            spec.kind,
            spec.path,
            spec.level,
            POLICY + spec.rule,
        )
        if spec.subject == "user":
            wanted.add(key)
        elif spec.group is not None:
            _ensure_group_grant(db, account, _policy_group(db, account, spec.group), key)
    rows = db.scalars(
        select(Grant).where(Grant.user_id == user.id, Grant.provenance.startswith(POLICY))
    ).all()
    have = {(r.environment_id, r.kind, r.path, r.level, r.provenance): r for r in rows}
    for key, row in have.items():
        if key not in wanted:
            db.delete(row)
    for env_id, kind, path, level, prov in wanted - have.keys():
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
    db: Session, account: Account, group: Group, key: tuple[int, str, str, str, str]
) -> None:
    env_id, kind, path, level, prov = key
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


def snapshot(db: Session, user: User) -> dict[str, Any]:
    """The user's stored state and access as JSON-able data, for audit and change detection."""
    db.flush()
    state: dict[str, Any] = {"user_name": user.user_name}
    for key in sorted(SCALAR_FIELDS):
        value = getattr(user, key)
        state[key] = str(value) if isinstance(value, uuid.UUID) else value
    for key in MULTI_VALUED:
        state[key] = [{k: getattr(row, k) for k in ENTRY_KEYS[key]} for row in getattr(user, key)]
    state["access"] = access_of(db, user)
    return state


def access_of(db: Session, user: User) -> dict[str, Any]:
    """Role, environments, groups and grants of a user, each with its provenance."""
    role = db.execute(
        select(RoleAssignment.role, RoleAssignment.provenance).where(
            RoleAssignment.user_id == user.id
        )
    ).first()
    envs = db.execute(
        select(Environment.name, EnvironmentAccess.provenance)
        .select_from(EnvironmentAccess)
        .outerjoin(Environment, Environment.id == EnvironmentAccess.environment_id)
        .where(EnvironmentAccess.user_id == user.id)
    ).all()
    groups = db.execute(
        select(Group.display_name, Membership.provenance)
        .join(Membership, Membership.group_id == Group.id)
        .where(Membership.user_id == user.id)
    ).all()
    grants = db.execute(
        select(Environment.name, Grant.kind, Grant.path, Grant.level, Grant.provenance)
        .join(Environment, Environment.id == Grant.environment_id)
        .where(Grant.user_id == user.id)
    ).all()
    return {
        "role": None if role is None else {"role": role.role, "provenance": role.provenance},
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
