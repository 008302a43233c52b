"""`idbridge demo`: a ready demo account."""

from __future__ import annotations

from importlib import resources

import click

from bridge import accounts, policy_versions, schema
from bridge.accounts import get_account
from bridge.cli.base import Context, fails_cleanly, main, pass_ctx
from bridge.errors import PolicyInvalid

EXAMPLE = "policies/examples/demo.yaml"


@main.command("demo")
@click.option("--slug", default="demo", show_default=True)
@pass_ctx
@fails_cleanly
def demo(ctx: Context, slug: str) -> None:
    """Set up a demo account (idempotent) and print where to point an IdP, with a fresh token."""
    schema.upgrade(ctx.store.engine)
    with ctx.store.read() as session:
        exists = slug in {a.slug for a in accounts.list_accounts(session)}
        envs = {e.name for e in accounts.list_environments(session, slug)} if exists else set()
    if not exists:
        accounts.create_account(ctx.store, slug, name="Demo account", actor=ctx.actor)
    for name in ("production", "staging"):
        if name not in envs:
            accounts.add_environment(
                ctx.store, slug, name, default=name == "production", actor=ctx.actor
            )
    policy = _demo_policy(ctx, slug)
    token = accounts.issue_token(ctx.store, slug, label="demo", actor=ctx.actor, replace=True)
    base = ctx.settings.base_url
    click.echo(f"account:            {slug} (environments: production, staging)")
    click.echo(f"SCIM base URL:      {base}/scim/v2")
    click.echo(f"SAML metadata URL:  {base}/saml/{slug}/metadata")
    click.echo(
        f"SAML login:         {base}/saml/{slug}/login (after `idbridge dev-idp register {slug}`)"
    )
    click.echo(f"policy:             {policy}")
    click.echo("SCIM bearer token (label demo, shown once; the previous demo token is revoked):")
    click.echo(token.raw)


def _demo_policy(ctx: Context, slug: str) -> str:
    """Make the demo policy the account's active stored version, through `policy push`'s own
    service call, unless the account has one (an edited demo policy is never replaced); say which.

    The source is the account's file in the policy folder when an earlier `make run` left one
    there (edits kept), else the commented example."""
    with ctx.store.read() as db:
        current = policy_versions.active(db, get_account(db, slug).id)
    if current is not None:
        return f"version {current.number} is active (kept as it is)"
    legacy = ctx.settings.policy_dir / f"{slug}.yaml"
    if legacy.is_file():
        source, origin, where = (
            legacy.read_text(encoding="utf-8"),
            f"cli:{legacy.name}",
            str(legacy),
        )
    else:
        source = (resources.files("policies") / "examples" / "demo.yaml").read_text()
        if slug != "demo":
            source = source.replace("\naccount: demo\n", f"\naccount: {slug}\n", 1)
        origin, where = f"demo:{EXAMPLE}", EXAMPLE
    try:
        created, _ = policy_versions.push(ctx.store, slug, source, origin=origin, actor=ctx.actor)
    except PolicyInvalid as exc:
        raise click.ClickException(
            f"{where}: the policy does not load:\n" + "\n".join(exc.problems)
        ) from exc
    return f"version {created.version.number} is active (pushed from {where})"
