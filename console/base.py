"""What every console page shares: who is signed in, CSRF checks, security headers, errors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from bridge import admins, browser, sessions
from bridge.errors import BridgeError, Forbidden
from bridge.web import get_store, status_of

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
)
# Pages anyone may open (they check what they need themselves).
PUBLIC = {
    "console.static",
    "console.sign_in",
    "console.sign_out",
    "console.link",
    "console.redeem_link",
    "console.setup",
    "console.setup_idp",
    "console.setup_scim",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE = 50
CSRF_FIELD = "csrf_token"  # the field /logout's form uses too


class CsrfRefused(Exception):
    """A POST without the form's CSRF token (or with another session's)."""


@bp.url_value_preprocessor
def _pull_slug(endpoint: str | None, values: dict[str, Any] | None) -> None:
    g.slug = (values or {}).get("slug")


@bp.url_defaults
def _push_slug(endpoint: str, values: dict[str, Any]) -> None:
    if "slug" not in values and g.get("slug") and endpoint != "console.static":
        values["slug"] = g.slug


@bp.before_request
def _require_admin() -> ResponseReturnValue | None:
    """Every page but sign-in needs an admin of this account; every POST its CSRF token."""
    if request.endpoint in PUBLIC or g.get("slug") is None:
        return None
    secret = browser.session_secret()
    admin = admins.signed_in(get_store(), g.slug, secret)  # Forbidden: signed in, not an admin
    if admin is None or secret is None:
        if request.method != "GET":
            raise CsrfRefused()
        there = quote(request.full_path.rstrip("?"), safe="/?=&")
        return redirect(url_for("console.sign_in", slug=g.slug) + "?next=" + there)
    if request.method == "POST" and not sessions.csrf_ok(secret, request.form.get(CSRF_FIELD)):
        raise CsrfRefused()
    g.admin = admin
    g.csrf = sessions.csrf_token(secret)
    return None


# The sections in the navigation, in order (endpoint, label).
NAV = [
    ("console.overview", "Overview"),
    ("console.users", "Users"),
    ("console.groups", "Groups"),
    ("console.policy", "Policy"),
    ("console.idps", "IdP connection"),
    ("console.scim", "SCIM"),
    ("console.logins", "Logins"),
    ("console.audit", "Audit"),
    ("console.webhooks", "Webhooks"),
]


@bp.context_processor
def _globals() -> dict[str, Any]:
    return {"csrf_field": CSRF_FIELD, "nav": NAV, "notices": g.get("notices", [])}


@bp.app_template_filter("when")
def _when(at: datetime | None) -> str:
    return "" if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@bp.app_template_filter("day")
def _day(at: datetime | None) -> str:
    return "" if at is None else at.astimezone(UTC).strftime("%Y-%m-%d")


def notice(kind: str, message: str) -> None:
    """A line shown at the top of the page being rendered (`ok` or `bad`)."""
    g.setdefault("notices", []).append((kind, message))


def secure_headers(response: Response) -> Response:
    """No framing, no inline script, no third-party anything, nothing cached, no referrer."""
    if request.path.startswith("/console/"):
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if request.endpoint != "console.static":
            response.headers["Cache-Control"] = "no-store"
    return response


def error_page(status: int, detail: str, *, title: str | None = None) -> ResponseReturnValue:
    titles = {
        400: "That did not work",
        403: "You may not do this",
        404: "Not found",
        409: "That did not work",
        413: "Too large",
    }
    heading = title or titles.get(status, "Something went wrong")
    body = detail if status < 500 else "The error was logged; give your admin the reference below."
    return (
        render_template(
            "console/error.html",
            status=status,
            title=heading,
            detail=body,
            request_id=g.get("request_id"),
        ),
        status,
    )


@bp.errorhandler(CsrfRefused)
def _csrf_refused(exc: CsrfRefused) -> ResponseReturnValue:
    return error_page(
        403,
        "This form was not sent from a page of your console session (its security token is "
        "missing or out of date). Nothing was changed. Reload the page and try again.",
        title="Form refused",
    )


@bp.errorhandler(Forbidden)
def _forbidden(exc: Forbidden) -> ResponseReturnValue:
    return (
        render_template(
            "console/forbidden.html",
            detail=exc.detail,
            csrf=sessions.csrf_token(browser.session_secret() or ""),
        ),
        403,
    )


@bp.errorhandler(BridgeError)
def _domain_error(exc: BridgeError) -> ResponseReturnValue:
    return error_page(status_of(exc), exc.detail)


def page_args() -> tuple[int | None, int]:
    """The `before` cursor (a bad value means the first page) and the page size."""
    before = request.args.get("before", type=int)
    return before, PAGE
