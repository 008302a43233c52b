"""Environments of the account: list, add, set the default."""

from __future__ import annotations

from flask import g, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field

from api.base import account_id, actor, bp, requires, responses, spec
from api.models import Problem, Strict
from bridge import accounts, directory
from bridge.web import get_store

TAG = "environments"


class EnvironmentDoc(BaseModel):
    name: str
    default: bool


class EnvironmentList(BaseModel):
    environments: list[EnvironmentDoc]


class NewEnvironment(Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
    default: bool = False


def _list() -> EnvironmentList:
    with get_store().read() as db:
        envs = directory.environment_names(db, account_id())
        return EnvironmentList(
            environments=[EnvironmentDoc(name=e.name, default=e.is_default) for e in envs]
        )


@bp.get("/environments")
@requires("read")
@spec.validate(resp=responses(HTTP_200=EnvironmentList), tags=[TAG])
def list_environments() -> ResponseReturnValue:
    """The account's environments; default ones are what the policy defaults give."""
    return _list()


@bp.post("/environments")
@requires("admin")
@spec.validate(
    json=NewEnvironment,
    resp=responses(HTTP_201=EnvironmentList, HTTP_400=Problem, HTTP_409=Problem),
    tags=[TAG],
)
def add_environment() -> ResponseReturnValue:
    """Add an environment."""
    body: NewEnvironment = request.context.json  # type: ignore[attr-defined]
    accounts.add_environment(
        get_store(), str(g.account_slug), body.name, default=body.default, actor=actor()
    )
    return _list(), 201


@bp.put("/environments/<string(maxlength=64):name>/default")
@requires("admin")
@spec.validate(resp=responses(HTTP_200=EnvironmentList), tags=[TAG])
def set_default_environment(name: str) -> ResponseReturnValue:
    """Make an environment a default one (what the policy's defaults give)."""
    accounts.set_default_environment(get_store(), account_id(), name, True, actor=actor())
    return _list()


@bp.delete("/environments/<string(maxlength=64):name>/default")
@requires("admin")
@spec.validate(resp=responses(HTTP_200=EnvironmentList), tags=[TAG])
def unset_default_environment(name: str) -> ResponseReturnValue:
    """Make an environment no longer a default one."""
    accounts.set_default_environment(get_store(), account_id(), name, False, actor=actor())
    return _list()
