"""IdP test logins over SAML (bridge.test_logins): the one-time start page, its button, and the
ACS's answer to a test request, which shows what the IdP sent and what the policy would decide
and never opens a session."""

from __future__ import annotations

import secrets
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit

from flask import Response, redirect
from flask.typing import ResponseReturnValue
from onelogin.saml2.auth import OneLogin_Saml2_Auth

from bridge import test_logins
from bridge.errors import Conflict, NotFound
from bridge.models import Account, IdentityProvider
from bridge.web import get_store
from saml import mapping, pages, sso
from saml.views import LOGIN_COOKIE, _account, _choose, _login_nonce, _sp, bp, login_cookie

STATUS = {NotFound: 404, Conflict: 409}


def _page(body: str, status: int = 200, *, form_to: str | None = None) -> Response:
    """A page with no script at all, never framed or cached; its form may go on to the IdP."""
    response = Response(body, status=status, mimetype="text/html")
    targets = "'self'" + (f" {form_to}" if form_to else "")
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; "
        f"base-uri 'none'; form-action {targets}"
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"  # the URL holds the one-time token
    response.headers["Cache-Control"] = "no-store"
    return response


def _unusable(exc: NotFound | Conflict) -> Response:
    return _page(pages.message("This test login cannot start", exc.detail), STATUS[type(exc)])


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@bp.get("/saml/<slug>/test-login/<raw>")
def test_login_page(slug: str, raw: str) -> ResponseReturnValue:
    """What the link tests, and a button; a GET never uses the link up."""
    account = _account(slug)
    try:
        link = test_logins.peek(get_store(), slug, raw)
    except (NotFound, Conflict) as exc:
        return _unusable(exc)
    idp = _choose(account, link.idp_name)
    expires = link.expires.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return _page(pages.test_start(idp.name, slug, expires), form_to=_origin(idp.sso_url))


@bp.post("/saml/<slug>/test-login/<raw>")
def start_test_login(slug: str, raw: str) -> ResponseReturnValue:
    """Use the link up and send the test's AuthnRequest, marked as a test in its pending row."""
    account = _account(slug)
    store = get_store()
    try:
        link = test_logins.peek(store, slug, raw)
    except (NotFound, Conflict) as exc:
        return _unusable(exc)
    idp = _choose(account, link.idp_name)
    sp = _sp(account)
    auth = OneLogin_Saml2_Auth(
        sso.request_data(sp, f"/saml/{slug}/login"), old_settings=sso.settings(sp, idp)
    )
    url = auth.login(return_to=f"/console/{slug}/idp")
    nonce = _login_nonce() or secrets.token_urlsafe(32)

    def work(db: Any) -> None:
        claimed = test_logins.claim_in(db, account, raw)
        sso.remember_request_in(
            db, account, idp, auth.get_last_request_id(), test_logins.marker(claimed.link_id), nonce
        )

    try:
        store.write(work)
    except (NotFound, Conflict) as exc:  # another tab used it between the peek and now
        return _unusable(exc)
    response = redirect(url)
    login_cookie(response, slug, nonce)
    return response


def is_test(account: Account, request_id: str | None) -> bool:
    """Whether a validated assertion answers a pending test login of this account."""
    with get_store().read() as db:
        return test_logins.pending_link(db, account.id, request_id) is not None


def finish(account: Account, idp: IdentityProvider, assertion: sso.Assertion) -> Response:
    """The test's answer, validated like any login: use up the request (this browser's, once),
    enter the assertion in the replay cache, compute the preview, log it; no user, no session."""
    store = get_store()
    profile = mapping.profile(assertion)
    nonce = _login_nonce()

    def work(db: Any) -> test_logins.Preview:
        relay = sso.claim(db, account, idp, assertion, nonce, test=True)
        link_id = test_logins.link_of(relay)
        assert link_id is not None  # claim(test=True) refuses anything else
        preview = test_logins.preview_in(db, store.policies, account, idp, profile)
        test_logins.record_in(db, account, idp, link_id, name_id=assertion.name_id, preview=preview)
        return preview

    preview = store.write(work)
    body = pages.test_result(
        idp=idp.name,
        name_id=assertion.name_id,
        name_id_format=assertion.name_id_format,
        session_index=assertion.session_index,
        attributes=assertion.attributes,
        preview=preview,
        back=f"/console/{account.slug}/idp",
    )
    response = _page(body)
    response.delete_cookie(LOGIN_COOKIE, path=f"/saml/{account.slug}/")
    return response
