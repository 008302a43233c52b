"""Webhook endpoints of an account: add, list, remove, rotate the secret; the delivery log and
a manual redeliver. Deliveries themselves are the workers' job (bridge.delivery).

Secrets follow Standard Webhooks (`whsec_` + base64 of 32 random bytes) and are sealed at rest,
since signing needs them back. A rotated-out secret keeps signing beside the new one for
ROTATION_OVERLAP, so a receiver can switch at its own pace.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bridge import audit, egress, events, owned, sealing
from bridge.accounts import get_account
from bridge.errors import InvalidInput, NotFound
from bridge.models import Account, Delivery, DeliveryAttempt, WebhookEndpoint, utcnow
from bridge.store import Store

ROTATION_OVERLAP = timedelta(hours=24)
MAX_ENDPOINTS = 20


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class Added:
    id: int
    secret: str


def add(
    store: Store,
    slug: str,
    url: str,
    *,
    types: list[str] | None,
    secret_key: str,
    allow_private: bool,
    actor: str,
) -> Added:
    """Register an endpoint; it receives events from now on. The secret is returned once."""
    wanted = sorted(events.parse_types(types or []) or [])
    egress.check_url(url, allow_private=allow_private, what="webhook URL")
    secret = new_secret()

    def work(db: Session) -> Added:
        account = get_account(db, slug)
        count = len(_endpoints(db, account.id))
        if count >= MAX_ENDPOINTS:
            raise InvalidInput(f"account {slug!r} already has {MAX_ENDPOINTS} webhook endpoints")
        db.flush()
        head = db.get_one(Account, account.id).audit_seq
        row = WebhookEndpoint(
            account_id=account.id,
            url=url,
            events=wanted,
            secret_sealed=sealing.seal(secret_key, secret.encode()),
            cursor=head + 1,  # its own webhook.add event is the first it does not receive
        )
        db.add(row)
        db.flush()
        audit.record(
            db,
            account.id,
            actor=actor,
            action="webhook.add",
            target_type="webhook",
            target_id=str(row.id),
            after={"url": url, "events": wanted},
        )
        return Added(row.id, secret)

    return store.write(work)


def _endpoints(db: Session, account_id: int) -> list[WebhookEndpoint]:
    return list(
        db.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.account_id == account_id)
            .order_by(WebhookEndpoint.id)
        )
    )


def describe(row: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": row.id,
        "url": row.url,
        "events": list(row.events) or ["*"],
        "disabled": row.disabled and row.disabled.isoformat(timespec="seconds"),
        "disabled_reason": row.disabled_reason,
        "cursor": row.cursor,
    }


def list_for(db: Session, slug: str) -> list[dict[str, Any]]:
    return [describe(row) for row in _endpoints(db, get_account(db, slug).id)]


def _endpoint(db: Session, slug: str, endpoint_id: int) -> tuple[Account, WebhookEndpoint]:
    what = f"webhook endpoint {endpoint_id}"
    return owned.locked(db, slug, WebhookEndpoint, WebhookEndpoint.id, endpoint_id, what)


def remove(store: Store, slug: str, endpoint_id: int, *, actor: str) -> None:
    """Delete an endpoint with its pending deliveries and log."""
    owned.remove(
        store,
        slug,
        WebhookEndpoint,
        WebhookEndpoint.id,
        endpoint_id,
        what=f"webhook endpoint {endpoint_id}",
        action="webhook.remove",
        describe=lambda row: {"url": row.url, "events": list(row.events)},
        actor=actor,
    )


def rotate_secret(store: Store, slug: str, endpoint_id: int, *, secret_key: str, actor: str) -> str:
    """A new secret; the old one signs too (both signatures sent) for ROTATION_OVERLAP."""
    secret = new_secret()

    def work(db: Session) -> str:
        account, row = _endpoint(db, slug, endpoint_id)
        row.previous_secret_sealed = row.secret_sealed
        row.previous_until = utcnow() + ROTATION_OVERLAP
        row.secret_sealed = sealing.seal(secret_key, secret.encode())
        audit.record(
            db,
            account.id,
            actor=actor,
            action="webhook.rotate_secret",
            target_type="webhook",
            target_id=str(endpoint_id),
        )
        return secret

    return store.write(work)


def enable(store: Store, slug: str, endpoint_id: int, *, actor: str) -> None:
    """Turn a disabled endpoint (410 Gone) back on; events since then are delivered."""

    def work(db: Session) -> None:
        account, row = _endpoint(db, slug, endpoint_id)
        row.disabled = None
        row.disabled_reason = None
        audit.record(
            db,
            account.id,
            actor=actor,
            action="webhook.enable",
            target_type="webhook",
            target_id=str(endpoint_id),
        )

    store.write(work)


def log(db: Session, slug: str, endpoint_id: int, limit: int = 50) -> list[dict[str, Any]]:
    """The endpoint's newest deliveries, each with its attempts (status, latency, excerpt)."""
    account = get_account(db, slug)
    rows = db.scalars(
        select(Delivery)
        .where(Delivery.account_id == account.id, Delivery.endpoint_id == endpoint_id)
        .order_by(Delivery.id.desc())
        .limit(limit)
    ).all()
    attempts: dict[int, list[dict[str, Any]]] = {}
    for attempt in db.scalars(
        select(DeliveryAttempt)
        .where(DeliveryAttempt.delivery_id.in_([r.id for r in rows]))
        .order_by(DeliveryAttempt.id)
    ):
        attempts.setdefault(attempt.delivery_id, []).append(
            {
                "at": attempt.at.isoformat(timespec="milliseconds"),
                "status": attempt.status,
                "latency_ms": attempt.latency_ms,
                "response": attempt.response,
                "error": attempt.error,
            }
        )
    return [
        {
            "id": r.id,
            "event_id": r.message_id,
            "type": r.event_type,
            "state": r.state,
            "attempts": attempts.get(r.id, []),
            "next_attempt": r.next_attempt.isoformat(timespec="seconds")
            if r.state == "pending"
            else None,
        }
        for r in rows
    ]


def redeliver(store: Store, slug: str, delivery_id: int, *, actor: str) -> None:
    """Send a delivery again now, whatever its state (the receiver de-duplicates on the id)."""

    def work(db: Session) -> None:
        account = get_account(db, slug)
        done = db.execute(
            update(Delivery)
            .where(Delivery.account_id == account.id, Delivery.id == delivery_id)
            .values(state="pending", next_attempt=utcnow(), claimed_until=None)
        ).rowcount  # type: ignore[attr-defined]
        if not done:
            raise NotFound(f"account {slug!r} has no delivery {delivery_id}")
        audit.record(
            db,
            account.id,
            actor=actor,
            action="webhook.redeliver",
            target_type="delivery",
            target_id=str(delivery_id),
        )

    store.write(work)
