"""Users: list and read with effective access and provenance, explain, and manual access."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from flask import request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field

from api.base import account_id, actor, bp, requires, responses, spec
from api.models import Kind, Level, Page, PageQuery, Problem, Role, Strict
from bridge import directory, manual, planning
from bridge.models import Account, User
from bridge.web import get_store

TAG = "users"


class RoleRow(BaseModel):
    role: str
    provenance: str


class EnvironmentRow(BaseModel):
    environment: str = Field(description="An environment name, or `all`.")
    provenance: str


class GroupRow(BaseModel):
    group: str
    group_id: str
    provenance: str


class GrantRow(BaseModel):
    environment: str
    kind: str
    path: str
    level: str
    provenance: str = Field(description="`group:<name>` for a grant held through a group.")
    source: str | None = Field(None, description="For a group's grant: that grant's provenance.")


class Access(BaseModel):
    """Effective access, every row with its provenance (scim, saml, policy:<rule>, manual,
    group:<name>)."""

    role: RoleRow | None
    environments: list[EnvironmentRow]
    groups: list[GroupRow]
    grants: list[GrantRow]


class UserSummary(BaseModel):
    id: str
    user_name: str
    display_name: str | None
    external_id: str | None
    active: bool | None
    emails: list[str]


class UserDocument(UserSummary):
    created: datetime
    last_modified: datetime
    version: int
    access: Access


class UserList(Page):
    users: list[UserSummary]


class UserQuery(PageQuery):
    q: str | None = Field(None, max_length=256, description="Text in userName, name or e-mail.")
    role: Role | None = None
    group: str | None = Field(None, max_length=256, description="A group's display name.")
    environment: str | None = Field(None, max_length=64)
    active: bool | None = None
    provenance: str | None = Field(
        None, max_length=160, description="scim, saml, manual, policy (any rule), policy:<rule>"
    )


class Step(BaseModel):
    rule: str
    matched: bool
    detail: str


class DecisionDoc(BaseModel):
    role: dict[str, str]
    environments: dict[str, Any]
    groups: list[dict[str, str]]
    grants: list[dict[str, str]]
    errors: list[str]
    explanation: list[Step]


class Reason(BaseModel):
    what: str
    value: str
    provenance: str
    why: str


class Explanation(BaseModel):
    policy: str
    policy_error: str | None
    decision: DecisionDoc | None
    rows: list[Reason] = Field(description="Every stored row of access, with why it is there.")


class SetRole(Strict):
    role: Role


class GrantIn(Strict):
    environment: str = Field(min_length=1, max_length=64)
    kind: Kind = "folder"
    path: str = Field(min_length=1, max_length=1024)
    level: Level


class GrantQuery(Strict):
    environment: str = Field(min_length=1, max_length=64)
    kind: Kind = "folder"
    path: str = Field(min_length=1, max_length=1024)


class Holder(BaseModel):
    user_id: str
    user_name: str
    active: bool | None
    path: str
    level: str
    provenance: str
    source: str | None
    membership: str | None = None


class WhoHas(BaseModel):
    environment: str
    kind: str
    path: str
    holders: list[Holder]


class WhoQuery(Strict):
    environment: str = Field(min_length=1, max_length=64)
    kind: Kind = "folder"
    path: str = Field(min_length=1, max_length=1024)


def summary(user: User) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "user_name": user.user_name,
        "display_name": user.display_name,
        "external_id": user.external_id,
        "active": user.active,
        "emails": [e.value for e in user.emails],
    }


def document(user_id: uuid.UUID) -> UserDocument:
    with get_store().read() as db:
        user = directory.get_user(db, account_id(), user_id)
        return UserDocument(
            **summary(user),
            created=user.created,
            last_modified=user.last_modified,
            version=user.version,
            access=Access(**directory.effective_access(db, user)),
        )


@bp.get("/users")
@requires("read")
@spec.validate(query=UserQuery, resp=responses(HTTP_200=UserList, HTTP_400=Problem), tags=[TAG])
def list_users() -> ResponseReturnValue:
    """List users, filtered, a page at a time (cursor pagination, stable under inserts)."""
    q: UserQuery = request.context.query  # type: ignore[attr-defined]
    f = directory.UserFilter(q.q, q.role, q.group, q.environment, q.active, q.provenance)
    with get_store().read() as db:
        users, nxt = directory.list_users(db, account_id(), f, cursor=q.cursor, limit=q.limit)
        return UserList(users=[UserSummary(**summary(u)) for u in users], next=nxt)


@bp.get("/users/<uuid:user_id>")
@requires("read")
@spec.validate(resp=responses(HTTP_200=UserDocument), tags=[TAG])
def get_user(user_id: uuid.UUID) -> ResponseReturnValue:
    """A user with their effective access, each row with its provenance."""
    return document(user_id)


@bp.get("/users/<uuid:user_id>/explain")
@requires("read")
@spec.validate(resp=responses(HTTP_200=Explanation), tags=[TAG])
def explain_user(user_id: uuid.UUID) -> ResponseReturnValue:
    """Why the user has what they have: the policy rule by rule, then every stored row."""
    store = get_store()
    with store.read() as db:
        account = db.get_one(Account, account_id())
        user = directory.get_user(db, account.id, user_id)
        choice, decision, access = directory.explain(db, account, user, store.policies)
    return Explanation(
        policy=choice.source,
        policy_error=choice.error,
        decision=None if decision is None else DecisionDoc(**planning.decision_json(decision)),
        rows=[Reason(**row) for row in directory.reasons(access)],
    )


@bp.put("/users/<uuid:user_id>/role")
@requires("write")
@spec.validate(
    json=SetRole,
    resp=responses(HTTP_200=UserDocument, HTTP_400=Problem, HTTP_409=Problem),
    tags=[TAG],
)
def set_role(user_id: uuid.UUID) -> ResponseReturnValue:
    """Give the user a manual role; it outranks the policy's and survives re-evaluation."""
    body: SetRole = request.context.json  # type: ignore[attr-defined]
    manual.set_role(get_store(), account_id(), user_id, body.role, actor=actor())
    return document(user_id)


@bp.delete("/users/<uuid:user_id>/role")
@requires("write")
@spec.validate(resp=responses(HTTP_200=UserDocument, HTTP_409=Problem), tags=[TAG])
def clear_role(user_id: uuid.UUID) -> ResponseReturnValue:
    """Clear the user's manual role: the policy's role applies again (guards permitting)."""
    manual.set_role(get_store(), account_id(), user_id, None, actor=actor())
    return document(user_id)


@bp.put("/users/<uuid:user_id>/environments/<string(maxlength=64):name>")
@requires("write")
@spec.validate(resp=responses(HTTP_200=UserDocument, HTTP_409=Problem), tags=[TAG])
def add_user_environment(user_id: uuid.UUID, name: str) -> ResponseReturnValue:
    """Give the user manual access to an environment (`all`: every environment)."""
    manual.set_environment(get_store(), account_id(), user_id, name, present=True, actor=actor())
    return document(user_id)


@bp.delete("/users/<uuid:user_id>/environments/<string(maxlength=64):name>")
@requires("write")
@spec.validate(resp=responses(HTTP_200=UserDocument, HTTP_409=Problem), tags=[TAG])
def remove_user_environment(user_id: uuid.UUID, name: str) -> ResponseReturnValue:
    """Take away the user's manual access to an environment (other provenances stay)."""
    manual.set_environment(get_store(), account_id(), user_id, name, present=False, actor=actor())
    return document(user_id)


@bp.post("/users/<uuid:user_id>/grants")
@requires("write")
@spec.validate(
    json=GrantIn,
    resp=responses(HTTP_200=UserDocument, HTTP_400=Problem, HTTP_409=Problem),
    tags=[TAG],
)
def add_user_grant(user_id: uuid.UUID) -> ResponseReturnValue:
    """Add (or change the level of) a manual grant of the user."""
    body: GrantIn = request.context.json  # type: ignore[attr-defined]
    grant = manual.GrantSpec(body.environment, body.kind, body.path, body.level)
    manual.set_user_grant(get_store(), account_id(), user_id, grant, present=True, actor=actor())
    return document(user_id)


@bp.delete("/users/<uuid:user_id>/grants")
@requires("write")
@spec.validate(
    query=GrantQuery,
    resp=responses(HTTP_200=UserDocument, HTTP_400=Problem, HTTP_409=Problem),
    tags=[TAG],
)
def remove_user_grant(user_id: uuid.UUID) -> ResponseReturnValue:
    """Remove a manual grant of the user (grants of other provenance stay)."""
    q: GrantQuery = request.context.query  # type: ignore[attr-defined]
    grant = manual.GrantSpec(q.environment, q.kind, q.path, "viewer")
    manual.set_user_grant(get_store(), account_id(), user_id, grant, present=False, actor=actor())
    return document(user_id)


@bp.put("/users/<uuid:user_id>/groups/<uuid:group_id>")
@requires("write")
@spec.validate(resp=responses(HTTP_200=UserDocument, HTTP_409=Problem), tags=[TAG])
def add_membership(user_id: uuid.UUID, group_id: uuid.UUID) -> ResponseReturnValue:
    """Put the user in a group by hand."""
    manual.set_membership(get_store(), account_id(), user_id, group_id, present=True, actor=actor())
    return document(user_id)


@bp.delete("/users/<uuid:user_id>/groups/<uuid:group_id>")
@requires("write")
@spec.validate(resp=responses(HTTP_200=UserDocument, HTTP_409=Problem), tags=[TAG])
def remove_membership(user_id: uuid.UUID, group_id: uuid.UUID) -> ResponseReturnValue:
    """Take away the user's manual membership of a group (SCIM and policy ones stay)."""
    manual.set_membership(
        get_store(), account_id(), user_id, group_id, present=False, actor=actor()
    )
    return document(user_id)


@bp.get("/access")
@requires("read")
@spec.validate(query=WhoQuery, resp=responses(HTTP_200=WhoHas, HTTP_400=Problem), tags=[TAG])
def who_has() -> ResponseReturnValue:
    """Who has access to a folder (or anything above it) or collection in an environment, and
    why: direct grants and grants through groups, each with its provenance."""
    q: WhoQuery = request.context.query  # type: ignore[attr-defined]
    with get_store().read() as db:
        holders = directory.who_has(db, account_id(), q.environment, q.kind, q.path)
    return WhoHas(
        environment=q.environment,
        kind=q.kind,
        path=q.path,
        holders=[Holder(**h) for h in holders],
    )
