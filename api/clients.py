"""OpenID Connect clients of the account (the product signing people in through the bridge)."""

from __future__ import annotations

from flask import g, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field

from api.base import actor, bp, requires, responses, spec
from api.models import Problem, Strict
from bridge import clients
from bridge.web import get_store

TAG = "oidc-clients"


class NewClient(Strict):
    name: str = Field(min_length=1, max_length=200)
    redirect_uris: list[str] = Field(min_length=1, max_length=20)
    public: bool = Field(False, description="No secret; PKCE S256 required.")
    backchannel_logout_uri: str | None = Field(None, max_length=2048)


class ClientDoc(BaseModel):
    client_id: str
    name: str
    public: bool
    redirect_uris: list[str]
    backchannel_logout_uri: str | None


class ClientList(BaseModel):
    clients: list[ClientDoc]


class ClientSecret(BaseModel):
    client_id: str
    client_secret: str | None = Field(description="Shown once; null for a public client.")


def _slug() -> str:
    return str(g.account_slug)


@bp.get("/clients")
@requires("admin")
@spec.validate(resp=responses(HTTP_200=ClientList), tags=[TAG])
def list_clients() -> ResponseReturnValue:
    """The account's OIDC clients (never their secrets)."""
    with get_store().read() as db:
        found = clients.list_for(db, _slug())
    return ClientList(
        clients=[
            ClientDoc(
                client_id=c.client_id,
                name=c.name,
                public=c.public,
                redirect_uris=list(c.redirect_uris),
                backchannel_logout_uri=c.backchannel_logout_uri,
            )
            for c in found
        ]
    )


@bp.post("/clients")
@requires("admin")
@spec.validate(json=NewClient, resp=responses(HTTP_201=ClientSecret, HTTP_400=Problem), tags=[TAG])
def add_client() -> ResponseReturnValue:
    """Register a client; its secret is in this answer only (only a hash is kept)."""
    body: NewClient = request.context.json  # type: ignore[attr-defined]
    made = clients.add(
        get_store(),
        _slug(),
        name=body.name,
        redirect_uris=body.redirect_uris,
        public=body.public,
        backchannel_logout_uri=body.backchannel_logout_uri,
        actor=actor(),
    )
    return ClientSecret(client_id=made.client_id, client_secret=made.secret), 201


@bp.delete("/clients/<string(maxlength=64):client_id>")
@requires("admin")
@spec.validate(resp=responses(HTTP_204=None), tags=[TAG])
def remove_client(client_id: str) -> ResponseReturnValue:
    """Remove a client; its codes and tokens stop working at once."""
    clients.remove(get_store(), _slug(), client_id, actor=actor())
    return "", 204


@bp.post("/clients/<string(maxlength=64):client_id>/rotate-secret")
@requires("admin")
@spec.validate(resp=responses(HTTP_200=ClientSecret), tags=[TAG])
def rotate_client_secret(client_id: str) -> ResponseReturnValue:
    """A new secret, in this answer only; the old one stops working."""
    made = clients.rotate_secret(get_store(), _slug(), client_id, actor=actor())
    return ClientSecret(client_id=made.client_id, client_secret=made.secret)
