"""The admin console (/console/<account>/): server-rendered pages on the bridge/ services.

An account's admins sign in through the account's own SSO (or a one-time link); every form
carries a CSRF token; pages are sent with a strict Content-Security-Policy and no third-party
assets (the stylesheet and script are served by the app).
"""

from __future__ import annotations

from flask import Flask
from flask.typing import ResponseReturnValue

from bridge import web


def init_app(app: Flask) -> None:
    from console import (  # noqa: F401  (each module adds its routes to bp)
        base,
        connect,
        groups,
        policy,
        setup,
        signin,
        users,
        views,
        webhooks,
    )

    def render(status: int, detail: str, exc: Exception) -> ResponseReturnValue:
        return base.error_page(status, detail)

    app.jinja_env.add_extension("jinja2.ext.do")
    app.register_blueprint(base.bp)
    app.after_request(base.secure_headers)
    web.register_renderer(app, "/console/", render)
