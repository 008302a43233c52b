"""Webhooks: the account's endpoints (add, secret shown once, rotate, remove, enable) and each
one's delivery log with redeliver. Everything through bridge.webhooks."""

from __future__ import annotations

from flask import current_app, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from bridge import events, webhooks
from bridge.errors import NotFound
from bridge.settings import Settings
from bridge.web import get_store
from console.base import bp, notice


def _settings() -> Settings:
    settings: Settings = current_app.config["BRIDGE_SETTINGS"]
    return settings


def _page(slug: str, secret: str | None = None) -> ResponseReturnValue:
    with get_store().read() as db:
        endpoints = webhooks.list_for(db, slug)
    return render_template(
        "console/webhooks.html", endpoints=endpoints, types=events.TYPES, secret=secret
    )


@bp.get("/<slug>/webhooks", endpoint="webhooks")
def webhooks_page(slug: str) -> ResponseReturnValue:
    return _page(slug)


@bp.post("/<slug>/webhooks")
def add_webhook(slug: str) -> ResponseReturnValue:
    """Register an endpoint (https, public address); its signing secret is shown this once."""
    settings = _settings()
    added = webhooks.add(
        get_store(),
        slug,
        request.form.get("url", "").strip(),
        types=request.form.getlist("events"),
        secret_key=settings.secret_key or "",
        allow_private=settings.allow_private_webhooks,
        actor=g.admin.actor,
    )
    notice("ok", f"Endpoint {added.id} added. Copy its signing secret now: it is shown only once.")
    return _page(slug, added.secret)


@bp.post("/<slug>/webhooks/<int:endpoint_id>/rotate")
def rotate_webhook(slug: str, endpoint_id: int) -> ResponseReturnValue:
    secret = webhooks.rotate_secret(
        get_store(),
        slug,
        endpoint_id,
        secret_key=_settings().secret_key or "",
        actor=g.admin.actor,
    )
    notice("ok", "New secret (shown only once); the old one keeps signing beside it for 24 h.")
    return _page(slug, secret)


@bp.post("/<slug>/webhooks/<int:endpoint_id>/enable")
def enable_webhook(slug: str, endpoint_id: int) -> ResponseReturnValue:
    webhooks.enable(get_store(), slug, endpoint_id, actor=g.admin.actor)
    return redirect(url_for("console.webhooks"))


@bp.post("/<slug>/webhooks/<int:endpoint_id>/remove")
def remove_webhook(slug: str, endpoint_id: int) -> ResponseReturnValue:
    webhooks.remove(get_store(), slug, endpoint_id, actor=g.admin.actor)
    return redirect(url_for("console.webhooks"))


@bp.get("/<slug>/webhooks/<int:endpoint_id>", endpoint="webhook")
def webhook_page(slug: str, endpoint_id: int) -> ResponseReturnValue:
    """The endpoint's newest deliveries with every attempt (status, latency, error)."""
    with get_store().read() as db:
        found = [e for e in webhooks.list_for(db, slug) if e["id"] == endpoint_id]
        deliveries = webhooks.log(db, slug, endpoint_id) if found else []
    if not found:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return render_template("console/webhook.html", endpoint=found[0], deliveries=deliveries)


@bp.post("/<slug>/webhooks/deliveries/<int:delivery_id>/redeliver")
def redeliver(slug: str, delivery_id: int) -> ResponseReturnValue:
    webhooks.redeliver(get_store(), slug, delivery_id, actor=g.admin.actor)
    back = request.form.get("endpoint", type=int)
    if back is not None:
        return redirect(url_for("console.webhook", endpoint_id=back, redelivered=delivery_id))
    return redirect(url_for("console.webhooks"))
