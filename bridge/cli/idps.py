"""The account's SAML IdPs: add, list, remove, refresh."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from bridge import accounts, expiry, idp_domains, idps
from bridge.cli.base import Context, emit, fails_cleanly, main, pass_ctx
from bridge.errors import BridgeError


@main.group("idps")
def idps_group() -> None:
    """SAML identity providers of an account."""


@idps_group.command("add")
@click.argument("slug")
@click.option("--metadata", "source", required=True, help="Metadata XML: a file or an https URL.")
@click.option("--name", help="A short name (default: from the entity ID's host).")
@click.option("--allow-idp-initiated", is_flag=True, help="Accept logins the IdP starts.")
@click.option("--no-jit", is_flag=True, help="Sign in only users SCIM already provisioned.")
@click.option("--match-by", default="name_id", show_default=True, help="name_id or an attribute.")
@click.option(
    "--link-by-email", is_flag=True, help="Link first logins by e-mail (verified domains)."
)
@click.option(
    "--accept-response-signature",
    is_flag=True,
    help="Accept a signed Response whose assertion is unsigned (default: assertion signed).",
)
@click.option(
    "--domain",
    "domains",
    multiple=True,
    help="An e-mail domain whose login_hint goes to this IdP (repeatable; see `idps domains`).",
)
@pass_ctx
@fails_cleanly
def idps_add(
    ctx: Context,
    slug: str,
    source: str,
    name: str | None,
    allow_idp_initiated: bool,
    no_jit: bool,
    match_by: str,
    link_by_email: bool,
    accept_response_signature: bool,
    domains: tuple[str, ...],
) -> None:
    """Register an IdP with account SLUG from its metadata; takes effect at once."""
    url = source if source.startswith(("https://", "http://")) else None
    xml = (
        idps.fetch(source, allow_private=ctx.settings.allow_private_metadata)
        if url
        else _read(source)
    )
    idp = idps.add(
        ctx.store,
        slug,
        xml,
        name=name,
        metadata_url=url,
        allow_idp_initiated=allow_idp_initiated,
        allow_jit=not no_jit,
        match_by=match_by,
        accept_response_signature=accept_response_signature,
        domains=list(domains),
        actor=ctx.actor,
    )
    if link_by_email:
        ctx.store.write(lambda db: _set_link_by_email(db, idp.id))
    sp = f"{ctx.settings.base_url}/saml/{slug}"
    click.echo(f"added IdP {idp.name} ({idp.entity_id}) to {slug}")
    click.echo("give the IdP (or let it read the metadata URL):")
    click.echo(f"  SP entity ID    {sp}/metadata")
    click.echo(f"  ACS (HTTP-POST) {sp}/acs/{idp.name}")
    click.echo(f"  SLS (Redirect)  {sp}/sls/{idp.name}")
    click.echo(f"  metadata URL    {sp}/metadata/{idp.name}")
    with ctx.store.read() as db:
        for warning in idps.expiry_warnings(idps.get(db, idp.account_id, idp.name)):
            click.echo(f"warning: {warning}", err=True)


def _set_link_by_email(db: Any, idp_id: int) -> None:
    from bridge.models import IdentityProvider

    idp = db.get(IdentityProvider, idp_id)
    idp.link_by_email = True
    idp.touch()


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise click.ClickException(f"{path}: {exc.strerror}") from exc


@idps_group.command("list")
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@fails_cleanly
def idps_list(ctx: Context, slug: str, as_json: bool) -> None:
    """List the IdPs of SLUG, with certificate expiry warnings."""
    with ctx.store.read() as session:
        account = accounts.get_account(session, slug)
        rows = [
            {
                "name": i.name,
                "entity_id": i.entity_id,
                "sso_url": i.sso_url,
                "idp_initiated": i.allow_idp_initiated,
                "jit": i.allow_jit,
                "response_signature": i.accept_response_signature,
                "disabled": i.disabled,
                "certificates": len(i.certificates.get("signing", [])),
                "domains": idp_domains.of_idp(session, i.id),
                "warnings": idps.expiry_warnings(i),
            }
            for i in idps.list_for(session, account.id)
        ]
    if as_json:
        emit(rows)
        return
    for row in rows:
        flags = " ".join(
            word
            for word, on in (
                ("DISABLED", row["disabled"]),
                ("idp-initiated", row["idp_initiated"]),
                ("jit" if row["jit"] else "scim-only", True),
                ("response-signature", row["response_signature"]),
            )
            if on
        )
        click.echo(f"{row['name']}\t{row['entity_id']}\t{row['certificates']} cert(s)\t{flags}")
        if row["domains"]:
            click.echo(f"  domains: {', '.join(row['domains'])}")  # type: ignore[arg-type]
        for warning in list(row["warnings"]):  # type: ignore[call-overload]
            click.echo(f"  warning: {warning}")


@idps_group.command("domains")
@click.argument("slug")
@click.argument("name")
@click.argument("domains", nargs=-1)
@click.option("--clear", is_flag=True, help="Remove all of the IdP's domains.")
@pass_ctx
@fails_cleanly
def idps_domains(ctx: Context, slug: str, name: str, domains: tuple[str, ...], clear: bool) -> None:
    """Show IdP NAME's e-mail domains, or make DOMAINS its whole list (--clear: none).

    /oidc/authorize sends a login_hint on one of these domains straight to this IdP. They are
    declared by you, not checked in DNS; a domain belongs to one IdP of the account."""
    if clear and domains:
        raise click.UsageError("give domains or --clear, not both")
    with ctx.store.read() as session:
        account_id = accounts.get_account(session, slug).id
        idp_id = idps.get(session, account_id, name).id
    if domains or clear:
        idps.change_settings(
            ctx.store, account_id, name, {"domains": list(domains)}, actor=ctx.actor
        )
    with ctx.store.read() as session:
        found = idp_domains.of_idp(session, idp_id)
    click.echo(f"IdP {name} of {slug}: " + (", ".join(found) if found else "no domains"))


@idps_group.command("check-expiry")
@pass_ctx
@fails_cleanly
def idps_check_expiry(ctx: Context) -> None:
    """Write an idp.certificate_expiring event for each IdP signing certificate (all accounts)
    that crossed 30, 7 or 1 day(s) before expiry, or expired, since it was last announced.

    `idbridge worker` does this every five minutes; each certificate and threshold is announced
    once, however many workers or cron jobs check."""
    written = expiry.check(ctx.store)
    click.echo(f"{written} idp.certificate_expiring event(s) written")


@idps_group.command("remove")
@click.argument("slug")
@click.argument("name")
@pass_ctx
@fails_cleanly
def idps_remove(ctx: Context, slug: str, name: str) -> None:
    """Remove IdP NAME from SLUG; its logins stop and its sessions end at once."""
    ended = idps.remove(ctx.store, slug, name, actor=ctx.actor)
    click.echo(f"removed IdP {name} from {slug}; {ended} session(s) ended")


@idps_group.command("disable")
@click.argument("slug")
@click.argument("name")
@pass_ctx
@fails_cleanly
def idps_disable(ctx: Context, slug: str, name: str) -> None:
    """Disable IdP NAME of SLUG: nobody signs in through it, its sessions end at once."""
    ended = idps.set_disabled(ctx.store, slug, name, True, actor=ctx.actor)
    click.echo(f"disabled IdP {name} of {slug}; {ended} session(s) ended")


@idps_group.command("enable")
@click.argument("slug")
@click.argument("name")
@pass_ctx
@fails_cleanly
def idps_enable(ctx: Context, slug: str, name: str) -> None:
    """Enable IdP NAME of SLUG again."""
    idps.set_disabled(ctx.store, slug, name, False, actor=ctx.actor)
    click.echo(f"enabled IdP {name} of {slug}")


@idps_group.command("refresh")
@click.argument("slug")
@click.argument("name", required=False)
@pass_ctx
@fails_cleanly
def idps_refresh(ctx: Context, slug: str, name: str | None) -> None:
    """Re-read metadata from the IdPs' URLs (all of SLUG's, or NAME); safe to run from cron."""
    with ctx.store.read() as session:
        account = accounts.get_account(session, slug)
        targets = [
            (i.name, i.metadata_url)
            for i in idps.list_for(session, account.id)
            if name in (None, i.name)
        ]
    if name and not targets:
        raise click.ClickException(f"no IdP {name!r} in account {slug!r}")
    failed = False
    for idp_name, url in targets:
        if not url:
            click.echo(f"{idp_name}: added from a file, nothing to refresh")
            continue
        try:
            xml = idps.fetch(url, allow_private=ctx.settings.allow_private_metadata)
            changed = idps.refresh(ctx.store, slug, idp_name, xml=xml, actor=ctx.actor)
        except BridgeError as exc:
            click.echo(f"{idp_name}: {exc.detail}", err=True)
            failed = True
            continue
        click.echo(f"{idp_name}: {'updated' if changed else 'unchanged'}")
    if failed:
        sys.exit(1)
