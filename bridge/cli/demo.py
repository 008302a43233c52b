"""`idbridge demo`: a ready demo account."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import click

from bridge import accounts, schema
from bridge.cli.base import Context, fails_cleanly, main, pass_ctx


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
    policy = _install_demo_policy(ctx.settings.policy_dir / f"{slug}.yaml", slug)
    token = accounts.issue_token(ctx.store, slug, label="demo", actor=ctx.actor, replace=True)
    base = ctx.settings.base_url
    click.echo(f"account:            {slug} (environments: production, staging)")
    click.echo(f"SCIM base URL:      {base}/scim/v2")
    click.echo(f"SAML metadata URL:  {base}/saml/{slug}/metadata")
    click.echo(
        f"SAML login:         {base}/saml/{slug}/login (after `idbridge dev-idp register {slug}`)"
    )
    click.echo(f"policy file:        {policy}")
    click.echo("SCIM bearer token (label demo, shown once; the previous demo token is revoked):")
    click.echo(token.raw)


def _install_demo_policy(path: Path, slug: str) -> str:
    """Copy policies/examples/demo.yaml to the account's policy file unless one is there (an
    edited demo policy is never overwritten); say which."""
    if path.exists():
        return f"{path} (kept as it is)"
    text = (resources.files("policies") / "examples" / "demo.yaml").read_text()
    if slug != "demo":
        text = text.replace("\naccount: demo\n", f"\naccount: {slug}\n", 1)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)  # the running service never reads a half-written file
    return f"{path} (installed from policies/examples/demo.yaml)"
