"""Groups: list, read with members (paginated, with provenance) and grants; manual groups made,
renamed and deleted by hand; manual grants on any group."""

from __future__ import annotations

import uuid
from datetime import datetime

from flask import request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field

from api.base import account_id, actor, bp, requires, responses, spec
from api.models import Kind, Level, Page, PageQuery, Problem, Strict
from bridge import access, directory, groups, manual
from bridge.models import Group
from bridge.web import get_store

TAG = "groups"
MANUAL = manual.MANUAL


class GroupSummary(BaseModel):
    id: str
    display_name: str
    external_id: str | None
    managed_by: str = Field(description="scim, policy or manual: who may change it")
    members: int


class GroupGrant(BaseModel):
    environment: str
    kind: str
    path: str
    level: str
    provenance: str


class GroupDocument(GroupSummary):
    created: datetime
    last_modified: datetime
    version: int
    grants: list[GroupGrant]


class GroupList(Page):
    groups: list[GroupSummary]


class Member(BaseModel):
    user_id: str
    user_name: str
    active: bool | None
    provenance: str


class MemberList(Page):
    members: list[Member]


class GroupQuery(PageQuery):
    q: str | None = Field(None, max_length=256, description="Text in the group's name.")


class NewGroup(Strict):
    display_name: str = Field(min_length=1, max_length=256)


class GroupGrantIn(Strict):
    environment: str = Field(min_length=1, max_length=64)
    kind: Kind = "folder"
    path: str = Field(min_length=1, max_length=1024)
    level: Level


class GroupGrantQuery(Strict):
    environment: str = Field(min_length=1, max_length=64)
    kind: Kind = "folder"
    path: str = Field(min_length=1, max_length=1024)


def _document(group_id: uuid.UUID) -> GroupDocument:
    with get_store().read() as db:
        group = directory.get_group(db, account_id(), group_id)
        return GroupDocument(
            **_summary(group, directory.member_count(db, group)),
            created=group.created,
            last_modified=group.last_modified,
            version=group.version,
            grants=[GroupGrant(**g) for g in access.group_grants(db, group)],
        )


def _summary(group: Group, members: int) -> dict[str, object]:
    return {
        "id": str(group.id),
        "display_name": group.display_name,
        "external_id": group.external_id,
        "managed_by": group.managed_by,
        "members": members,
    }


@bp.get("/groups")
@requires("read")
@spec.validate(query=GroupQuery, resp=responses(HTTP_200=GroupList, HTTP_400=Problem), tags=[TAG])
def list_groups() -> ResponseReturnValue:
    """List groups by name, a page at a time, with member counts."""
    q: GroupQuery = request.context.query  # type: ignore[attr-defined]
    with get_store().read() as db:
        rows, nxt = directory.list_groups(
            db, account_id(), text=q.q, cursor=q.cursor, limit=q.limit
        )
        return GroupList(groups=[GroupSummary(**_summary(g, n)) for g, n in rows], next=nxt)


@bp.get("/groups/<uuid:group_id>")
@requires("read")
@spec.validate(resp=responses(HTTP_200=GroupDocument), tags=[TAG])
def get_group(group_id: uuid.UUID) -> ResponseReturnValue:
    """A group with its grants (each with its provenance) and member count."""
    return _document(group_id)


@bp.get("/groups/<uuid:group_id>/members")
@requires("read")
@spec.validate(query=PageQuery, resp=responses(HTTP_200=MemberList, HTTP_400=Problem), tags=[TAG])
def list_group_members(group_id: uuid.UUID) -> ResponseReturnValue:
    """A group's members by userName, a page at a time, each membership with its provenance."""
    q: PageQuery = request.context.query  # type: ignore[attr-defined]
    with get_store().read() as db:
        group = directory.get_group(db, account_id(), group_id)
        members, nxt = directory.group_members(db, group, cursor=q.cursor, limit=q.limit)
    return MemberList(members=[Member(**m) for m in members], next=nxt)


@bp.post("/groups")
@requires("write")
@spec.validate(
    json=NewGroup,
    resp=responses(HTTP_201=GroupDocument, HTTP_400=Problem, HTTP_409=Problem),
    tags=[TAG],
)
def create_group() -> ResponseReturnValue:
    """Make a manual group (SCIM and policy groups are made by the IdP and the policy)."""
    body: NewGroup = request.context.json  # type: ignore[attr-defined]
    out = groups.create_group(
        get_store(), account_id(), body.display_name, actor=actor(), managed_by=MANUAL
    )
    return _document(out.group_id), 201


@bp.patch("/groups/<uuid:group_id>")
@requires("write")
@spec.validate(
    json=NewGroup,
    resp=responses(HTTP_200=GroupDocument, HTTP_400=Problem, HTTP_409=Problem),
    tags=[TAG],
)
def rename_group(group_id: uuid.UUID) -> ResponseReturnValue:
    """Rename a manual group (409 for a group SCIM or the policy manages)."""
    body: NewGroup = request.context.json  # type: ignore[attr-defined]
    groups.update_group(
        get_store(),
        account_id(),
        group_id,
        lambda _db, _group: groups.GroupChange(display_name=body.display_name),
        actor=actor(),
        managed_by=MANUAL,
    )
    return _document(group_id)


@bp.delete("/groups/<uuid:group_id>")
@requires("write")
@spec.validate(resp=responses(HTTP_204=None, HTTP_409=Problem), tags=[TAG])
def delete_group(group_id: uuid.UUID) -> ResponseReturnValue:
    """Delete a manual group with its memberships and grants (409 for SCIM and policy groups)."""
    groups.delete_group(get_store(), account_id(), group_id, actor=actor(), managed_by=MANUAL)
    return "", 204


@bp.post("/groups/<uuid:group_id>/grants")
@requires("write")
@spec.validate(
    json=GroupGrantIn,
    resp=responses(HTTP_200=GroupDocument, HTTP_400=Problem, HTTP_409=Problem),
    tags=[TAG],
)
def add_group_grant(group_id: uuid.UUID) -> ResponseReturnValue:
    """Add (or change the level of) a manual grant of any group; its members hold it."""
    body: GroupGrantIn = request.context.json  # type: ignore[attr-defined]
    grant = manual.GrantSpec(body.environment, body.kind, body.path, body.level)
    manual.set_group_grant(get_store(), account_id(), group_id, grant, present=True, actor=actor())
    return _document(group_id)


@bp.delete("/groups/<uuid:group_id>/grants")
@requires("write")
@spec.validate(
    query=GroupGrantQuery,
    resp=responses(HTTP_200=GroupDocument, HTTP_400=Problem, HTTP_409=Problem),
    tags=[TAG],
)
def remove_group_grant(group_id: uuid.UUID) -> ResponseReturnValue:
    """Remove a manual grant of a group (the policy's grants are the policy's)."""
    q: GroupGrantQuery = request.context.query  # type: ignore[attr-defined]
    grant = manual.GrantSpec(q.environment, q.kind, q.path, "viewer")
    manual.set_group_grant(get_store(), account_id(), group_id, grant, present=False, actor=actor())
    return _document(group_id)
