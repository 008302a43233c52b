"""SCIM 2.0 service provider adapter (RFC 7643/7644) under /scim/v2."""

from __future__ import annotations

from flask import Flask
from flask.typing import ResponseReturnValue

from bridge import web


def init_app(app: Flask) -> None:
    from scim import errors, views

    def render(status: int, detail: str, exc: Exception) -> ResponseReturnValue:
        scim_type = None
        if isinstance(exc, errors.ScimError | web.errors.BridgeError):
            status, detail, scim_type = errors.from_exception(exc)
        if status == 500:
            detail = "internal error; the request id in X-Request-ID finds it in the logs"
        return errors.response(status, detail, scim_type)

    app.register_blueprint(views.bp)
    web.register_renderer(app, views.bp.url_prefix or "/scim/v2", render)
