"""SAML routes (DESIGN §3): metadata, SP-initiated login, ACS, single logout; /session, /logout."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, g, jsonify, redirect, request
from flask.typing import ResponseReturnValue
from itsdangerous import BadSignature, URLSafeSerializer
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from sqlalchemy import Table, and_, bindparam, select

from bridge import browser, driver, idps, logins, provisioning, redirects, sessions, test_logins
from bridge import sp_keys as keys
from bridge.access import access_of
from bridge.errors import InvalidInput, NotFound
from bridge.models import (
    Account,
    AuthnRequest,
    Environment,
    Grant,
    Group,
    IdentityProvider,
    LoginSession,
    Membership,
    User,
    read_only,
)
from bridge.web import get_store, standalone_reads
from saml import mapping, pages, slo, sso
from saml.errors import SamlRejected, page

log = logging.getLogger(__name__)
bp = Blueprint("saml", __name__)
# Binds a pending AuthnRequest to the browser that started it (login CSRF, issue 9 item 3).
LOGIN_COOKIE = "bridge_login"


def _settings_of_app() -> Any:
    return current_app.config["BRIDGE_SETTINGS"]


# The account with its IdPs and its SP keys, in one statement: every SAML route needs the three
# (an account has a few IdPs and one or two keys, so the product of the two is small). Core, on
# the tables: the objects are made from the row (models.read_only), at half the CPU of the ORM's
# loading. An IdP's metadata document (tens of KB for some IdPs) is kept for refreshes, never
# read by a SAML route: not read (it reads None here).
_ACCOUNTS: Table = Account.__table__  # type: ignore[assignment]
_IDPS: Table = IdentityProvider.__table__  # type: ignore[assignment]
_IDP_KEYS = tuple(c.key for c in _IDPS.c if c.key != "metadata_xml")
_ACCOUNT_STATE = (
    select(
        *_ACCOUNTS.c,
        *(_IDPS.c[key].label(f"idp_{key}") for key in _IDP_KEYS),
        *keys.ACTIVE_COLUMNS,
    )
    .outerjoin(_IDPS, _IDPS.c.account_id == _ACCOUNTS.c.id)
    .outerjoin(
        keys.SP_KEYS,
        and_(keys.SP_KEYS.c.account_id == _ACCOUNTS.c.id, keys.SP_KEYS.c.retired.is_(None)),
    )
    .where(_ACCOUNTS.c.slug == bindparam("slug"))
    .order_by(_IDPS.c.name, *keys.ACTIVE_ORDER)
)
# The same, with the account's pending AuthnRequest a Response names (InResponseTo, unsigned:
# judged later, in sso.claim), if there is one: /acs reads the two in one round trip.
_AUTHN_REQUESTS: Table = AuthnRequest.__table__  # type: ignore[assignment]
_ACCOUNT_STATE_PENDING = _ACCOUNT_STATE.add_columns(
    *(column.label(f"pending_{column.key}") for column in _AUTHN_REQUESTS.c)
).outerjoin(
    _AUTHN_REQUESTS,
    and_(
        _AUTHN_REQUESTS.c.id == bindparam("request_id"),
        _AUTHN_REQUESTS.c.account_id == _ACCOUNTS.c.id,
    ),
)


@dataclass(frozen=True)
class _State:
    """What `_account` read of the account's IdPs and SP keys, for this request only."""

    account_id: int
    idps: tuple[IdentityProvider, ...]
    keys: tuple[Any, ...]


def _account(slug: str) -> Account:
    """The account of the route, with its IdPs and SP keys read in the same statement (kept on
    `g` for `_idps` and `_sp`)."""
    return _account_and_pending(slug, None)[0]


def _account_and_pending(
    slug: str, in_response_to: str | None
) -> tuple[Account, AuthnRequest | None]:
    """`_account`, and the account's pending AuthnRequest of that ID (None: there is none, or
    no ID), read in the same statement."""
    statement, params = _ACCOUNT_STATE, {"slug": slug}
    if in_response_to:
        statement, params = _ACCOUNT_STATE_PENDING, {**params, "request_id": in_response_to}
    with get_store().connection() as conn:
        rows = driver.rows(conn, statement, params)
    if not rows:
        raise SamlRejected("unknown_account", f"no account {slug!r}", status=404)
    first = rows[0]._mapping
    pending = None
    if in_response_to and first["pending_id"] is not None:  # Core: half the ORM's db.get
        pending = read_only(AuthnRequest, first, prefix="pending_")
    account = read_only(Account, first)
    found: dict[int, IdentityProvider] = {}  # in name order
    for row in rows:
        idp_id = row._mapping["idp_id"]
        if idp_id is not None and idp_id not in found:
            found[idp_id] = read_only(IdentityProvider, row._mapping, prefix="idp_")
    pairs = {row.key_id: row for row in rows if row.key_id is not None}  # newest first
    g.saml_state = _State(account.id, tuple(found.values()), tuple(pairs.values()))
    g.saml_account_id = account.id  # a refusal from here on goes into this account's login log
    return account, pending


def _state(account: Account) -> _State | None:
    state: _State | None = g.get("saml_state")
    return state if state is not None and state.account_id == account.id else None


def _sp(account: Account) -> sso.Sp:
    config = _settings_of_app()
    state = _state(account)
    if state is not None and state.keys:
        pairs = keys.unsealed(state.keys, config.secret_key)
    else:  # none yet: made on first use
        pairs = keys.active(get_store(), account.id, account.slug, config.secret_key)
    return sso.Sp(account.slug, config.base_url, tuple(pairs))


def _idps(account: Account) -> list[IdentityProvider]:
    state = _state(account)
    if state is not None:
        return list(state.idps)
    with get_store().read() as db:
        return idps.list_for(db, account.id)


@bp.errorhandler(SamlRejected)
def rejected(exc: SamlRejected) -> ResponseReturnValue:
    in_log = record_refusal(exc.reason, exc.detail, idp_id=exc.idp_id, name_id=exc.name_id)
    body = page(exc.reason, g.get("request_id"), in_login_log=in_log)
    return Response(body, status=exc.status, mimetype="text/html")


def record_app_refusal(reason: str, detail: str) -> bool:
    """A refusal raised before our views ran (e.g. a GET on /acs): the account comes from the
    path, if it names one."""
    parts = request.path.split("/")
    if len(parts) > 2 and g.get("saml_account_id") is None:
        with get_store().read() as db:
            found = db.scalar(select(Account.id).where(Account.slug == parts[2]))
        if found is not None:
            g.saml_account_id = found
    return record_refusal(reason, detail)


def record_refusal(
    reason: str, detail: str, *, idp_id: int | None = None, name_id: str | None = None
) -> bool:
    """Write a refusal where its page says to look: the account's login log when the account is
    known (True), and always a JSON log line with the reason and the page's reference."""
    reference = f"{reason} / {g.get('request_id') or '-'}"
    account_id = g.get("saml_account_id")
    log.warning(
        "SAML refusal: %s",
        reason,
        extra={"reason": reason, "reference": reference, "detail": detail, "path": request.path},
    )
    if account_id is None:
        return False
    logins.record(
        get_store(),
        account_id,
        ok=False,
        reason=reason,
        detail=f"{detail} [ref {reference}]",
        idp_id=idp_id,
        name_id=name_id,
    )
    return True


@bp.get("/saml/<slug>/metadata")
@bp.get("/saml/<slug>/metadata/<idp_name>")
@standalone_reads
def get_metadata(slug: str, idp_name: str | None = None) -> ResponseReturnValue:
    """The SP metadata: account-wide, or an IdP's own (its ACS and SLS, its signing rule)."""
    account = _account(slug)
    idp = _choose(account, idp_name) if idp_name else None
    return Response(sso.metadata(_sp(account), idp), mimetype="application/samlmetadata+xml")


@bp.get("/saml/<slug>/login")
@standalone_reads
def login(slug: str) -> ResponseReturnValue:
    account = _account(slug)
    idp = _choose(account, request.args.get("idp"))
    target = _landing(safe_next(request.args.get("next"), account))
    sp = _sp(account)
    auth = OneLogin_Saml2_Auth(
        sso.request_data(sp, f"/saml/{slug}/login", get=request.args.to_dict()),
        old_settings=sso.settings(sp, idp),
    )
    # SAML Core §3.4.1: ForceAuthn asks the IdP to authenticate the person again, not to
    # reuse its own session (OIDC prompt=login / max_age at /oidc/authorize)
    force = request.args.get("force") == "1"
    url = auth.login(return_to=target, force_authn=force)
    nonce = _login_nonce() or secrets.token_urlsafe(32)
    sso.remember_request(
        get_store(), account, idp, auth.get_last_request_id(), target, nonce, force_authn=force
    )
    response = redirect(url)
    login_cookie(response, slug, nonce)
    return response


def login_cookie(response: Response, slug: str, nonce: str) -> None:
    """Bind the pending login to this browser (its answer is accepted from it only)."""
    secure = _settings_of_app().base_url.startswith("https://")
    response.set_cookie(
        LOGIN_COOKIE,
        _serializer(LOGIN_COOKIE).dumps(nonce),
        max_age=int(sso.REQUEST_TTL.total_seconds()),
        httponly=True,
        # the IdP's answer is a cross-site POST: only SameSite=None cookies ride on it, and
        # browsers take those over https only (on plain http, the dev set-up, IdP and SP share
        # the site and Lax suffices)
        samesite="None" if secure else "Lax",
        secure=secure,
        path=f"/saml/{slug}/",
    )


def _login_nonce() -> str | None:
    raw = request.cookies.get(LOGIN_COOKIE)
    if not raw:
        return None
    try:
        return str(_serializer(LOGIN_COOKIE).loads(raw))
    except BadSignature:
        return None


def _choose(account: Account, name: str | None) -> IdentityProvider:
    found = _idps(account)
    if name:
        for idp in found:
            if idp.name == name:
                return _enabled(idp)
        raise SamlRejected("unknown_idp", f"account {account.slug!r} has no IdP {name!r}", 404)
    if len(found) == 1:
        return _enabled(found[0])
    if not found:
        raise SamlRejected("unknown_idp", f"account {account.slug!r} has no IdP yet", 404)
    raise SamlRejected("unknown_idp", "this account has several IdPs: add ?idp=<name>", 400)


def _enabled(idp: IdentityProvider) -> IdentityProvider:
    if idp.disabled:
        raise SamlRejected("idp_disabled", f"IdP {idp.name!r} is disabled", 403)
    return idp


def safe_next(value: str | None, account: Account) -> str | None:
    """A RelayState/next that is a plain local path or on one of our origins, read as a browser
    reads it (bridge.redirects); anything else is refused: an open redirect would hand the
    session's landing page to someone else."""
    if not value:
        return None
    allowed = [_settings_of_app().base_url, *account.origins]
    try:
        return redirects.local_target(value, allowed)
    except redirects.UnsafeRedirect as exc:
        raise SamlRejected(
            "bad_relay_state", f"RelayState {value[:200]!r} refused: {exc}"
        ) from None


LANDING = "/session"


def _landing(target: str | None) -> str:
    """Where a login ends: `next`, or the signed-in page; never a login URL (python3-saml's
    default RelayState is the login URL itself, which loops with an IdP that has a session)."""
    if not target:
        return LANDING
    path = urlsplit(target).path
    if path.startswith("/saml/") and path.rstrip("/").endswith("/login"):
        return LANDING
    return target


@bp.post("/saml/<slug>/acs")
@bp.post("/saml/<slug>/acs/<idp_name>")
@standalone_reads
def consume(slug: str, idp_name: str | None = None) -> ResponseReturnValue:
    from saml import testlogin

    form = request.form.to_dict()
    # Our pending request the (unsigned) Response names is read with the account, once: it
    # labels a refusal as a test login's and names the IdP; the signed InResponseTo is judged
    # below and in claim. So the Response is decoded first; a refusal of it is raised where it
    # was before, after the account's and the RelayState's.
    unsigned: str | None = None
    undecodable: SamlRejected | None = None
    try:
        unsigned = sso.inspect(sso.decode(form.get("SAMLResponse"))).get("InResponseTo")
    except SamlRejected as exc:
        undecodable = exc
    account, pending = _account_and_pending(slug, unsigned)
    idp: IdentityProvider | None = None
    assertion: sso.Assertion | None = None
    test = False
    try:
        safe_next(form.get("RelayState"), account)
        if undecodable is not None:
            raise undecodable
        test = _is_test(pending)
        idp = _idp_for(account, idp_name, pending)
        sp = _sp(account)
        path = request.path.removeprefix(urlsplit(sp.base_url).path)
        acs_url = sp.acs_url_for(idp.name) if idp_name else sp.acs_url
        assertion = sso.validate(sp, idp, form, path, acs_url)
        signed = assertion.in_response_to
        if test if signed == unsigned else testlogin.is_test(account, signed):
            return testlogin.finish(account, idp, assertion)
        minutes = account.session_minutes
        secret, target = _log_in(account, idp, assertion, _login_nonce())
    except SamlRejected as exc:  # recorded by `rejected`, with what is known of the login
        exc.idp_id = idp.id if idp is not None else None
        exc.name_id = assertion.name_id if assertion is not None else None
        if test:
            exc.detail = f"{exc.detail} (test login)"
        raise
    response = redirect(target)
    _set_cookie(response, secret, minutes)
    response.delete_cookie(LOGIN_COOKIE, path=f"/saml/{slug}/")
    return response


def _is_test(pending: AuthnRequest | None) -> bool:
    """Whether a pending request is a test login's (bridge.test_logins)."""
    return pending is not None and test_logins.link_of(pending.relay_state) is not None


def _idp_for(account: Account, name: str | None, pending: AuthnRequest | None) -> IdentityProvider:
    """The IdP from the route, or from our own pending request; never from the unsigned Issuer."""
    if name:
        return _choose(account, name)
    if pending is not None:
        for idp in _idps(account):
            if idp.id == pending.idp_id:
                return _enabled(idp)
        with get_store().read() as db:
            return _enabled(db.get_one(IdentityProvider, pending.idp_id))
    found = _idps(account)
    if len(found) == 1:
        return _enabled(found[0])
    raise SamlRejected(
        "unknown_idp", "several IdPs: an IdP-initiated login must use /saml/<account>/acs/<idp>"
    )


def _log_in(
    account: Account, idp: IdentityProvider, assertion: sso.Assertion, nonce: str | None
) -> tuple[str, str]:
    """The login in one transaction: the request and assertion used up, the user found or made
    (JIT or SCIM-only) through the policy, the session opened, the login logged. Returns the
    session's secret and where to send the person."""
    store = get_store()
    profile = mapping.profile(assertion)
    secret = secrets.token_urlsafe(32)
    idp_id, idp_name, minutes = idp.id, idp.name, account.session_minutes

    def work(db: Any) -> str:
        relay = sso.claim(db, account, idp, assertion, nonce)
        # a returning user whose login would change nothing: no provisioning at all
        user_id, read = (
            (None, None)
            if idp.link_by_email
            else provisioning.unchanged_login(db, store.policies, account, profile)
        )
        if user_id is None:
            user_id = _provision(db, account, idp, profile, read)
        sessions.start_in(
            db,
            secret,
            account.id,
            user_id,
            minutes=minutes,
            idp_id=idp_id,
            name_id=assertion.subject,
            session_index=assertion.session_index,
            authenticated=assertion.authn_instant,
        )
        logins.record_in(
            db,
            account.id,
            ok=True,
            reason="ok",
            idp_id=idp_id,
            idp_name=idp_name,
            name_id=assertion.name_id,
            user_id=user_id,
        )
        # judged before the login commits: a refused target leaves nothing written
        return _landing(
            safe_next(relay if assertion.in_response_to else assertion.relay_state, account)
        )

    return secret, store.write(work)


def _provision(
    db: Any,
    account: Account,
    idp: IdentityProvider,
    profile: Any,
    read: provisioning.AccountRead | None = None,
) -> Any:
    """The login's user through the one write path (JIT, or SCIM-only: must exist), active;
    `read`: the account as the returning-user check found it (provisioning.AccountRead)."""
    linked = provisioning.verified_email_owner(db, account, profile) if idp.link_by_email else None
    try:
        out = provisioning.provision_in(
            db,
            get_store().policies,
            account.id,
            profile,
            actor=f"saml:{idp.name}",
            user_id=linked,
            create=idp.allow_jit,
            account_read=read,
        )
    except NotFound:
        raise SamlRejected("user_not_provisioned", f"no user {profile.user_name!r}", 403) from None
    except InvalidInput as exc:  # e.g. a NameID RFC 8265 refuses (bridge.identifiers)
        raise SamlRejected("invalid_identifier", exc.detail, 403) from None
    if not out.active:
        name = out.user.user_name if out.user is not None else profile.user_name
        raise SamlRejected("user_deactivated", f"user {name!r} is deactivated", 403)
    provisioning.remember_login(db, account, profile, out)
    return out.user_id


def _serializer(salt: str) -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=salt)


def _set_cookie(response: Response, secret: str, minutes: int) -> None:
    secure = _settings_of_app().base_url.startswith("https://")
    browser.set_session_cookie(response, secret, minutes, secure=secure)


def _cookie_secret() -> str | None:
    return browser.session_secret()


def _wants_html() -> bool:
    """Browsers ask for HTML; programs (`*/*`, JSON, or no Accept at all) get JSON."""
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html"


def _signed_in(db: Any) -> tuple[str, LoginSession, User] | None:
    secret = _cookie_secret()
    found = sessions.current(db, secret) if secret else None
    return None if found is None or secret is None else (secret, *found)


@bp.get("/session")
def get_session() -> ResponseReturnValue:
    """Who is signed in: user, role, environments, groups and grants with their provenance;
    an HTML page for browsers, JSON for programs (401 when nobody)."""
    with get_store().read() as db:
        found = _signed_in(db)
        if found is None:
            if _wants_html():
                text = "Sign in from your application's sign-in page."
                return _html(pages.message("You are not signed in", text), 401)
            return jsonify(error="Unauthorized", detail="not signed in"), 401
        secret, login_row, user = found
        granted = access_of(db, user)
        group_grants = db.execute(
            select(
                Group.display_name,
                Environment.name,
                Grant.kind,
                Grant.path,
                Grant.level,
                Grant.provenance,
            )
            .join(Grant, Grant.group_id == Group.id)
            .join(Environment, Environment.id == Grant.environment_id)
            .join(Membership, Membership.group_id == Group.id)
            .where(Membership.user_id == user.id)
            .distinct()
        ).all()
        account = db.get_one(Account, user.account_id)
        emails = [e.value for e in user.emails]
    via_groups = [
        {"group": g, "environment": e, "kind": k, "path": p, "level": lv, "provenance": pr}
        for g, e, k, p, lv, pr in sorted(group_grants)
    ]
    token = sessions.csrf_token(secret)
    doc = {
        "account": account.slug,
        "user": {
            "id": str(user.id),
            "userName": user.user_name,
            "displayName": user.display_name,
            "emails": emails,
        },
        "role": (granted["role"] or {}).get("role"),
        "environments": sorted({e["environment"] for e in granted["environments"]}),
        "groups": sorted({g["group"] for g in granted["groups"]}),
        "grants": granted["grants"] + via_groups,
        "expires": login_row.expires.isoformat(timespec="seconds"),
        "csrf_token": token,
    }
    if _wants_html():
        detail = {**granted, "grants": granted["grants"] + via_groups}
        return _html(pages.signed_in(doc, detail, token))
    return jsonify(doc)


def _html(body: str, status: int = 200) -> Response:
    response = Response(body, status=status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"  # pages about a session are never cached
    return response


@bp.get("/logout")
def confirm_logout() -> ResponseReturnValue:
    """A question and a sign-out button: a GET (a link, an image) never ends a session."""
    with get_store().read() as db:
        found = _signed_in(db)
    if found is None:
        return _html(pages.message("You are not signed in", "There is nothing to sign out of."))
    secret, _login, user = found
    return _html(pages.confirm_sign_out(user.user_name, sessions.csrf_token(secret)))


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """End the session when the form's CSRF token matches it; with an IdP that has single
    logout, go on to it (SP-initiated SLO)."""
    secret = _cookie_secret()
    if secret is not None:
        with get_store().read() as db:
            live = sessions.current(db, secret) is not None
        given = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
        if live and not sessions.csrf_ok(secret, given):
            text = (
                "This sign-out did not come from a page of this site, so you are still signed "
                "in. To sign out, open /logout and press the button."
            )
            return _html(pages.message("Sign-out refused", text), 403)
    ended = sessions.end(get_store(), secret) if secret else None
    response: Response
    if ended is not None and ended.idp_id is not None:
        with get_store().read() as db:
            idp = db.get(IdentityProvider, ended.idp_id)
            account = db.get_one(Account, ended.account_id)
        if idp is not None and idp.slo_url:
            url, request_id = slo.logout_redirect(
                _sp(account), idp, sessions.name_id_of(ended), ended.session_index
            )
            sessions.await_logout(get_store(), ended.id, request_id)
            response = redirect(url)
            browser.clear_session_cookie(response)
            return response
    response = _html(pages.message("Signed out", "You are signed out."))
    browser.clear_session_cookie(response)
    return response


@bp.get("/saml/<slug>/sls")
@bp.get("/saml/<slug>/sls/<idp_name>")
def single_logout(slug: str, idp_name: str | None = None) -> ResponseReturnValue:
    """IdP-initiated LogoutRequest (validated, sessions ended, LogoutResponse sent back), or
    the IdP's LogoutResponse to ours. The IdP comes from the route (`/sls/<idp>`), from the
    LogoutRequest of ours the response answers, or is the account's only one."""
    account = _account(slug)
    sp = _sp(account)
    message = slo.logout_message(request.args)
    idp = _slo_idp(account, idp_name or request.args.get("idp"), message)
    sls_url = sp.sls_url_for(idp_name) if idp_name else sp.sls_url
    if message.destination is not None and message.destination != sls_url:
        raise SamlRejected("wrong_destination", f"Destination is not {sls_url!r}")
    path = request.path.removeprefix(urlsplit(sp.base_url).path)
    data = sso.request_data(sp, path, get=request.args.to_dict())
    auth = OneLogin_Saml2_Auth(data, old_settings=sso.slo_settings(sp, idp))
    name_id, session_index = message.name_id, message.session_index
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
    # python3-saml answers an IdP without a logout endpoint by redirecting to the RelayState
    # itself (Auth.redirect_to): never follow that, the RelayState is the IdP's, not a target
    if url and idp.slo_url and url.startswith(idp.slo_url):
        return redirect(url)
    return _html(pages.message("Signed out", "You are signed out."))


def _slo_idp(account: Account, name: str | None, message: slo.LogoutMessage) -> IdentityProvider:
    """The IdP of a logout message: named by the route, or the one our LogoutRequest went to
    (never the unsigned Issuer)."""
    if name:
        return _idp_named(account, name)
    if message.in_response_to:
        with get_store().read() as db:
            idp_id = sessions.idp_awaiting(db, account.id, message.in_response_to)
            idp = db.get(IdentityProvider, idp_id) if idp_id is not None else None
        if idp is not None:
            return idp
    found = _idps(account)
    if len(found) == 1:
        return found[0]
    raise SamlRejected(
        "unknown_idp", "several IdPs: logout messages must use /saml/<account>/sls/<idp>"
    )


def _idp_named(account: Account, name: str) -> IdentityProvider:
    """An IdP by name, disabled or not (a disabled IdP's logouts are still answered)."""
    for idp in _idps(account):
        if idp.name == name:
            return idp
    raise SamlRejected("unknown_idp", f"account {account.slug!r} has no IdP {name!r}", 404)
