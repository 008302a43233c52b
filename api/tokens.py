"""SCIM tokens of the account: list, issue (shown once), revoke."""

from __future__ import annotations

from datetime import datetime

from flask import g, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field

from api.base import actor, bp, requires, responses, spec
from api.models import INT_MAX, Problem, Strict
from bridge import accounts
from bridge.models import ScimToken
from bridge.web import get_store

TAG = "scim-tokens"


class TokenDoc(BaseModel):
    id: int
    label: str
    prefix: str
    created: datetime
    last_used: datetime | None
    revoked: datetime | None


class TokenList(BaseModel):
    tokens: list[TokenDoc]


class IssuedToken(BaseModel):
    id: int
    prefix: str
    token: str = Field(description="The bearer token: shown this once, only its hash is kept.")


class NewToken(Strict):
    label: str = Field("", max_length=200)


def _doc(t: ScimToken) -> TokenDoc:
    return TokenDoc(
        id=t.id,
        label=t.label,
        prefix=t.prefix,
        created=t.created,
        last_used=t.last_used,
        revoked=t.revoked,
    )


@bp.get("/scim-tokens")
@requires("read")
@spec.validate(resp=responses(HTTP_200=TokenList), tags=[TAG])
def list_scim_tokens() -> ResponseReturnValue:
    """The account's SCIM tokens (never their values), with last use."""
    with get_store().read() as db:
        return TokenList(tokens=[_doc(t) for t in accounts.list_tokens(db, g.account_slug)])


@bp.post("/scim-tokens")
@requires("admin")
@spec.validate(json=NewToken, resp=responses(HTTP_201=IssuedToken, HTTP_400=Problem), tags=[TAG])
def issue_scim_token() -> ResponseReturnValue:
    """Issue a SCIM token; the response is the only time its value is shown."""
    body: NewToken = request.context.json  # type: ignore[attr-defined]
    token = accounts.issue_token(get_store(), g.account_slug, label=body.label, actor=actor())
    return IssuedToken(id=token.id, prefix=token.prefix, token=token.raw), 201


@bp.delete(f"/scim-tokens/<int(max={INT_MAX}):token_id>")
@requires("admin")
@spec.validate(resp=responses(HTTP_200=TokenDoc, HTTP_409=Problem), tags=[TAG])
def revoke_scim_token(token_id: int) -> ResponseReturnValue:
    """Revoke a SCIM token at once."""
    token = accounts.revoke_token(get_store(), g.account_slug, token_id, actor=actor())
    return _doc(token)
