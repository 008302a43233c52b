"""Prometheus metrics: every metric the bridge exports is defined here, and only here.

Under gunicorn each worker writes its samples to files in PROMETHEUS_MULTIPROC_DIR (set by
gunicorn.conf.py before any worker imports this module) and a scrape adds them up, so every
worker counts. Counts of stored changes are taken when their transaction commits (a retried or
rolled-back attempt counts nothing). `/metrics` is never public by default: it is served on a
separate listener (BRIDGE_METRICS_BIND, from the gunicorn master) and/or on the app behind a
bearer token (BRIDGE_METRICS_TOKEN); with neither set the app has no `/metrics` at all. Labels
stay low-cardinality: route templates, never paths; the account slug only with
BRIDGE_METRICS_ACCOUNT_LABEL=1.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, has_app_context, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from sqlalchemy import event
from sqlalchemy.orm import Session

from bridge import models
from bridge.here import current
from bridge.settings import Settings

REQUESTS = Counter(
    "bridge_http_requests_total",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "bridge_http_request_duration_seconds",
    "Time from the request's arrival in the app to its response, by route template and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SCIM_OPERATIONS = Counter(
    "bridge_scim_operations_total",
    "SCIM operations by operation (the route's verb_noun) and result (ok, or the status code).",
    ["operation", "result", "account"],
)
LOGINS = Counter(
    "bridge_saml_logins_total",
    "SAML logins logged, by IdP kind, result (ok/refused) and typed reason.",
    ["idp_kind", "result", "reason", "account"],
)
POLICY_EVALUATIONS = Counter(
    "bridge_policy_evaluations_total",
    "Policy evaluations applied to a user: applied, error (access kept), or no_policy.",
    ["result"],
)
CHANGES = Counter(
    "bridge_provisioning_changes_total",
    "Committed row changes by kind (user, group, membership, role, environment, grant) and op.",
    ["kind", "op"],
)
AUDIT_APPENDS = Counter(
    "bridge_audit_appends_total",
    "Audit events appended to an account's chain (committed), by action.",
    ["action"],
)
WRITE_RETRIES = Counter(
    "bridge_store_write_retries_total",
    "Write transactions run again after a conflict with a concurrent writer, by cause.",
    ["cause"],
)
DB_UNAVAILABLE = Counter(
    "bridge_db_unavailable_total",
    "Requests answered 503 because the database could not serve them, by cause.",
    ["cause"],
)
POOL_CHECKED_OUT = Gauge(
    "bridge_db_pool_connections_in_use",
    "Database connections checked out of the pools of all live workers (each app thread keeps "
    "one for its stand-alone reads, on PostgreSQL and on a SQLite file).",
    multiprocess_mode="livesum",
)
POOL_CONNECTS = Counter(
    "bridge_db_connections_opened_total",
    "New database connections opened by the pools (a steady climb means connections drop).",
)
SQLITE_CHECKPOINTS = Histogram(
    "bridge_sqlite_checkpoint_seconds",
    "Checkpoints (PASSIVE) of the SQLite WAL done in the background (bridge.store), by duration.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
SQLITE_LOCK_WAITS = Histogram(
    "bridge_sqlite_lock_wait_seconds",
    "SQLite write transactions by how long they waited for the database's one write lock.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30),
)
WEBHOOK_DELIVERIES = Counter(
    "bridge_webhook_deliveries_total",
    "Delivery attempts recorded by `idbridge worker`, by kind (webhook, logout) and outcome "
    "(delivered, retrying, failed: given up, gone: 410 disabled the endpoint, missing).",
    ["kind", "outcome"],
)
WEBHOOK_BACKLOG = Gauge(
    "bridge_webhook_backlog",
    "Deliveries pending (neither delivered nor given up), as the worker last counted them.",
    multiprocess_mode="mostrecent",
)
WEBHOOK_OLDEST_PENDING = Gauge(
    "bridge_webhook_oldest_pending_seconds",
    "Age of the oldest pending delivery (0 when none), as the worker last counted.",
    multiprocess_mode="mostrecent",
)
CERTIFICATES_EXPIRING = Gauge(
    "bridge_idp_certificates_expiring",
    "IdP signing certificates expiring within 30 days (or expired), as of the last /readyz.",
    multiprocess_mode="mostrecent",
)

# Rows whose committed changes are counted, by the kind an operator reads (DESIGN §1).
KINDS: dict[type[Any], str] = {
    models.User: "user",
    models.Group: "group",
    models.Membership: "membership",
    models.RoleAssignment: "role",
    models.EnvironmentAccess: "environment",
    models.Grant: "grant",
}
PENDING = "bridge.metrics.pending"
ACCOUNT_LABEL = "bridge.metrics.account_label"

# IdP kind from the host (or Keycloak's path) of its entity ID or SSO URL; anything else "other".
IDP_HOSTS = {
    "okta.com": "okta",
    "oktapreview.com": "okta",
    "okta-emea.com": "okta",
    "sts.windows.net": "entra",
    "login.microsoftonline.com": "entra",
    "login.microsoftonline.us": "entra",
    "accounts.google.com": "google",
    "onelogin.com": "onelogin",
    "jumpcloud.com": "jumpcloud",
}


def idp_kind(*urls: str | None) -> str:
    """The vendor behind an IdP, from its entity ID or SSO URL (a bounded label value)."""
    for url in urls:
        parts = urlsplit(url or "")
        host = (parts.hostname or "").lower()
        for suffix, kind in IDP_HOSTS.items():
            if host == suffix or host.endswith("." + suffix):
                return kind
        if "/realms/" in parts.path:
            return "keycloak"
    return "other"


_CHILDREN: dict[tuple[Any, ...], Any] = {}


def child(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, kept once made: prometheus_client checks the values and takes
    a lock at every call (1 us; 8 calls a SCIM create, 3 a GET). The same children it keeps
    (as many as its own), so a scrape sees no difference."""
    key = (metric, *values)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*values)
    return found


def on_commit(db: Session, count: Callable[[], None]) -> None:
    """Run `count` once the session's transaction commits (never for a rolled-back attempt)."""
    db.info.setdefault(PENDING, []).append(count)


def count_created(db: Session, kind: str, rows: int = 1) -> None:
    """Count `rows` rows of `kind` (KINDS) inserted without the ORM, once committed; the ORM's
    own inserts are counted by the session's flushes (_after_flush), as are audit appends by
    bridge.audit."""
    _count_rows(db, kind, "created", rows)


def count_deleted(db: Session, kind: str, rows: int) -> None:
    """The same for `rows` rows of `kind` deleted without the ORM."""
    _count_rows(db, kind, "deleted", rows)


def _count_rows(db: Session, kind: str, op: str, rows: int) -> None:
    if rows:
        db.info.setdefault(PENDING, []).append(lambda: child(CHANGES, kind, op).inc(rows))


def per_account() -> bool:
    """Whether the operator asked for per-account series (BRIDGE_METRICS_ACCOUNT_LABEL)."""
    if not has_app_context():
        return False
    settings: Settings | None = current_app.config.get("BRIDGE_SETTINGS")
    return settings is not None and settings.metrics_account_label


def _after_flush(db: Session, _context: Any) -> None:
    # SessionEvents.after_flush: new/dirty/deleted still hold the pre-flush state here.
    counts: list[Callable[[], None]] = db.info.setdefault(PENDING, [])
    for op, objects in (("created", db.new), ("updated", db.dirty), ("deleted", db.deleted)):
        for obj in objects:
            kind = KINDS.get(type(obj))
            if kind is None or (op == "updated" and not db.is_modified(obj)):
                continue
            counts.append(child(CHANGES, kind, op).inc)


def _after_bulk_delete(context: Any) -> None:
    kind = KINDS.get(context.mapper.class_)
    rows = context.result.rowcount if context.result is not None else 0
    if kind is not None and rows and rows > 0:
        on_commit(context.session, lambda: child(CHANGES, kind, "deleted").inc(rows))


def _after_commit(db: Session) -> None:
    for count in db.info.pop(PENDING, []):
        count()


def _after_rollback(db: Session) -> None:
    db.info.pop(PENDING, None)


def instrument_store(sessions: Any, engine: Any) -> None:
    """Count committed changes of `sessions` and the connections of `engine`'s pool."""
    event.listen(sessions, "after_flush", _after_flush)
    event.listen(sessions, "after_bulk_delete", _after_bulk_delete)
    event.listen(sessions, "after_commit", _after_commit)
    event.listen(sessions, "after_rollback", _after_rollback)
    event.listen(engine.pool, "checkout", lambda *_: POOL_CHECKED_OUT.inc())
    event.listen(engine.pool, "checkin", lambda *_: POOL_CHECKED_OUT.dec())
    event.listen(engine.pool, "connect", lambda *_: POOL_CONNECTS.inc())


def init_app(app: Flask, settings: Settings) -> None:
    """Time and count every request; serve /metrics on the app only behind the token."""
    app.before_request(_start)
    app.after_request(_count)
    if settings.metrics_token:
        want = hashlib.sha256(settings.metrics_token.encode()).digest()
        app.add_url_rule("/metrics", "metrics", lambda: _serve(want))


def _start() -> None:
    g.metrics_start = time.perf_counter()


def _count(response: Response) -> Response:
    req, here = current()
    route = req.url_rule.rule if req.url_rule is not None else "<unmatched>"
    status = str(response.status_code)
    child(REQUESTS, req.method, route, status).inc()
    started = here.get("metrics_start")
    if started is not None:
        child(LATENCY, req.method, route, status).observe(time.perf_counter() - started)
    blueprint, _, view = (req.endpoint or "").rpartition(".")
    if blueprint == "scim" and view:
        result = "ok" if response.status_code < 400 else status
        account_id = here.get("account_id")
        account = _slug(account_id) if account_id is not None and per_account() else ""
        child(SCIM_OPERATIONS, view, result, account).inc()
    return response


_SLUGS: dict[int, str] = {}  # slugs are never renamed


def _slug(account_id: int) -> str:
    if account_id not in _SLUGS:
        with current_app.extensions["bridge.store"].read() as db:
            account = db.get(models.Account, account_id)
            _SLUGS[account_id] = account.slug if account is not None else ""
    return _SLUGS[account_id]


def _serve(want: bytes) -> Response:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    digest = hashlib.sha256(given.strip().encode()).digest()
    if scheme.lower() != "bearer" or not hmac.compare_digest(digest, want):
        return Response(
            "metrics need the metrics bearer token\n",
            status=401,
            mimetype="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    return Response(exposition(), mimetype=CONTENT_TYPE_LATEST)


def registry() -> CollectorRegistry:
    """Every worker's samples (multiprocess mode), or this process's when not under gunicorn."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected)  # type: ignore[no-untyped-call]
    return collected


def exposition() -> bytes:
    """The text format a Prometheus scrape reads."""
    return generate_latest(registry())


def serve(bind: str) -> None:
    """The separate metrics listener (`host:port`), started by the gunicorn master."""
    from prometheus_client import start_http_server

    host, _, port = bind.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=registry())
