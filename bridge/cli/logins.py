"""The SAML login log."""

from __future__ import annotations

import click

from bridge import accounts, logins
from bridge.cli.base import Context, emit, fails_cleanly, main, pass_ctx


@main.command("logins")
@click.argument("slug")
@click.option("--failed", is_flag=True, help="Only refused logins.")
@click.option("-n", "limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@fails_cleanly
def logins_cmd(ctx: Context, slug: str, failed: bool, limit: int, as_json: bool) -> None:
    """Recent SAML logins of SLUG, with the typed reason of each refusal."""
    with ctx.store.read() as session:
        account = accounts.get_account(session, slug)
        rows = logins.recent(session, account.id, failed=failed, limit=limit)
    if as_json:
        emit(rows)
        return
    for row in rows:
        state = "ok" if row["ok"] else f"REFUSED {row['reason']}"
        click.echo(
            f"{row['at']} {row['idp'] or '-':<12} {row['name_id'] or '-':<30} {state}"
            + (f": {row['detail']}" if row["detail"] and not row["ok"] else "")
        )
