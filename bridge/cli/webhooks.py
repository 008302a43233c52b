"""Webhook endpoints (signed per Standard Webhooks), their delivery log, and the worker."""

from __future__ import annotations

import signal
import threading
from datetime import timedelta

import click

from bridge import accounts, delivery, events, metrics, retention, webhooks
from bridge.cli.base import Context, emit, fails_cleanly, main, pass_ctx


@main.group("webhooks")
def webhooks_group() -> None:
    """Where an account's events are POSTed."""


@webhooks_group.command("add")
@click.argument("slug")
@click.argument("url")
@click.option(
    "--events", "types", multiple=True, help="Event types (comma-separated); default all."
)
@pass_ctx
@fails_cleanly
def webhooks_add(ctx: Context, slug: str, url: str, types: tuple[str, ...]) -> None:
    """Add an endpoint; the signing secret is shown once, alone on the last line."""
    settings = ctx.settings.ensure_secret_key()
    added = webhooks.add(
        ctx.store,
        slug,
        url,
        types=list(types),
        secret_key=settings.secret_key or "",
        allow_private=settings.allow_private_webhooks,
        actor=ctx.actor,
    )
    click.echo(f"webhook endpoint {added.id} for {slug}; its signing secret (shown once):")
    click.echo(added.secret)


@webhooks_group.command("list")
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@fails_cleanly
def webhooks_list(ctx: Context, slug: str, as_json: bool) -> None:
    """List the endpoints of SLUG (never their secrets)."""
    with ctx.store.read() as db:
        rows = webhooks.list_for(db, slug)
    if as_json:
        emit(rows)
        return
    for row in rows:
        state = f"disabled ({row['disabled_reason']})" if row["disabled"] else "active"
        click.echo(f"{row['id']}\t{row['url']}\t{','.join(row['events'])}\t{state}")


@webhooks_group.command("remove")
@click.argument("slug")
@click.argument("endpoint_id", type=int)
@pass_ctx
@fails_cleanly
def webhooks_remove(ctx: Context, slug: str, endpoint_id: int) -> None:
    """Remove an endpoint and its pending deliveries."""
    webhooks.remove(ctx.store, slug, endpoint_id, actor=ctx.actor)
    click.echo(f"removed webhook endpoint {endpoint_id} of {slug}")


@webhooks_group.command("rotate-secret")
@click.argument("slug")
@click.argument("endpoint_id", type=int)
@pass_ctx
@fails_cleanly
def webhooks_rotate(ctx: Context, slug: str, endpoint_id: int) -> None:
    """A new secret (last line); both signatures are sent for 24 hours."""
    settings = ctx.settings.ensure_secret_key()
    secret = webhooks.rotate_secret(
        ctx.store, slug, endpoint_id, secret_key=settings.secret_key or "", actor=ctx.actor
    )
    click.echo("new signing secret (the old one also signs for 24 hours):")
    click.echo(secret)


@webhooks_group.command("enable")
@click.argument("slug")
@click.argument("endpoint_id", type=int)
@pass_ctx
@fails_cleanly
def webhooks_enable(ctx: Context, slug: str, endpoint_id: int) -> None:
    """Turn an endpoint disabled by a 410 back on."""
    webhooks.enable(ctx.store, slug, endpoint_id, actor=ctx.actor)
    click.echo(f"enabled webhook endpoint {endpoint_id} of {slug}")


@webhooks_group.command("log")
@click.argument("slug")
@click.argument("endpoint_id", type=int)
@click.option("-n", "limit", default=20, help="How many deliveries.")
@pass_ctx
@fails_cleanly
def webhooks_log(ctx: Context, slug: str, endpoint_id: int, limit: int) -> None:
    """The newest deliveries of an endpoint with every attempt (JSON)."""
    with ctx.store.read() as db:
        emit(webhooks.log(db, slug, endpoint_id, limit))


@webhooks_group.command("redeliver")
@click.argument("slug")
@click.argument("delivery_id", type=int)
@pass_ctx
@fails_cleanly
def webhooks_redeliver(ctx: Context, slug: str, delivery_id: int) -> None:
    """Send a delivery again now."""
    webhooks.redeliver(ctx.store, slug, delivery_id, actor=ctx.actor)
    click.echo(f"delivery {delivery_id} queued again")


@webhooks_group.command("prune")
@pass_ctx
@fails_cleanly
def webhooks_prune(ctx: Context) -> None:
    """Delete finished deliveries (all accounts) older than BRIDGE_DELIVERY_LOG_DAYS (30) and
    login attempts older than BRIDGE_LOGIN_LOG_DAYS (90); the worker does it every 5 minutes."""
    done = retention.prune(ctx.store, _retention(ctx))
    click.echo(
        f"deleted {done.deliveries} finished deliveries and {done.login_attempts} login attempts"
    )


def _retention(ctx: Context) -> retention.Retention:
    return retention.Retention(
        deliveries=timedelta(days=ctx.settings.delivery_log_days),
        logins=timedelta(days=ctx.settings.login_log_days),
    )


@main.command("worker")
@click.option("--threads", default=8, show_default=True, help="Deliveries in flight at once.")
@click.option(
    "--metrics-bind",
    envvar="BRIDGE_WORKER_METRICS_BIND",
    default=None,
    help="host:port of this worker's Prometheus listener (env BRIDGE_WORKER_METRICS_BIND).",
)
@pass_ctx
def worker(ctx: Context, threads: int, metrics_bind: str | None) -> None:
    """Deliver webhooks and back-channel logout tokens until SIGTERM/SIGINT (Procfile worker:)."""
    settings = ctx.settings.ensure_secret_key()
    tuning = delivery.Tuning(threads=threads, retention=_retention(ctx))
    sender = delivery.Sender(
        ctx.store,
        settings.secret_key or "",
        settings.base_url,
        settings.allow_private_webhooks,
        tuning,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if metrics_bind:
        metrics.serve(metrics_bind)
        click.echo(f"worker metrics on http://{metrics_bind}/metrics", err=True)
    click.echo(f"worker delivering with {threads} threads", err=True)
    delivery.run(ctx.store, sender, stop=stop)


@main.command("events")
@click.argument("slug")
@click.option("--after", default=0, show_default=True, help="The cursor to read after.")
@click.option("--type", "types", multiple=True, help="Event types (comma-separated).")
@click.option("--limit", default=100, show_default=True, help="At most this many (<= 1000).")
@pass_ctx
@fails_cleanly
def events_list(ctx: Context, slug: str, after: int, types: tuple[str, ...], limit: int) -> None:
    """The account's events after a cursor, as JSON: {"events": [...], "next_cursor": "N"}."""
    wanted = events.parse_types(types)
    with ctx.store.read() as db:
        account = accounts.get_account(db, slug)
        found, cursor = events.page(db, account.id, after=after, types=wanted, limit=limit)
    emit({"events": [e.as_json() for e in found], "next_cursor": str(cursor)})
