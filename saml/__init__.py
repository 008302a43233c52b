"""SAML 2.0 service provider adapter on python3-saml: /saml/<account>/..., /session, /logout."""

from __future__ import annotations

from flask import Flask, Response, g
from flask.typing import ResponseReturnValue

from bridge import web

# Refusals the blueprint never sees (routing and body-size errors), by HTTP status.
# 503: the database is down or read-only (bridge.web answers it; nothing could be logged).
REASONS = {404: "not_found", 405: "wrong_method", 413: "too_large", 503: "unavailable"}


def init_app(app: Flask) -> None:
    from saml import errors, testlogin, views  # noqa: F401  (testlogin adds routes to bp)

    def render(status: int, detail: str, exc: Exception) -> ResponseReturnValue:
        reason = REASONS.get(status, "internal" if status >= 500 else "invalid")
        in_log = views.record_app_refusal(reason, detail) if status < 500 else False
        page = errors.page(reason, g.get("request_id"), in_login_log=in_log)
        return Response(page, status=status, mimetype="text/html")

    app.register_blueprint(views.bp)
    web.register_renderer(app, "/saml/", render)
