"""What every request shares: the store, a request id, errors as JSON, health checks."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from flask import Blueprint, Flask, current_app, g, jsonify, request
from flask.sessions import NullSession, SessionInterface, SessionMixin
from flask.typing import ResponseReturnValue
from flask.wrappers import Request, Response
from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from bridge import errors, guards, idps, metrics, schema
from bridge.here import current
from bridge.store import Store, scoped_store

log = logging.getLogger(__name__)
bp = Blueprint("bridge", __name__)

# One table from domain errors to HTTP statuses; protocol adapters render their own bodies.
STATUS: dict[type[errors.BridgeError], int] = {
    errors.InvalidInput: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.PreconditionFailed: 412,
    errors.Unavailable: 503,
}
# RFC 9457 problem types, one stable slug per error class (the most specific class wins), and
# for app-level HTTP errors by status; /api/v1/reference#problem-<slug> describes each.
PROBLEM_TYPES: dict[type[errors.BridgeError], str] = {
    errors.PolicyInvalid: "policy-invalid",
    errors.InvalidInput: "invalid-input",
    errors.Unauthorized: "unauthorized",
    errors.Forbidden: "forbidden",
    errors.NotFound: "not-found",
    errors.GuardRefused: "guard-refused",
    errors.Conflict: "conflict",
    errors.PreconditionFailed: "precondition-failed",
    errors.Unavailable: "unavailable",
}
HTTP_PROBLEM_TYPES = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    413: "too-large",
    415: "unsupported-media-type",
    500: "internal-error",
}
RETRY_AFTER = "5"  # seconds: a database restart or failover usually takes a few
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Protocol adapters render errors under their own URL prefix (SCIM JSON, the SAML error page);
# app-level handlers see what blueprint handlers cannot: unknown URLs, 405s, oversized bodies.
Renderer = Callable[[int, str, Exception], ResponseReturnValue]
RENDERERS = "bridge.renderers"


def register_renderer(app: Flask, prefix: str, renderer: Renderer) -> None:
    """Render app-level errors for paths under `prefix` with `renderer`."""
    app.extensions.setdefault(RENDERERS, {})[prefix] = renderer


def _render(status: int, detail: str, exc: Exception) -> ResponseReturnValue:
    for prefix, renderer in current_app.extensions.get(RENDERERS, {}).items():
        if request.path.startswith(prefix):
            return renderer(status, detail, exc)  # type: ignore[no-any-return]
    if status == 500:
        return jsonify(error="Internal Server Error", request_id=g.get("request_id")), 500
    name = exc.name if isinstance(exc, HTTPException) else type(exc).__name__
    return jsonify(error=name, detail=detail), status


def status_of(error: errors.BridgeError) -> int:
    for kind in type(error).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 400


def problem(status: int, detail: str, exc: Exception) -> dict[str, Any]:
    """The RFC 9457 problem document for an error (extension members for guards and policies)."""
    slug = HTTP_PROBLEM_TYPES.get(status, "error")
    if isinstance(exc, errors.BridgeError):
        slug = next((PROBLEM_TYPES[k] for k in type(exc).__mro__ if k in PROBLEM_TYPES), slug)
    base = current_app.config["BRIDGE_SETTINGS"].base_url
    body: dict[str, Any] = {
        "type": f"{base}/api/v1/reference#problem-{slug}",
        "title": slug.replace("-", " ").capitalize(),
        "status": status,
        "detail": detail,
    }
    if isinstance(exc, errors.GuardRefused):
        body["guard"] = exc.guard
    if isinstance(exc, errors.PolicyInvalid):
        body["errors"] = exc.problems
    if status == 500:
        body["detail"] = "internal error; the request id finds it in the logs"
        body["request_id"] = g.get("request_id")
    return body


def get_store() -> Store:
    """The store of the running app: inside a request, the one whose scope it runs in
    (`_open_scope` opened it on this store), found without the `current_app` proxy's lookup."""
    store = scoped_store()
    if store is None:
        store = current_app.extensions["bridge.store"]
    return store


class _NoSession(NullSession):
    """Flask's null session, refusing writes with the reason that holds here (Flask's own
    message says no secret key was set, and asks for one: the bridge has one)."""

    def _fail(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError(
            "the bridge keeps nothing in Flask's cookie session (bridge.web.NoCookieSession): "
            "keep the state in a row, as bridge.sessions keeps a sign-in"
        )

    __setitem__ = __delitem__ = clear = pop = popitem = update = setdefault = _fail


class NoCookieSession(SessionInterface):
    """Flask's signed-cookie session is not used: a sign-in is a row (bridge.sessions) whose
    cookie holds its secret only, a form's CSRF token is derived from that, and the console's
    notices last one page (g). Flask would still open one (a signing serializer built, the
    cookie looked for) and weigh saving it on every request, 0.03-0.08 ms of CPU each (a
    /healthz: 0.31-0.35 -> 0.27-0.28 ms); and a value put in `flask.session` by mistake would
    travel to the browser, readable by its holder. It opens as a null session instead, which
    refuses any write."""

    null_session_class = _NoSession

    def open_session(self, app: Flask, request: Request) -> SessionMixin:
        return self.make_null_session(app)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        return None


def init_app(app: Flask, store: Store) -> None:
    app.extensions["bridge.store"] = store
    app.session_interface = NoCookieSession()
    app.before_request(_open_scope)
    app.teardown_request(_close_scope)
    app.before_request(_assign_request_id)
    app.after_request(_echo_request_id)
    app.after_request(_retry_after)
    app.register_error_handler(errors.BridgeError, _domain_error)
    app.register_error_handler(OperationalError, _database_unavailable)
    app.register_error_handler(InterfaceError, _database_unavailable)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    app.register_blueprint(bp)


SCOPE = "bridge.store_scope"
STANDALONE = "bridge_standalone_reads"  # a view function's mark: see standalone_reads

V = TypeVar("V", bound=Callable[..., Any])


def standalone_reads(view: V) -> V:
    """Mark a view whose reads each stand alone (no two compared, no server-side cursor): its
    request's reads need no shared snapshot, and on PostgreSQL go without a transaction
    (bridge.store: two round trips fewer per request)."""
    setattr(view, STANDALONE, True)
    return view


def _open_scope() -> None:
    """One database session for the whole request: authentication, reads and writes.

    Kept in the request's environ, not in `g`: a SCIM Bulk operation is a request dispatched
    inside the Bulk request, sharing its app context and so its `g`; in `g` the operation's
    scope replaced the Bulk's, whose session was then never closed (a connection held in an
    open transaction for good, and that thread's later work outside a request reading its stale
    snapshot)."""
    req = current()[0]
    view = current_app.view_functions.get(req.endpoint or "")
    scope = get_store().scope(snapshot=not getattr(view, STANDALONE, False))
    scope.__enter__()
    req.environ[SCOPE] = scope


def _close_scope(_error: BaseException | None) -> None:
    scope = current()[0].environ.pop(SCOPE, None)
    if scope is not None:
        scope.__exit__(None, None, None)


def _assign_request_id() -> None:
    req, here = current()
    given = req.headers.get("X-Request-ID", "")
    here.request_id = given if REQUEST_ID.fullmatch(given) else secrets.token_hex(8)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    length = req.content_length
    if length is not None and length > limit:
        _drain(length)
        raise RequestEntityTooLarge(f"the request body is over the limit of {limit} bytes")


DRAIN_LIMIT = 64 * 1024 * 1024


def _drain(length: int) -> None:
    """Read (and drop) an oversized body before answering 413: a server that answers without
    reading it closes the connection under a client still sending, which then sees a reset
    instead of the 413. Beyond DRAIN_LIMIT the connection is closed anyway."""
    stream = request.environ.get("wsgi.input")
    remaining = min(length, DRAIN_LIMIT)
    while stream is not None and remaining > 0:
        chunk = stream.read(min(65536, remaining))
        if not chunk:
            break
        remaining -= len(chunk)


def _echo_request_id(response: Any) -> Any:
    request_id = current()[1].get("request_id")
    if request_id is not None:
        response.headers["X-Request-ID"] = request_id
    if response.status_code == 204:  # no body, so no type (Flask's default is text/html)
        response.headers.pop("Content-Type", None)
    return response


def _retry_after(response: Any) -> Any:
    if response.status_code == 503:  # RFC 9110 §10.2.3: when to come back
        response.headers.setdefault("Retry-After", RETRY_AFTER)
    return response


def _database_unavailable(error: Exception) -> ResponseReturnValue:
    """The database is down, restarting, read-only or full: a 503 to retry, never a 500.

    Nothing was written: the transaction did not commit (a commit whose answer was lost may have
    landed; a retried SCIM create then meets its own userName and gets a 409)."""
    orig = getattr(error, "orig", None)
    cause = type(orig).__name__ if orig is not None else type(error).__name__
    log.error("database unavailable: %s: %s", cause, str(orig or error).strip().splitlines()[0])
    metrics.DB_UNAVAILABLE.labels(cause).inc()
    return _domain_error(errors.Unavailable("the database is unavailable; try again shortly"))


def _domain_error(error: errors.BridgeError) -> ResponseReturnValue:
    return _render(status_of(error), error.detail, error)


def _http_error(error: HTTPException) -> ResponseReturnValue:
    return _render(error.code or 500, error.description or error.name, error)


def _unexpected_error(error: Exception) -> ResponseReturnValue:
    log.exception("unhandled error")
    return _render(500, "internal error", error)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process is up."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """The database answers and its schema is at the newest migration."""
    store = get_store()
    try:
        with store.read() as db:
            db.execute(text("SELECT 1"))
        at = schema.current(store.engine)
    except Exception as exc:  # any failure to reach the database means "not ready"
        log.warning("readiness check failed: %s", type(exc).__name__)
        return jsonify(status="unavailable", reason="database unreachable"), 503
    want = schema.head()
    if at != want:
        reason = (
            f"database schema at {at or 'nothing'}, code expects {want}: run `idbridge db upgrade`"
        )
        return jsonify(status="unavailable", reason=reason), 503
    body: dict[str, Any] = {"status": "ok", "schema": at}
    broken = store.policies.problems()
    if broken:  # still serving: each account keeps its last good policy
        body["policy_errors"] = broken
    with store.read() as db:
        expiring = idps.expiring(db)
        breaches = guards.all_breaches(db, store.policies)
    metrics.CERTIFICATES_EXPIRING.set(len(expiring))
    if expiring:
        body["certificate_warnings"] = expiring
    if breaches:  # still serving: the live path keeps each guarded role (bridge.guards)
        body["policy_guard_breaches"] = breaches
    return jsonify(body)
