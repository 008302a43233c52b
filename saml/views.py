"""SAML routes (DESIGN §3): metadata, SP-initiated login, ACS, single logout; /session, /logout."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, g, jsonify, redirect, request
from flask.typing import ResponseReturnValue
from itsdangerous import BadSignature, URLSafeSerializer
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.logout_request import OneLogin_Saml2_Logout_Request
from sqlalchemy import select

from bridge import accounts, idps, logins, provisioning, sessions
from bridge import sp_keys as keys
from bridge.access import access_of
from bridge.errors import NotFound
from bridge.models import Account, Grant, Group, IdentityProvider, Membership, User
from bridge.web import get_store
from saml import sso
from saml.errors import SamlRejected, page

bp = Blueprint("saml", __name__)
COOKIE = "bridge_session"


def _settings_of_app() -> Any:
    return current_app.config["BRIDGE_SETTINGS"]


def _account(slug: str) -> Account:
    with get_store().read() as db:
        try:
            return accounts.get_account(db, slug)
        except NotFound:
            raise SamlRejected("unknown_account", f"no account {slug!r}", status=404) from None


def _sp(account: Account) -> sso.Sp:
    config = _settings_of_app()
    pairs = keys.active(get_store(), account.id, account.slug, config.secret_key)
    return sso.Sp(account.slug, config.base_url, tuple(pairs))


def _idps(account: Account) -> list[IdentityProvider]:
    with get_store().read() as db:
        return idps.list_for(db, account.id)


@bp.errorhandler(SamlRejected)
def rejected(exc: SamlRejected) -> ResponseReturnValue:
    return Response(page(exc.reason, g.get("request_id")), status=exc.status, mimetype="text/html")


@bp.get("/saml/<slug>/metadata")
def get_metadata(slug: str) -> ResponseReturnValue:
    sp = _sp(_account(slug))
    return Response(sso.metadata(sp), mimetype="application/samlmetadata+xml")


@bp.get("/saml/<slug>/login")
def login(slug: str) -> ResponseReturnValue:
    account = _account(slug)
    idp = _choose(account, request.args.get("idp"))
    target = safe_next(request.args.get("next"), account)
    sp = _sp(account)
    auth = OneLogin_Saml2_Auth(
        sso.request_data(sp, f"/saml/{slug}/login", get=request.args.to_dict()),
        old_settings=sso.settings(sp, idp),
    )
    url = auth.login(return_to=target)
    sso.remember_request(get_store(), account, idp, auth.get_last_request_id(), target)
    return redirect(url)


def _choose(account: Account, name: str | None) -> IdentityProvider:
    found = _idps(account)
    if name:
        for idp in found:
            if idp.name == name:
                return idp
        raise SamlRejected("unknown_idp", f"account {account.slug!r} has no IdP {name!r}", 404)
    if len(found) == 1:
        return found[0]
    if not found:
        raise SamlRejected("unknown_idp", f"account {account.slug!r} has no IdP yet", 404)
    raise SamlRejected("unknown_idp", "this account has several IdPs: add ?idp=<name>", 400)


def safe_next(value: str | None, account: Account) -> str | None:
    """A RelayState/next that stays on our origin or one the account lists; anything else is
    refused (an open redirect would hand the session's landing page to someone else)."""
    if not value:
        return None
    if value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    parts = urlsplit(value)
    origin = f"{parts.scheme}://{parts.netloc}"
    base = urlsplit(_settings_of_app().base_url)
    allowed = {f"{base.scheme}://{base.netloc}", *account.origins}
    if parts.scheme in ("http", "https") and origin in allowed:
        return value
    raise SamlRejected("bad_relay_state", f"RelayState {value[:200]!r} is not one of our origins")


@bp.post("/saml/<slug>/acs")
@bp.post("/saml/<slug>/acs/<idp_name>")
def consume(slug: str, idp_name: str | None = None) -> ResponseReturnValue:
    account = _account(slug)
    store = get_store()
    idp: IdentityProvider | None = None
    assertion: sso.Assertion | None = None
    try:
        form = request.form.to_dict()
        safe_next(form.get("RelayState"), account)
        root = sso.inspect(sso.decode(form.get("SAMLResponse")))
        idp = _idp_for(account, idp_name, root.get("InResponseTo"))
        sp = _sp(account)
        path = request.path.removeprefix(urlsplit(sp.base_url).path)
        assertion = sso.validate(sp, idp, form, path)
        secret, target = _log_in(account, idp, assertion)
    except SamlRejected as exc:
        logins.record(
            store,
            account.id,
            ok=False,
            reason=exc.reason,
            detail=exc.detail,
            idp_id=idp.id if idp is not None else None,
            name_id=assertion.name_id if assertion is not None else None,
        )
        raise
    response = redirect(target or "/session")
    _set_cookie(response, secret, account.session_minutes)
    return response


def _idp_for(account: Account, name: str | None, in_response_to: str | None) -> IdentityProvider:
    """The IdP from the route, or from our own pending request; never from the unsigned Issuer."""
    if name:
        return _choose(account, name)
    if in_response_to:
        with get_store().read() as db:
            from bridge.models import AuthnRequest

            pending = db.get(AuthnRequest, in_response_to)
            if pending is not None and pending.account_id == account.id:
                return db.get_one(IdentityProvider, pending.idp_id)
    found = _idps(account)
    if len(found) == 1:
        return found[0]
    raise SamlRejected(
        "unknown_idp", "several IdPs: an IdP-initiated login must use /saml/<account>/acs/<idp>"
    )


def _log_in(
    account: Account, idp: IdentityProvider, assertion: sso.Assertion
) -> tuple[str, str | None]:
    """The login in one transaction: the request and assertion used up, the user found or made
    (JIT or SCIM-only) through the policy, the session opened, the login logged. Returns the
    session's secret and where to send the person."""
    store = get_store()
    profile = sso.profile(assertion)
    secret = secrets.token_urlsafe(32)

    def work(db: Any) -> str | None:
        relay = sso.claim(db, account, idp, assertion)
        linked = (
            provisioning.verified_email_owner(db, account, profile) if idp.link_by_email else None
        )
        try:
            out = provisioning.provision_in(
                db,
                store.policies,
                account.id,
                profile,
                actor=f"saml:{idp.name}",
                user_id=linked,
                create=idp.allow_jit,
            )
        except NotFound:
            raise SamlRejected(
                "user_not_provisioned", f"no user {profile.user_name!r}", 403
            ) from None
        user = db.get(User, out.user_id)
        if user.active is False:
            raise SamlRejected("user_deactivated", f"user {user.user_name!r} is deactivated", 403)
        sessions.start_in(
            db,
            secret,
            account.id,
            out.user_id,
            minutes=account.session_minutes,
            idp_id=idp.id,
            name_id=assertion.name_id,
            session_index=assertion.session_index,
        )
        logins.record_in(
            db,
            account.id,
            ok=True,
            reason="ok",
            idp_id=idp.id,
            name_id=assertion.name_id,
            user_id=out.user_id,
        )
        return relay

    relay = store.write(work)
    return secret, safe_next(relay or assertion.relay_state, account)


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="bridge-session")


def _set_cookie(response: Response, secret: str, minutes: int) -> None:
    response.set_cookie(
        COOKIE,
        _serializer().dumps(secret),
        max_age=minutes * 60,
        httponly=True,
        samesite="Lax",
        secure=_settings_of_app().base_url.startswith("https://"),
        path="/",
    )


def _cookie_secret() -> str | None:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        return str(_serializer().loads(raw))
    except BadSignature:
        return None


@bp.get("/session")
def get_session() -> ResponseReturnValue:
    """Who is signed in: user, role, environments, groups and grants (401 when nobody)."""
    secret = _cookie_secret()
    with get_store().read() as db:
        found = sessions.current(db, secret) if secret else None
        if found is None:
            return jsonify(error="Unauthorized", detail="not signed in"), 401
        login_row, user = found
        granted = access_of(db, user)
        group_grants = db.execute(
            select(Group.display_name, Grant.kind, Grant.path, Grant.level)
            .join(Grant, Grant.group_id == Group.id)
            .join(Membership, Membership.group_id == Group.id)
            .where(Membership.user_id == user.id)
            .distinct()
        ).all()
        account = db.get_one(Account, user.account_id)
        return jsonify(
            account=account.slug,
            user={
                "id": str(user.id),
                "userName": user.user_name,
                "displayName": user.display_name,
                "emails": [e.value for e in user.emails],
            },
            role=(granted["role"] or {}).get("role"),
            environments=sorted({e["environment"] for e in granted["environments"]}),
            groups=sorted({g["group"] for g in granted["groups"]}),
            grants=granted["grants"]
            + [
                {"group": name, "kind": kind, "path": path, "level": level}
                for name, kind, path, level in group_grants
            ],
            expires=login_row.expires.isoformat(timespec="seconds"),
        )


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> ResponseReturnValue:
    """End the session; with an IdP that has single logout, go on to it (SP-initiated SLO)."""
    secret = _cookie_secret()
    ended = sessions.end(get_store(), secret) if secret else None
    response: Response
    if ended is not None and ended.idp_id is not None:
        with get_store().read() as db:
            idp = db.get(IdentityProvider, ended.idp_id)
            account = db.get_one(Account, ended.account_id)
        if idp is not None and idp.slo_url:
            sp = _sp(account)
            auth = OneLogin_Saml2_Auth(
                sso.request_data(sp, "/logout"), old_settings=sso.settings(sp, idp)
            )
            response = redirect(
                auth.logout(name_id=ended.name_id, session_index=ended.session_index)
            )
            response.delete_cookie(COOKIE, path="/")
            return response
    response = Response(
        "<!doctype html><title>Signed out</title><p>You are signed out.</p>", mimetype="text/html"
    )
    response.delete_cookie(COOKIE, path="/")
    return response


@bp.get("/saml/<slug>/sls")
def single_logout(slug: str) -> ResponseReturnValue:
    """IdP-initiated LogoutRequest (validated, sessions ended, LogoutResponse sent back), or
    the IdP's LogoutResponse to ours."""
    account = _account(slug)
    idp = _choose(account, request.args.get("idp"))
    sp = _sp(account)
    data = sso.request_data(sp, f"/saml/{slug}/sls", get=request.args.to_dict())
    settings = sso.slo_settings(sp, idp)
    auth = OneLogin_Saml2_Auth(data, old_settings=settings)
    name_id = session_index = None
    if "SAMLRequest" in request.args:
        try:
            xml = OneLogin_Saml2_Logout_Request(settings, request.args["SAMLRequest"]).get_xml()
            name_id = OneLogin_Saml2_Logout_Request.get_nameid(xml)
            indexes = OneLogin_Saml2_Logout_Request.get_session_indexes(xml)
            session_index = indexes[0] if indexes else None
        except Exception:  # malformed requests are refused below by process_slo's checks
            name_id = None
    try:
        url = auth.process_slo(keep_local_session=True)
    except Exception as exc:
        raise SamlRejected("bad_logout", f"{type(exc).__name__}: {exc}") from None
    if auth.get_errors():
        raise SamlRejected(
            "bad_logout", auth.get_last_error_reason() or ", ".join(auth.get_errors())
        )
    if name_id:
        sessions.end_for_name_id(get_store(), account.id, idp.id, name_id, session_index)
    if url:
        return redirect(url)
    return Response(
        "<!doctype html><title>Signed out</title><p>You are signed out.</p>", mimetype="text/html"
    )
