"""OpenID Connect provider adapter on Authlib: the product signs people in through the bridge."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from oidc import views

    views.init_views(app)
