"""Signing in to the console (the account's SSO, or a one-time link) and signing out."""

from __future__ import annotations

import secrets

from flask import current_app, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from bridge import accounts, admins, browser, idps, sessions
from bridge.web import get_store
from console.base import CSRF_FIELD, CsrfRefused, bp


def _local_next(slug: str) -> str:
    """Where to go after signing in: a page of this console, never anywhere else."""
    wanted = request.args.get("next", "")
    home = f"/console/{slug}/"
    if wanted.startswith(home) and "//" not in wanted and "\\" not in wanted:
        return wanted
    return home


@bp.get("/<slug>/signin")
def sign_in(slug: str) -> ResponseReturnValue:
    """The account's IdPs to sign in with; with exactly one, straight to it."""
    store = get_store()
    with store.read() as db:
        account = accounts.get_account(db, slug)
        found = [idp.name for idp in idps.list_for(db, account.id)]
    target = _local_next(slug)
    if len(found) == 1 and "out" not in request.args:
        return redirect(_sso_url(slug, found[0], target))
    return render_template(
        "console/signin.html",
        account=account,
        choices=[(name, _sso_url(slug, name, target)) for name in found],
        signed_out="out" in request.args,
    )


def _sso_url(slug: str, idp: str, target: str) -> str:
    return url_for("saml.login", slug=slug, idp=idp, next=target)


@bp.get("/<slug>/link/<token>")
def link(slug: str, token: str) -> ResponseReturnValue:
    """A one-time link's page: a button that uses it (a GET, as a mail scanner's, uses nothing)."""
    user_name = admins.peek_link(get_store(), slug, token)
    return render_template(
        "console/link.html", user_name=user_name, token=token, csrf=sessions.csrf_token(token)
    )


@bp.post("/<slug>/link/<token>")
def redeem_link(slug: str, token: str) -> ResponseReturnValue:
    if not sessions.csrf_ok(token, request.form.get(CSRF_FIELD)):
        raise CsrfRefused()
    secret = secrets.token_urlsafe(32)
    _admin, minutes = admins.redeem_link(get_store(), slug, token, secret)
    response = redirect(url_for("console.overview", slug=slug))
    secure = current_app.config["BRIDGE_SETTINGS"].base_url.startswith("https://")
    browser.set_session_cookie(response, secret, minutes, secure=secure)
    return response


@bp.post("/<slug>/signout")
def sign_out(slug: str) -> ResponseReturnValue:
    """End this browser's session (not the IdP's: sign out there separately)."""
    secret = browser.session_secret()
    if not sessions.csrf_ok(secret, request.form.get(CSRF_FIELD)):
        raise CsrfRefused()
    assert secret is not None  # csrf_valid holds only with a binding
    sessions.end(get_store(), secret)
    response = redirect(url_for("console.sign_in", slug=slug, out=1))
    browser.clear_session_cookie(response)
    g.pop("admin", None)
    return response
