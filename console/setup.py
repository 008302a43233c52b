"""The self-serve set-up page a one-time link opens: the SP values in Okta's, Entra's and a
generic IdP's words, connect the IdP from its metadata, get a SCIM token (shown once). It can
do only what its link names (bridge.setup_links); its forms are bound to the link's token."""

from __future__ import annotations

from flask import current_app, render_template, request
from flask.typing import ResponseReturnValue

from bridge import idps, sessions, setup_links, sp_keys
from bridge.accounts import get_account
from bridge.errors import InvalidInput
from bridge.settings import Settings
from bridge.web import get_store
from console.base import CSRF_FIELD, CsrfRefused, bp, notice


def _settings() -> Settings:
    settings: Settings = current_app.config["BRIDGE_SETTINGS"]
    return settings


def _page(
    slug: str, token: str, *, after_step: bool = False, **extra: object
) -> ResponseReturnValue:
    store = get_store()
    if after_step:
        state = setup_links.progress(store, slug, token)
    else:
        state = setup_links.state(store, slug, token)
    with store.read() as db:
        account = get_account(db, slug)
        connected = [idp.name for idp in idps.list_for(db, account.id)]
    settings = _settings()
    keys = sp_keys.active(store, account.id, slug, settings.secret_key or "")
    return render_template(
        "console/setup.html",
        account=account,
        state=state,
        connected=connected,
        sp=idps.sp_values(settings.base_url, slug),
        sp_cert=keys[0].cert_pem if keys else "",
        scim_url=f"{settings.base_url}/scim/v2",
        csrf=sessions.csrf_token(token),
        **extra,
    )


def _check(token: str) -> None:
    if not sessions.csrf_ok(token, request.form.get(CSRF_FIELD)):
        raise CsrfRefused()


@bp.get("/<slug>/setup/<token>", endpoint="setup")
def setup_page(slug: str, token: str) -> ResponseReturnValue:
    return _page(slug, token)


@bp.post("/<slug>/setup/<token>/idp")
def setup_idp(slug: str, token: str) -> ResponseReturnValue:
    """Connect the IdP from an uploaded metadata file or a metadata URL (https, public)."""
    _check(token)
    setup_links.require(get_store(), slug, token, "sso")
    upload = request.files.get("metadata_file")
    url = request.form.get("metadata_url", "").strip()
    if upload is not None and upload.filename:
        xml, url = upload.read().decode("utf-8", errors="replace"), ""
    elif url:
        xml = idps.fetch(url, allow_private=_settings().allow_private_metadata)
    else:
        raise InvalidInput("give the IdP's metadata URL or upload its metadata file")
    name = request.form.get("name", "").strip() or None
    idp = setup_links.connect_idp(
        get_store(), slug, token, xml, name=name, metadata_url=url or None
    )
    notice("ok", f"IdP {idp.name} connected.")
    return _page(slug, token, after_step=True)


@bp.post("/<slug>/setup/<token>/scim")
def setup_scim(slug: str, token: str) -> ResponseReturnValue:
    """Issue the link's one SCIM token and show it on this response only."""
    _check(token)
    label = request.form.get("label", "").strip()[:200] or "setup"
    issued = setup_links.scim_token(get_store(), slug, token, label=label)
    notice("ok", "SCIM token issued. Copy it now: it is shown only once.")
    return _page(slug, token, after_step=True, issued=issued)
