"""IdP connection and SCIM: what an IT admin sets up once (metadata, SP values, tokens)."""

from __future__ import annotations

from flask import current_app, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from bridge import accounts, idp_domains, idps, scim_log, sp_keys, test_logins
from bridge.errors import InvalidInput
from bridge.settings import Settings
from bridge.web import get_store
from console.base import bp, notice, page_args


def _settings() -> Settings:
    settings: Settings = current_app.config["BRIDGE_SETTINGS"]
    return settings


@bp.get("/<slug>/idp", endpoint="idps")
def idps_page(slug: str) -> ResponseReturnValue:
    """The account's IdPs, and the SP values to copy, in Okta's and Entra's own words."""
    store = get_store()
    with store.read() as db:
        found = idps.list_for(db, g.admin.account_id)
        listed = [(idp, idps.certificate_expiries(idp)) for idp in found]
        domains = {idp.name: idp_domains.of_idp(db, idp.id) for idp in found}
        verified = sorted(accounts.get_account(db, slug).verified_domains)
    settings = _settings()
    keys = sp_keys.active(store, g.admin.account_id, slug, settings.secret_key or "")
    return render_template(
        "console/idps.html",
        idps=listed,
        sp=idps.sp_values(settings.base_url, slug),
        sp_cert=keys[0].cert_pem if keys else "",
        domains=domains,
        verified=verified,
        form=request.args,
    )


def _domain_list(field: str) -> list[str]:
    """Domains typed into a form field, separated by spaces, commas or new lines."""
    text = request.form.get(field, "")
    return [d for d in text.replace(",", " ").split() if d]


@bp.post("/<slug>/idp/<name>/settings")
def idp_settings(slug: str, name: str) -> ResponseReturnValue:
    """An IdP's sign-in settings, the whole form at once (an unticked box is sent as nothing)."""
    changes = {
        "allow_idp_initiated": request.form.get("allow_idp_initiated") == "on",
        "allow_jit": request.form.get("allow_jit") == "on",
        "link_by_email": request.form.get("link_by_email") == "on",
        "domains": _domain_list("domains"),
    }
    idps.change_settings(get_store(), g.admin.account_id, name, changes, actor=g.admin.actor)
    return redirect(url_for("console.idps", saved=name))


@bp.post("/<slug>/idp/verified-domains")
def verified_domains(slug: str) -> ResponseReturnValue:
    """The account's verified e-mail domains (for IdPs that link first sign-ins by e-mail)."""
    accounts.set_verified_domains(
        get_store(), g.admin.account_id, _domain_list("domains"), actor=g.admin.actor
    )
    return redirect(url_for("console.idps", saved="verified-domains"))


@bp.post("/<slug>/idp")
def add_idp(slug: str) -> ResponseReturnValue:
    """Add an IdP from its metadata: a URL we fetch (https, public) or an uploaded file."""
    name = request.form.get("name", "").strip() or None
    url = request.form.get("metadata_url", "").strip()
    upload = request.files.get("metadata_file")
    if upload is not None and upload.filename:
        xml = upload.read().decode("utf-8", errors="replace")
        url = ""
    elif url:
        xml = idps.fetch(url, allow_private=_settings().allow_private_metadata)
    else:
        raise InvalidInput("give the IdP's metadata URL or upload its metadata file")
    idp = idps.add(get_store(), slug, xml, name=name, metadata_url=url or None, actor=g.admin.actor)
    return redirect(url_for("console.idps", added=idp.name))


@bp.post("/<slug>/idp/<name>/remove")
def remove_idp(slug: str, name: str) -> ResponseReturnValue:
    idps.remove(get_store(), slug, name, actor=g.admin.actor)
    return redirect(url_for("console.idps", removed=name))


@bp.post("/<slug>/idp/<name>/test-login")
def test_idp_login(slug: str, name: str) -> ResponseReturnValue:
    """Start a test login at this IdP: its one-time page, where a button sends the browser on."""
    issued = test_logins.issue(
        get_store(), slug, name, base_url=_settings().base_url, actor=g.admin.actor
    )
    return redirect(test_logins.start_url("", slug, issued.raw), code=303)


@bp.get("/<slug>/scim", endpoint="scim")
def scim_page(slug: str) -> ResponseReturnValue:
    """The SCIM base URL and the account's tokens (issue, revoke)."""
    return _scim(slug)


def _scim(slug: str, issued: accounts.IssuedToken | None = None) -> ResponseReturnValue:
    before, size = page_args()
    failed = request.args.get("failed") == "1"
    requests = scim_log.search(
        get_store(), g.admin.account_id, failed=failed, before_id=before, limit=size + 1
    )
    with get_store().read() as db:
        tokens = accounts.list_tokens(db, slug)
    return render_template(
        "console/scim.html",
        tokens=list(reversed(tokens)),
        base_url=f"{_settings().base_url}/scim/v2",
        issued=issued,
        requests=requests[:size],
        older=requests[size - 1]["id"] if len(requests) > size else None,
        failed=failed,
        retention_days=_settings().scim_log_days,
    )


@bp.post("/<slug>/scim/tokens")
def issue_token(slug: str) -> ResponseReturnValue:
    """Issue a token and show it on this response only (never stored, never shown again)."""
    label = request.form.get("label", "").strip()[:200]
    issued = accounts.issue_token(get_store(), slug, label=label, actor=g.admin.actor)
    notice("ok", "Token issued. Copy it now: it is shown only once.")
    return _scim(slug, issued)


@bp.post("/<slug>/scim/tokens/<int:token_id>/revoke")
def revoke_token(slug: str, token_id: int) -> ResponseReturnValue:
    accounts.revoke_token(get_store(), slug, token_id, actor=g.admin.actor)
    return redirect(url_for("console.scim", revoked=token_id))
