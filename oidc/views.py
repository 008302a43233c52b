"""OIDC provider routes (DESIGN §3): discovery, JWKS, authorize, token, userinfo.

/authorize finds the account from the client, the person from the bridge's login session of that
account, and when nobody is signed in sends the browser through the account's SAML login with
`next` pointing back here, so the code is issued when the login comes back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any
from urllib.parse import urlencode

from authlib.integrations.flask_oauth2 import current_token
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidRequestError
from flask import Blueprint, Response, current_app, jsonify, redirect, request
from flask.typing import ResponseReturnValue

from bridge import claims, clients, idp_domains, idps, sessions, signing_keys
from bridge.models import utcnow
from bridge.web import get_store
from oidc.server import SCOPES, Person, make_server
from saml.sso import FORCE_AUTHN_SKEW

bp = Blueprint("oidc", __name__)


def init_views(app: Any) -> None:
    server, protector = make_server(app)
    app.extensions["oidc.server"] = server
    app.extensions["oidc.protector"] = protector
    app.register_blueprint(bp)


def _server() -> Any:
    return current_app.extensions["oidc.server"]


def _issuer() -> str:
    return str(current_app.config["BRIDGE_SETTINGS"].base_url)


def _page(title: str, body: str, status: int) -> Response:
    html = f"<!doctype html><meta charset=utf-8><title>{escape(title)}</title>{body}"
    return Response(html, status=status, mimetype="text/html")


@bp.get("/.well-known/openid-configuration")
def get_discovery() -> ResponseReturnValue:
    """OpenID Connect Discovery 1.0 §3: what a stock client library configures itself from."""
    base = _issuer()
    return jsonify(
        issuer=base,
        authorization_endpoint=f"{base}/oidc/authorize",
        token_endpoint=f"{base}/oidc/token",
        userinfo_endpoint=f"{base}/oidc/userinfo",
        jwks_uri=f"{base}/oidc/jwks.json",
        response_types_supported=["code"],
        response_modes_supported=["query"],
        grant_types_supported=["authorization_code"],
        subject_types_supported=["public"],
        id_token_signing_alg_values_supported=[signing_keys.ALG],
        scopes_supported=list(SCOPES),
        token_endpoint_auth_methods_supported=[
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        code_challenge_methods_supported=["S256"],
        claims_supported=[
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "sid",
            "name",
            "preferred_username",
            "email",
            "account",
            "role",
            "environments",
            "groups",
        ],
        backchannel_logout_supported=True,
        backchannel_logout_session_supported=True,
    )


@bp.get("/oidc/jwks.json")
def get_jwks() -> ResponseReturnValue:
    signing_keys.current(get_store(), current_app.config["SECRET_KEY"])  # never an empty set
    with get_store().read() as db:
        body = signing_keys.jwks(db)
    response = jsonify(body)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/oidc/authorize")
def authorize() -> ResponseReturnValue:
    """Validate the request (Authlib), then sign the person in through SAML, then the code.

    OIDC Core §3.1.2.1: `prompt=login` and `max_age` make an older bridge session count as none
    (the SAML login then asks the IdP for ForceAuthn); `prompt=none` never shows a page: without
    a session fresh enough it answers `login_required` to the client (Authlib raises it)."""
    with get_store().read() as db:
        info = clients.find(db, request.args.get("client_id", ""))
    if info is None:  # RFC 6749 §4.1.2.1: never redirect to an unverified client
        return _page("Unknown application", "<p>This application is not registered.</p>", 400)
    person = _signed_in(info)
    fresh = _fresh_since()
    stale = person is not None and isinstance(fresh, datetime) and person.auth_time < fresh
    server = _server()
    try:
        grant = server.get_consent_grant(end_user=None if stale else person)
        if fresh == "invalid":
            raise InvalidRequestError(
                "max_age must be a whole number of seconds",
                redirect_uri=grant.redirect_uri,
                state=request.args.get("state"),
            )
    except OAuth2Error as error:
        if error.redirect_uri is None or error.error == "invalid_client":
            detail = escape(error.description or error.error)
            return _page("Bad sign-in request", f"<p>{detail}</p>", 400)
        return server.handle_error_response(None, error)
    if person is None or stale:
        return _to_login(info, fresh if isinstance(fresh, datetime) else None)
    return server.create_authorization_response(grant=grant, grant_user=person)


REAUTH = "auth_after"  # ours: a login must be newer than this (Unix ms) on the way back


def _fresh_since() -> datetime | str | None:
    """How recent the person's login must be: now for prompt=login, now - max_age, or the time
    the login we sent them to began (`auth_after`); "invalid" for a max_age that is not one."""
    args, now = request.args, utcnow()
    if args.get(REAUTH, "").isdigit() and len(args[REAUTH]) <= 15:
        # never later than now: a login from the future could not be had (a redirect loop);
        # and the forced login's AuthnInstant may trail its request by the IdP clock drift the
        # ForceAuthn check allows (saml.sso.FORCE_AUTHN_SKEW): allowed here too, or a loop
        millis = min(int(args[REAUTH]), int(now.timestamp() * 1000))
        return datetime.fromtimestamp(millis / 1000, UTC) - FORCE_AUTHN_SKEW
    if "login" in args.get("prompt", "").split():
        return now
    if "max_age" not in args:
        return None
    raw = args["max_age"]
    if not raw.isdigit() or len(raw) > 10:
        return "invalid"
    return now - timedelta(seconds=int(raw))


def _signed_in(info: clients.ClientInfo) -> Person | None:
    """The person signed in to the bridge in the client's account (another account's session
    does not count: accounts never see each other's people)."""
    secret = sessions.cookie_secret(
        current_app.config["SECRET_KEY"], request.cookies.get(sessions.COOKIE)
    )
    if secret is None:
        return None
    with get_store().read() as db:
        found = sessions.current(db, secret)
    if found is None:
        return None
    login, user = found
    if login.account_id != info.account_id:
        return None
    return Person(user.id, login.id, sessions.authenticated_at(login))


def _to_login(info: clients.ClientInfo, fresh: datetime | None) -> ResponseReturnValue:
    """Send the browser to the account's SAML login: `idp=` if it names one of the account's
    IdPs, else the only enabled IdP, else the one whose declared e-mail domain is the
    `login_hint`'s (bridge.idp_domains, this account's only), else a page to choose. With
    `fresh` (prompt=login, max_age) the IdP is asked to authenticate again (SAML ForceAuthn) and
    the way back asks for a login newer than `fresh` instead (no loop)."""
    back = _back(fresh)
    with get_store().read() as db:
        found = [idp for idp in idps.list_for(db, info.account_id) if not idp.disabled]
        hinted = idp_domains.route(db, info.account_id, request.args.get("login_hint"))
    if not found:
        body = "<p>This account has no identity provider (or none enabled).</p>"
        return _page("Sign-in not set up", body, 409)
    names = [idp.name for idp in found]
    chosen = request.args.get("idp")
    if chosen not in names:
        chosen = names[0] if len(names) == 1 else hinted.name if hinted is not None else None
    force = {"force": "1"} if fresh is not None else {}
    if chosen is not None:
        query = urlencode({"idp": chosen, "next": back, **force})
        return redirect(f"/saml/{info.account}/login?{query}")
    links = "".join(
        f"<li><a href='/saml/{escape(info.account)}/login?"
        f"{escape(urlencode({'idp': name, 'next': back, **force}))}'>{escape(name)}</a></li>"
        for name in names
    )
    return _page("Choose how to sign in", f"<h1>Sign in with</h1><ul>{links}</ul>", 200)


def _back(fresh: datetime | None) -> str:
    """This request's URL to come back to after the login; with `fresh`, prompt=login and
    max_age give way to `auth_after` (the login must be newer than `fresh`)."""
    if fresh is None:
        return request.full_path if request.query_string else request.path
    args = [(k, v) for k, v in request.args.items(multi=True) if k not in ("max_age", REAUTH)]
    args = [
        (k, " ".join(p for p in v.split() if p != "login")) if k == "prompt" else (k, v)
        for k, v in args
    ]
    args = [(k, v) for k, v in args if k != "prompt" or v]
    args.append((REAUTH, str(int(fresh.timestamp() * 1000))))
    return f"{request.path}?{urlencode(args)}"


@bp.post("/oidc/token")
def issue_token() -> ResponseReturnValue:
    return _server().create_token_response()


@bp.route("/oidc/userinfo", methods=["GET", "POST"])
def get_userinfo() -> ResponseReturnValue:
    """OIDC Core §5.3: the ID token's claims and, here only, the person's grants."""
    protector = current_app.extensions["oidc.protector"]

    @protector("openid")
    def answer() -> ResponseReturnValue:
        token = current_token
        with get_store().read() as db:
            found = claims.identity(db, token.info.user_id)
            if found is None:
                return jsonify(error="invalid_token"), 401
            found["grants"] = claims.grants(db, token.info.user_id)
        return jsonify(found)

    return answer()  # type: ignore[no-any-return]
