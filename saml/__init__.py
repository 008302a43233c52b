"""SAML 2.0 service provider adapter on python3-saml: /saml/<account>/..., /session, /logout."""

from __future__ import annotations

from flask import Flask, Response, g
from flask.typing import ResponseReturnValue

from bridge import web


def init_app(app: Flask) -> None:
    from saml import errors, views

    def render(status: int, detail: str, exc: Exception) -> ResponseReturnValue:
        reason = "too_large" if status == 413 else ("internal" if status >= 500 else "invalid")
        return Response(
            errors.page(reason, g.get("request_id")), status=status, mimetype="text/html"
        )

    app.register_blueprint(views.bp)
    web.register_renderer(app, "/saml/", render)
