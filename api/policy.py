"""The account's policy: versions in the store, validated, planned, applied (guards refuse),
history with diffs, rollback."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import g, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field, model_validator

from api.base import account_id, actor, bp, requires, responses, spec
from api.models import INT_MAX, Problem, Strict
from bridge import policy_versions
from bridge.errors import NotFound
from bridge.web import get_store

TAG = "policy"


class VersionDoc(BaseModel):
    number: int
    active: bool
    author: str
    origin: str
    created: datetime
    activated: datetime | None
    content_hash: str


class VersionSource(VersionDoc):
    source: str


class ActivePolicy(VersionSource):
    parsed: dict[str, Any] = Field(
        description="Account, environments, defaults, rule names, guards."
    )


class VersionList(BaseModel):
    versions: list[VersionDoc]


class NewVersion(Strict):
    source: str = Field(
        min_length=1, max_length=policy_versions.MAX_SOURCE, description="The policy YAML."
    )


class PlanRequest(Strict):
    version: int | None = Field(None, ge=1, le=INT_MAX)
    source: str | None = Field(None, min_length=1, max_length=policy_versions.MAX_SOURCE)

    @model_validator(mode="after")
    def one_of(self) -> PlanRequest:
        if (self.version is None) == (self.source is None):
            raise ValueError("give exactly one of version or source")
        return self


class VersionRef(Strict):
    version: int = Field(ge=1, le=INT_MAX)


class ChangeDoc(BaseModel):
    user: str
    id: str
    role: list[str | None] | None
    gains: dict[str, list[str]]
    losses: dict[str, list[str]]
    errors: list[str]


class GroupGrantChangeDoc(BaseModel):
    group: str
    members: int = Field(description="The group's members now: each holds the grant")
    environment: str
    kind: str
    path: str
    before: str | None = Field(description="The level now; null: the group lacks the grant")
    after: str | None = Field(description="The level after apply; null: the grant goes")
    provenance: str


class PlanDoc(BaseModel):
    policy: str
    users: int
    gain: int
    lose: int
    change_role: int
    errors: int
    refused: str | None
    warnings: list[str]
    changes: list[ChangeDoc]
    group_grants: list[GroupGrantChangeDoc]


class Applied(BaseModel):
    active: VersionDoc
    plan: PlanDoc


class Diff(BaseModel):
    number: int
    against: int
    diff: list[str]


class DiffQuery(Strict):
    against: int = Field(ge=1, le=INT_MAX)


def _source(number: int) -> str:
    with get_store().read() as db:
        return policy_versions.get(db, account_id(), number).source


@bp.get("/policy")
@requires("read")
@spec.validate(resp=responses(HTTP_200=ActivePolicy), tags=[TAG])
def get_policy() -> ResponseReturnValue:
    """The active version: source and the parsed policy (404 while none is active)."""
    with get_store().read() as db:
        version = policy_versions.active(db, account_id())
        if version is None:
            raise NotFound("no policy version is active; PUT one and apply it")
        doc = policy_versions.describe(version, source=True)
    parsed = policy_versions.parsed(policy_versions.parse(g.account_slug, doc["source"]))
    return ActivePolicy(**doc, parsed=parsed)


@bp.put("/policy")
@requires("admin")
@spec.validate(
    json=NewVersion,
    resp=responses(HTTP_201=VersionDoc, HTTP_200=VersionDoc, HTTP_400=Problem),
    tags=[TAG],
)
def put_policy() -> ResponseReturnValue:
    """Store a new version (not active until applied); 400 lists every error as file:line:col.
    A source identical to the newest version answers that version (200)."""
    body: NewVersion = request.context.json  # type: ignore[attr-defined]
    created = policy_versions.create(
        get_store(), g.account_slug, body.source, origin="api", actor=actor()
    )
    return VersionDoc(**policy_versions.describe(created.version)), 201 if created.new else 200


@bp.post("/policy/plan")
@requires("read")
@spec.validate(json=PlanRequest, resp=responses(HTTP_200=PlanDoc, HTTP_400=Problem), tags=[TAG])
def plan_policy() -> ResponseReturnValue:
    """Who would gain or lose what with a stored version or an uploaded source (nothing is
    written); `refused` names a guard the result would break."""
    body: PlanRequest = request.context.json  # type: ignore[attr-defined]
    source = body.source if body.source is not None else _source(body.version or 0)
    result = policy_versions.plan(get_store(), g.account_slug, source)
    return PlanDoc(**result.describe())


def _activate(number: int) -> Applied:
    result = policy_versions.activate(get_store(), g.account_slug, number, actor=actor())
    with get_store().read() as db:
        version = policy_versions.get(db, account_id(), number)
        return Applied(
            active=VersionDoc(**policy_versions.describe(version)),
            plan=PlanDoc(**result.describe()),
        )


@bp.post("/policy/apply")
@requires("admin")
@spec.validate(
    json=VersionRef,
    resp=responses(HTTP_200=Applied, HTTP_400=Problem, HTTP_409=Problem),
    tags=[TAG],
)
def apply_policy() -> ResponseReturnValue:
    """Activate a version and re-evaluate every user; 409 `guard-refused` when a guard would
    break (nothing changes then)."""
    body: VersionRef = request.context.json  # type: ignore[attr-defined]
    return _activate(body.version)


@bp.post("/policy/rollback")
@requires("admin")
@spec.validate(
    json=VersionRef,
    resp=responses(HTTP_200=Applied, HTTP_400=Problem, HTTP_409=Problem),
    tags=[TAG],
)
def rollback_policy() -> ResponseReturnValue:
    """Go back to an earlier version (the same as applying it: planned, guarded, audited)."""
    body: VersionRef = request.context.json  # type: ignore[attr-defined]
    return _activate(body.version)


@bp.get("/policy/versions")
@requires("read")
@spec.validate(resp=responses(HTTP_200=VersionList), tags=[TAG])
def list_policy_versions() -> ResponseReturnValue:
    """The account's versions, newest first, with who made them and when."""
    with get_store().read() as db:
        versions = policy_versions.history(db, account_id())
        return VersionList(versions=[VersionDoc(**policy_versions.describe(v)) for v in versions])


@bp.get("/policy/versions/<int(max=2147483647):number>")
@requires("read")
@spec.validate(resp=responses(HTTP_200=VersionSource), tags=[TAG])
def get_policy_version(number: int) -> ResponseReturnValue:
    """One version with its source."""
    with get_store().read() as db:
        version = policy_versions.get(db, account_id(), number)
        return VersionSource(**policy_versions.describe(version, source=True))


@bp.get("/policy/versions/<int(max=2147483647):number>/diff")
@requires("read")
@spec.validate(query=DiffQuery, resp=responses(HTTP_200=Diff, HTTP_400=Problem), tags=[TAG])
def diff_policy_versions(number: int) -> ResponseReturnValue:
    """A unified diff from version `against` to this one."""
    q: DiffQuery = request.context.query  # type: ignore[attr-defined]
    with get_store().read() as db:
        lines = policy_versions.diff(db, account_id(), number, q.against)
    return Diff(number=number, against=q.against, diff=lines)
