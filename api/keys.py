"""API keys of the account: list and revoke (issuing is the CLI's, so a key is never sent over
the API it unlocks)."""

from __future__ import annotations

from flask.typing import ResponseReturnValue
from pydantic import BaseModel

from api.base import account_id, actor, bp, requires, responses, spec
from api.models import Problem
from bridge import api_keys
from bridge.web import get_store

TAG = "api-keys"


class ApiKeyDoc(BaseModel):
    id: int
    label: str
    scope: str
    prefix: str
    created: str
    created_by: str
    expires: str | None
    last_used: str | None
    revoked: str | None


class ApiKeyList(BaseModel):
    api_keys: list[ApiKeyDoc]


@bp.get("/api-keys")
@requires("admin")
@spec.validate(resp=responses(HTTP_200=ApiKeyList), tags=[TAG])
def list_api_keys() -> ResponseReturnValue:
    """The account's API keys (never their values)."""
    with get_store().read() as db:
        keys = [ApiKeyDoc(**api_keys.describe(k)) for k in api_keys.list_keys(db, account_id())]
    return ApiKeyList(api_keys=keys)


@bp.delete("/api-keys/<int(max=2147483647):key_id>")
@requires("admin")
@spec.validate(resp=responses(HTTP_200=ApiKeyDoc, HTTP_409=Problem), tags=[TAG])
def revoke_api_key(key_id: int) -> ResponseReturnValue:
    """Revoke an API key at once (the key sending this request may revoke itself)."""
    key = api_keys.revoke(get_store(), account_id(), key_id, actor=actor())
    return ApiKeyDoc(**api_keys.describe(key))
