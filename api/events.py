"""The event feed (a projection of the audit log) and the account's webhook endpoints."""

from __future__ import annotations

from typing import Any

from flask import current_app, g, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field

from api.base import account_id, actor, bp, requires, responses, spec
from api.models import Problem, Strict
from bridge import events, webhooks
from bridge.web import get_store

TAG = "events"
HOOKS = "webhooks"


class EventQuery(Strict):
    after: int = Field(0, ge=0, description="The cursor to read after (`next` of a page).")
    type: str | None = Field(None, max_length=1024, description="Event types, comma-separated.")
    limit: int = Field(100, ge=1, le=1000)


class EventDoc(BaseModel):
    id: str
    type: str
    timestamp: str
    actor: str
    cursor: str
    data: dict[str, Any]


class EventList(BaseModel):
    events: list[EventDoc]
    next: str = Field(description="Pass back as `after`: complete and gap-free, in order.")


class NewWebhook(Strict):
    url: str = Field(min_length=8, max_length=2048)
    events: list[str] = Field(default_factory=list, max_length=50, description="[] means all.")


class WebhookDoc(BaseModel):
    id: int
    url: str
    events: list[str]
    disabled: str | None
    disabled_reason: str | None
    cursor: int


class WebhookList(BaseModel):
    webhooks: list[WebhookDoc]


class WebhookSecret(BaseModel):
    id: int
    secret: str = Field(description="The Standard Webhooks signing secret, shown once.")


class Attempt(BaseModel):
    at: str
    status: int | None
    latency_ms: int
    response: str | None
    error: str | None


class DeliveryDoc(BaseModel):
    id: int
    event_id: str
    type: str
    state: str
    attempts: list[Attempt]
    next_attempt: str | None


class DeliveryList(BaseModel):
    deliveries: list[DeliveryDoc]


def _settings() -> Any:
    return current_app.config["BRIDGE_SETTINGS"]


def _slug() -> str:
    return str(g.account_slug)


@bp.get("/events")
@requires("read")
@spec.validate(query=EventQuery, resp=responses(HTTP_200=EventList, HTTP_400=Problem), tags=[TAG])
def list_events() -> ResponseReturnValue:
    """Events after a cursor, oldest first: what a consumer that missed webhooks catches up on."""
    q: EventQuery = request.context.query  # type: ignore[attr-defined]
    wanted = events.parse_types([q.type] if q.type else [])
    with get_store().read() as db:
        found, cursor = events.page(db, account_id(), after=q.after, types=wanted, limit=q.limit)
    return EventList(events=[EventDoc(**e.as_json()) for e in found], next=str(cursor))


@bp.get("/webhooks")
@requires("admin")
@spec.validate(resp=responses(HTTP_200=WebhookList), tags=[HOOKS])
def list_webhooks() -> ResponseReturnValue:
    """The account's webhook endpoints (never their secrets)."""
    with get_store().read() as db:
        rows = webhooks.list_for(db, _slug())
    return WebhookList(webhooks=[WebhookDoc(**r) for r in rows])


@bp.post("/webhooks")
@requires("admin")
@spec.validate(
    json=NewWebhook, resp=responses(HTTP_201=WebhookSecret, HTTP_400=Problem), tags=[HOOKS]
)
def add_webhook() -> ResponseReturnValue:
    """Add an endpoint (https, public address); its signing secret is in this answer only."""
    body: NewWebhook = request.context.json  # type: ignore[attr-defined]
    settings = _settings()
    added = webhooks.add(
        get_store(),
        _slug(),
        body.url,
        types=body.events,
        secret_key=settings.secret_key,
        allow_private=settings.allow_private_webhooks,
        actor=actor(),
    )
    return WebhookSecret(id=added.id, secret=added.secret), 201


@bp.delete("/webhooks/<int:endpoint_id>")
@requires("admin")
@spec.validate(resp=responses(HTTP_204=None), tags=[HOOKS])
def remove_webhook(endpoint_id: int) -> ResponseReturnValue:
    """Remove an endpoint with its pending deliveries."""
    webhooks.remove(get_store(), _slug(), endpoint_id, actor=actor())
    return "", 204


@bp.post("/webhooks/<int:endpoint_id>/rotate-secret")
@requires("admin")
@spec.validate(resp=responses(HTTP_200=WebhookSecret), tags=[HOOKS])
def rotate_webhook_secret(endpoint_id: int) -> ResponseReturnValue:
    """A new secret; deliveries carry both signatures for 24 hours."""
    secret = webhooks.rotate_secret(
        get_store(), _slug(), endpoint_id, secret_key=_settings().secret_key, actor=actor()
    )
    return WebhookSecret(id=endpoint_id, secret=secret)


@bp.get("/webhooks/<int:endpoint_id>/deliveries")
@requires("admin")
@spec.validate(resp=responses(HTTP_200=DeliveryList), tags=[HOOKS])
def list_deliveries(endpoint_id: int) -> ResponseReturnValue:
    """The endpoint's newest deliveries, each attempt's status, latency and answer excerpt."""
    with get_store().read() as db:
        rows = webhooks.log(db, _slug(), endpoint_id, limit=100)
    return DeliveryList(deliveries=[DeliveryDoc(**r) for r in rows])


@bp.post("/deliveries/<int:delivery_id>/redeliver")
@requires("admin")
@spec.validate(resp=responses(HTTP_204=None), tags=[HOOKS])
def redeliver(delivery_id: int) -> ResponseReturnValue:
    """Send a delivery again now (the receiver de-duplicates on the event id)."""
    webhooks.redeliver(get_store(), _slug(), delivery_id, actor=actor())
    return "", 204
