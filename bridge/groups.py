"""The one write path for groups: create, rename, membership changes, delete; audited.

Membership changes are deltas: adding or removing one member of a 50,000-member group touches
only that member's row (and the group's version, which serialises concurrent changes: a
concurrent writer's commit makes ours retry, so parallel member adds all land). Only `scim` rows
are written here; policy-managed memberships are the policy's. Members whose SCIM groups changed
are re-evaluated against the account's policy in the same transaction.

Groups have an owner (`managed_by`): `scim` (an IdP pushed or adopted it) or `policy` (only the
account's policy names it). A SCIM create of a name only the policy manages adopts that group
(same id); from then on the IdP's and the policy's memberships sit side by side, each with its
provenance, and each side removes only its own. A group no IdP adopted is read-only over SCIM
(Forbidden, naming the policy rule); deleting an adopted group the policy still uses hands it
back to the policy instead of deleting the policy's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, bindparam, delete, select
from sqlalchemy.orm import Session

from bridge import audit, metrics, provisioning, tracing, values
from bridge.errors import Conflict, Forbidden, InvalidInput, NotFound, PreconditionFailed
from bridge.models import Account, Grant, Group, Membership, fold, loaded, read_only
from bridge.store import Store

SCIM = "scim"
POLICY_OWNED = "policy"  # managed_by of a group only the policy names (see bridge.access)
POLICY = "policy:"  # provenance prefix of what a policy rule wrote
KEEP: Any = object()  # "leave this attribute as it is" in a GroupChange


@dataclass(frozen=True)
class GroupChange:
    """What to do to a group: attributes to set (KEEP leaves them) and membership deltas."""

    display_name: Any = KEEP
    external_id: Any = KEEP
    add: frozenset[uuid.UUID] = frozenset()
    remove: frozenset[uuid.UUID] = frozenset()
    replace: frozenset[uuid.UUID] | None = None
    remove_all: bool = False


@dataclass(frozen=True)
class GroupOutcome:
    group_id: uuid.UUID
    created: bool
    changed: bool
    version: int


ChangeBuilder = Callable[[Session, Group], GroupChange]


def create_group(
    store: Store,
    account_id: int,
    display_name: str,
    *,
    external_id: str | None = None,
    members: Iterable[uuid.UUID] = (),
    actor: str,
    managed_by: str = SCIM,
) -> GroupOutcome:
    """A new group (SCIM's, or `manual` from the API) with its initial members; a taken
    displayName (any case) is a Conflict."""
    wanted = frozenset(members)

    def work(db: Session) -> GroupOutcome:
        account = provisioning.account_in(db, account_id)
        # Only the IdP adopts a policy-only group; a manual group is always new.
        group = _policy_only(db, account, display_name) if managed_by == SCIM else None
        adopted = group is not None
        if group is not None:  # the IdP adopts what only the policy managed: same id
            before: dict[str, Any] | None = _attrs(group)
            group.managed_by = SCIM
            if group.display_name != display_name.strip():  # the IdP's spelling wins
                _rename(db, account, group, display_name)
            group.touch()
        else:
            before = None
            group = Group(id=uuid.uuid4(), account_id=account.id, managed_by=managed_by)
            _rename(db, account, group, display_name)
            db.add(group)
        group.external_id = external_id
        db.flush()
        added, _ = _apply_members(db, account, group, GroupChange(replace=wanted))
        audit.record(
            db,
            account.id,
            actor=actor,
            action="group.adopt" if adopted else "group.create",
            target_type="group",
            target_id=str(group.id),
            before=before,
            after={
                **_attrs(group),
                "managed_by": group.managed_by,
                "members_added": sorted(map(str, added)),
            },
        )
        provisioning.reevaluate(
            db, account, added, registry=store.policies, actor=actor, changed_input="groups"
        )
        return GroupOutcome(group.id, True, True, group.version)

    return store.write(work)


def update_group(
    store: Store,
    account_id: int,
    group_id: uuid.UUID,
    build: ChangeBuilder,
    *,
    actor: str,
    if_version: int | None = None,
    managed_by: str | None = None,
    account_read: provisioning.AccountRead | None = None,
) -> GroupOutcome:
    """Apply the change `build` makes from the group's current state, atomically.
    `managed_by` refuses (Conflict) a group someone else manages (the API changes only its own);
    `account_read`: the account as read with the request's token (provisioning.AccountRead)."""

    def work(db: Session) -> GroupOutcome:
        # the policy's version read with the account: a member change may re-evaluate them
        account, known = provisioning.account_and_policy_in(db, account_id, account_read)
        group = _group(db, account, group_id, managed_by)
        _writable(db, group)
        if if_version is not None and group.version != if_version:
            raise PreconditionFailed(f"group {group_id} is at version {group.version}")
        change = build(db, group)
        before = _attrs(group)
        if change.display_name is not KEEP:
            _rename(db, account, group, change.display_name)
        if change.external_id is not KEEP and group.external_id != change.external_id:
            group.external_id = change.external_id
        added, removed = _apply_members(db, account, group, change)
        after = _attrs(group)
        if before == after and not added and not removed:
            return GroupOutcome(group.id, False, False, group.version)
        group.touch()
        audit.record(
            db,
            account.id,
            actor=actor,
            action="group.update",
            target_type="group",
            target_id=str(group.id),
            before=before,
            after={
                **after,
                "members_added": sorted(map(str, added)),
                "members_removed": sorted(map(str, removed)),
            },
        )
        provisioning.reevaluate(
            db,
            account,
            added | removed,
            registry=store.policies,
            actor=actor,
            changed_input="groups",
            known=known,
        )
        return GroupOutcome(group.id, False, True, group.version)

    return store.write(work)


def delete_group(
    store: Store,
    account_id: int,
    group_id: uuid.UUID,
    *,
    actor: str,
    if_version: int | None = None,
    managed_by: str | None = None,
) -> None:
    """Remove a group, its memberships and its grants; re-evaluate its former members."""

    def work(db: Session) -> None:
        account = provisioning.account_in(db, account_id)
        group = _group(db, account, group_id, managed_by)
        _writable(db, group)
        if if_version is not None and group.version != if_version:
            raise PreconditionFailed(f"group {group_id} is at version {group.version}")
        members = _scim_members(db, group)
        before = _attrs(group)
        if _policy_rules(db, group):  # the policy still uses it: remove only the IdP's side
            _apply_members(db, account, group, GroupChange(remove_all=True))
            group.managed_by, group.external_id = POLICY_OWNED, None
            group.touch()
            action = "group.release"
        else:
            db.delete(group)
            action = "group.delete"
        db.flush()
        audit.record(
            db,
            account.id,
            actor=actor,
            action=action,
            target_type="group",
            target_id=str(group_id),
            before=before,
        )
        provisioning.reevaluate(
            db, account, members, registry=store.policies, actor=actor, changed_input="groups"
        )

    store.write(work)


def _group(
    db: Session, account: Account, group_id: uuid.UUID, managed_by: str | None = None
) -> Group:
    # FOR UPDATE: concurrent member changes queue on the group's row. Read as Core and made the
    # session's (models.loaded): the ORM's load cost about twice the CPU
    params = {"account_id": account.id, "group_id": group_id}
    row = values.flushed(db).execute(_GROUP, params).first()
    if row is None:
        raise NotFound(f"no group {group_id}")
    group = loaded(db, read_only(Group, row._mapping))
    if managed_by is not None and group.managed_by != managed_by:
        raise Conflict(
            f"group {group.display_name!r} is managed by {group.managed_by}; change it there"
        )
    return group


GROUPS: Table = Group.__table__  # type: ignore[assignment]
MEMBERSHIPS: Table = Membership.__table__  # type: ignore[assignment]
_GROUP = (
    select(GROUPS)
    .where(GROUPS.c.account_id == bindparam("account_id"), GROUPS.c.id == bindparam("group_id"))
    .with_for_update()
)


def _policy_only(db: Session, account: Account, display_name: Any) -> Group | None:
    """The group of this name (any case) that only the policy manages, locked; None if there
    is none (a name an IdP already owns is left for `_rename` to refuse as taken)."""
    if not isinstance(display_name, str) or not display_name.strip():
        return None
    return db.scalar(
        select(Group)
        .where(
            Group.account_id == account.id,
            Group.display_name_key == fold(display_name.strip()),
            Group.managed_by == POLICY_OWNED,
        )
        .with_for_update()
    )


def _policy_rules(db: Session, group: Group) -> list[str]:
    """The policy rules whose memberships or grants this group carries."""
    found = set(
        db.scalars(
            select(Membership.provenance)
            .where(Membership.group_id == group.id, Membership.provenance.startswith(POLICY))
            .distinct()  # one row per rule, however many members
        )
    ) | set(
        db.scalars(
            select(Grant.provenance)
            .where(Grant.group_id == group.id, Grant.provenance.startswith(POLICY))
            .distinct()
        )
    )
    return sorted(p.removeprefix(POLICY) for p in found)


def _writable(db: Session, group: Group) -> None:
    """A group no IdP adopted is the policy's: read-only over SCIM (adopt it with a POST)."""
    if group.managed_by != POLICY_OWNED:
        return
    rules = _policy_rules(db, group)
    named = (
        ", ".join("its grants: section" if r == "grants" else f"rule {r!r}" for r in rules)
        or "its rules"
    )
    raise Forbidden(
        f"group {group.display_name!r} is managed by the account's policy ({named}) and is "
        "read-only over SCIM; an IdP adopts it by creating a group of the same name (POST /Groups)"
    )


def _attrs(group: Group) -> dict[str, Any]:
    return {"display_name": group.display_name, "external_id": group.external_id}


def _rename(db: Session, account: Account, group: Group, name: Any) -> None:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("displayName must be a non-empty string")
    name = name.strip()
    key = fold(name)
    if key != group.display_name_key:
        taken = db.scalar(
            select(Group.id).where(
                Group.account_id == account.id, Group.display_name_key == key, Group.id != group.id
            )
        )
        if taken is not None:
            raise Conflict(f"a group named {name!r} already exists")
    if group.display_name != name:
        group.display_name, group.display_name_key = name, key


@tracing.step("groups.members")
def _apply_members(
    db: Session, account: Account, group: Group, change: GroupChange
) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    """Add and remove SCIM memberships; return the user ids actually added and removed."""
    if change.replace is not None or change.remove_all:
        current = _scim_members(db, group)
        target = set(change.replace or ())
        to_add, to_remove = target - current, current - target
    else:
        touched = change.add | change.remove
        current = _scim_members(db, group, among=touched) if touched else set()
        to_add = set(change.add - change.remove) - current
        to_remove = set(change.remove) & current
    # Core statements on the session's connection, what it holds flushed first: through the ORM
    # each cost about twice the CPU (its changes are counted here, as its flush would count them)
    if to_add:
        _check_users(db, account, to_add)
        rows = [{"group_id": group.id, "user_id": u, "provenance": SCIM} for u in to_add]
        values.insert_rows(db, MEMBERSHIPS, rows)
        metrics.count_created(db, "membership", len(rows))
    conn = values.flushed(db)
    for chunk in _chunks(to_remove):
        conn.execute(
            delete(MEMBERSHIPS).where(
                MEMBERSHIPS.c.group_id == group.id,
                MEMBERSHIPS.c.provenance == SCIM,
                MEMBERSHIPS.c.user_id.in_(chunk),
            )
        )
    metrics.count_deleted(db, "membership", len(to_remove))
    return to_add, to_remove


def _chunks(ids: Iterable[uuid.UUID], size: int = 1000) -> Iterator[list[uuid.UUID]]:
    """Keep IN lists to a size every database takes."""
    items = list(ids)
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _scim_members(
    db: Session, group: Group, among: Iterable[uuid.UUID] | None = None
) -> set[uuid.UUID]:
    stmt = select(MEMBERSHIPS.c.user_id).where(
        MEMBERSHIPS.c.group_id == group.id, MEMBERSHIPS.c.provenance == SCIM
    )
    conn = values.flushed(db)
    if among is None:
        return set(conn.scalars(stmt))
    found: set[uuid.UUID] = set()
    for chunk in _chunks(among):
        found.update(conn.scalars(stmt.where(MEMBERSHIPS.c.user_id.in_(chunk))))
    return found


def _check_users(db: Session, account: Account, user_ids: set[uuid.UUID]) -> None:
    found: set[uuid.UUID] = set()
    conn, users = values.flushed(db), provisioning.USERS.c
    for chunk in _chunks(user_ids):
        found.update(
            conn.scalars(
                select(users.id).where(users.account_id == account.id, users.id.in_(chunk))
            )
        )
    missing = user_ids - found
    if missing:
        raise InvalidInput(f"no user {sorted(map(str, missing))[0]} in this account")
