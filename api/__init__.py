"""Management API under /api/v1: scoped API keys, RFC 9457 problems, an OpenAPI 3.1 document."""

from __future__ import annotations

from flask import Flask, Response, json
from flask.typing import ResponseReturnValue

from bridge import web

PROBLEM_JSON = "application/problem+json"


def init_app(app: Flask) -> None:
    # Each module adds its routes to the one blueprint (one module per resource).
    from api import (  # noqa: F401
        base,
        clients,
        environments,
        events,
        groups,
        idps,
        keys,
        logs,
        policy,
        reference,
        tokens,
        users,
    )

    def render(status: int, detail: str, exc: Exception) -> ResponseReturnValue:
        body = web.problem(status, detail, exc)
        response = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="idbridge"'
        return response

    app.register_blueprint(base.bp)
    web.register_renderer(app, base.bp.url_prefix or "/api/v1", render)
