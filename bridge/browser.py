"""The signed-in browser's cookie, shared by every HTML adapter (saml/, console/).

The cookie carries a random secret, signed with the app's key; the store keeps only its hash,
and CSRF tokens are derived from it (bridge.sessions). Adapters never read the cookie themselves.
"""

from __future__ import annotations

from flask import Response, current_app, request
from itsdangerous import URLSafeSerializer

from bridge.sessions import COOKIE, COOKIE_SALT, cookie_secret


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=COOKIE_SALT)


def set_session_cookie(response: Response, secret: str, minutes: int, *, secure: bool) -> None:
    """Hand the browser its session: HttpOnly, SameSite=Lax, Secure behind https."""
    response.set_cookie(
        COOKIE,
        _serializer().dumps(secret),
        max_age=minutes * 60,
        httponly=True,
        samesite="Lax",
        secure=secure,
        path="/",
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/")


def session_secret() -> str | None:
    """The session secret the request's cookie carries, if its signature holds."""
    return cookie_secret(current_app.config["SECRET_KEY"], request.cookies.get(COOKIE))
