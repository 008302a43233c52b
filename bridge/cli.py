"""The `bridge` command: schema, accounts, environments, tokens, audit (DESIGN §3)."""

from __future__ import annotations

import functools
import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.exc import OperationalError, ProgrammingError

import policies
from bridge import accounts, audit, idps, logins, planning, schema, sp_keys
from bridge.errors import BridgeError
from bridge.settings import Settings
from bridge.store import Store

F = TypeVar("F", bound=Callable[..., Any])


class Context:
    """Settings and store, made on first use so `--help` needs no database."""

    def __init__(self) -> None:
        self.settings = Settings.from_env()
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.settings.database_url, policy_dir=self.settings.policy_dir)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.dispose()

    @property
    def actor(self) -> str:
        try:
            return f"cli:{getpass.getuser()}"
        except Exception:  # no login name in some containers
            return "cli"


pass_ctx = click.make_pass_decorator(Context)


def fails_cleanly(fn: F) -> F:
    """Turn domain and schema errors into one line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BridgeError as exc:
            raise click.ClickException(exc.detail) from exc
        except (OperationalError, ProgrammingError) as exc:
            detail = str(exc.orig).strip().splitlines()[0]
            raise click.ClickException(
                f"the database is not ready ({detail}); run `bridge db upgrade` first"
            ) from exc

    return wrapper  # type: ignore[return-value]


def emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group()
@click.pass_context
def main(click_ctx: click.Context) -> None:
    """Identity Bridge: SAML SSO and SCIM provisioning into the account store."""
    click_ctx.obj = Context()
    click_ctx.call_on_close(click_ctx.obj.close)


def add_adapter_commands() -> None:
    """Commands the protocol adapters bring (e.g. saml's dev IdP), without bridge importing
    them by name: the adapters list is the one composition root (bridge.ADAPTERS)."""
    import importlib

    from bridge import ADAPTERS

    for adapter in ADAPTERS:
        try:
            module = importlib.import_module(f"{adapter}.cli")
        except ModuleNotFoundError:
            continue
        for command in getattr(module, "COMMANDS", ()):
            main.add_command(command)


@main.group()
def db() -> None:
    """The account store's schema."""


@db.command("upgrade")
@pass_ctx
@fails_cleanly
def db_upgrade(ctx: Context) -> None:
    """Create or migrate the schema to the newest revision."""
    schema.upgrade(ctx.store.engine)
    click.echo(f"database at {schema.current(ctx.store.engine)}")


@main.group("accounts")
def accounts_group() -> None:
    """Accounts (tenants)."""


@accounts_group.command("create")
@click.argument("slug")
@click.option("--name", help="Display name (defaults to the slug).")
@pass_ctx
@fails_cleanly
def accounts_create(ctx: Context, slug: str, name: str | None) -> None:
    """Create account SLUG."""
    account = accounts.create_account(ctx.store, slug, name=name, actor=ctx.actor)
    click.echo(f"created account {account.slug}")


@accounts_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@fails_cleanly
def accounts_list(ctx: Context, as_json: bool) -> None:
    """List accounts."""
    with ctx.store.read() as session:
        rows = [{"slug": a.slug, "name": a.name} for a in accounts.list_accounts(session)]
    if as_json:
        emit(rows)
        return
    for row in rows:
        click.echo(f"{row['slug']}\t{row['name']}")


@main.group("environments")
def environments_group() -> None:
    """Product environments of an account."""


@environments_group.command("add")
@click.argument("slug")
@click.argument("name")
@click.option("--default", is_flag=True, help="New users get this environment by default.")
@pass_ctx
@fails_cleanly
def environments_add(ctx: Context, slug: str, name: str, default: bool) -> None:
    """Add environment NAME to account SLUG."""
    accounts.add_environment(ctx.store, slug, name, default=default, actor=ctx.actor)
    click.echo(f"added environment {name} to {slug}")


@environments_group.command("list")
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@fails_cleanly
def environments_list(ctx: Context, slug: str, as_json: bool) -> None:
    """List the environments of account SLUG."""
    with ctx.store.read() as session:
        envs = accounts.list_environments(session, slug)
    if as_json:
        emit([{"name": e.name, "default": e.is_default} for e in envs])
        return
    for env in envs:
        click.echo(env.name + ("\t(default)" if env.is_default else ""))


@main.group("tokens")
def tokens_group() -> None:
    """SCIM bearer tokens."""


@tokens_group.command("issue")
@click.argument("slug")
@click.option("--label", default="", help="What the token is for, e.g. 'okta'.")
@pass_ctx
@fails_cleanly
def tokens_issue(ctx: Context, slug: str, label: str) -> None:
    """Issue a SCIM token for SLUG; it is shown once, alone on the last line."""
    token = accounts.issue_token(ctx.store, slug, label=label, actor=ctx.actor)
    click.echo(f"token {token.id} for {slug} (shown once; only its hash is stored):")
    click.echo(token.raw)


@tokens_group.command("list")
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@fails_cleanly
def tokens_list(ctx: Context, slug: str, as_json: bool) -> None:
    """List the tokens of SLUG (never their values)."""
    with ctx.store.read() as session:
        rows = [
            {
                "id": t.id,
                "label": t.label,
                "prefix": t.prefix,
                "created": t.created.isoformat(timespec="seconds"),
                "last_used": t.last_used and t.last_used.isoformat(timespec="seconds"),
                "revoked": t.revoked and t.revoked.isoformat(timespec="seconds"),
            }
            for t in accounts.list_tokens(session, slug)
        ]
    if as_json:
        emit(rows)
        return
    for row in rows:
        state = f"revoked {row['revoked']}" if row["revoked"] else "active"
        used = row["last_used"] or "never used"
        click.echo(f"{row['id']}\t{row['prefix']}…\t{row['label'] or '-'}\t{state}\t{used}")


@tokens_group.command("revoke")
@click.argument("slug")
@click.argument("token_id", type=int)
@pass_ctx
@fails_cleanly
def tokens_revoke(ctx: Context, slug: str, token_id: int) -> None:
    """Revoke token TOKEN_ID of SLUG, effective immediately."""
    accounts.revoke_token(ctx.store, slug, token_id, actor=ctx.actor)
    click.echo(f"revoked token {token_id} of {slug}")


@main.group("audit")
def audit_group() -> None:
    """The tamper-evident audit log."""


@audit_group.command("tail")
@click.argument("slug")
@click.option("-n", "limit", default=20, show_default=True, help="How many events.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@fails_cleanly
def audit_tail(ctx: Context, slug: str, limit: int, as_json: bool) -> None:
    """Show the newest audit events of SLUG, oldest first."""
    with ctx.store.read() as session:
        account = accounts.get_account(session, slug)
        rows = [audit.describe(e) for e in audit.tail(session, account.id, limit)]
    if as_json:
        emit(rows)
        return
    for row in rows:
        click.echo(
            f"{row['seq']:>6} {row['at']} {row['actor']:<20} {row['action']:<18} {row['target']}"
        )


@audit_group.command("verify")
@click.argument("slug")
@pass_ctx
@fails_cleanly
def audit_verify(ctx: Context, slug: str) -> None:
    """Check SLUG's audit chain; exit 1 naming the first broken event."""
    with ctx.store.read() as session:
        account = accounts.get_account(session, slug)
        count, broken = audit.verify(session, account.id)
    if broken is not None:
        click.echo(
            f"audit chain of {slug} is BROKEN at event {broken.seq}: {broken.reason} "
            f"({count} events before it verified)",
            err=True,
        )
        sys.exit(1)
    click.echo(f"audit chain of {slug} verified: {count} events intact")


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
    token = accounts.issue_token(ctx.store, slug, label="demo", actor=ctx.actor)
    base = ctx.settings.base_url
    click.echo(f"account:            {slug} (environments: production, staging)")
    click.echo(f"SCIM base URL:      {base}/scim/v2")
    click.echo(f"SAML metadata URL:  {base}/saml/{slug}/metadata")
    click.echo(
        f"SAML login:         {base}/saml/{slug}/login (after `bridge dev-idp register {slug}`)"
    )
    click.echo("SCIM bearer token (shown once):")
    click.echo(token.raw)


@main.group("policy")
def policy_group() -> None:
    """Policy files: check, explain, plan, apply."""


@policy_group.command("check")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@pass_ctx
def policy_check(ctx: Context, files: tuple[str, ...]) -> None:
    """Validate policy FILES (default: every file in BRIDGE_POLICY_DIR) and run their tests."""
    paths = [Path(f) for f in files] or sorted(
        p for p in Path(ctx.settings.policy_dir).glob("*") if p.suffix in (".yaml", ".yml")
    )
    if not paths:
        raise click.ClickException(f"no policy files given or found in {ctx.settings.policy_dir}")
    failed = False
    for path in paths:
        try:
            policy = policies.load(path)
        except policies.PolicyError as exc:
            click.echo(str(exc), err=True)
            failed = True
            continue
        results = policies.run_tests(policy)
        for result in results:
            click.echo(str(result), err=not result.passed)
        failed = failed or not all(r.passed for r in results)
        click.echo(f"{path}: valid, {sum(r.passed for r in results)}/{len(results)} tests pass")
    if failed:
        sys.exit(1)


@policy_group.command("explain")
@click.argument("slug")
@click.option("--user", "user_name", help="A stored user's userName.")
@click.option(
    "--profile", "profile_file", type=click.Path(dir_okay=False), help="A profile as JSON."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@fails_cleanly
def policy_explain(
    ctx: Context, slug: str, user_name: str | None, profile_file: str | None, as_json: bool
) -> None:
    """The decision of SLUG's policy for a user or a profile, and why."""
    if (user_name is None) == (profile_file is None):
        raise click.UsageError("give exactly one of --user or --profile")
    profile = _read_profile(profile_file) if profile_file else None
    choice, decision, _ = planning.explain(ctx.store, slug, user_name=user_name, profile=profile)
    if decision is None:
        raise click.ClickException(f"no policy to explain with: {choice.error}")
    if as_json:
        emit({"policy": choice.source, **_decision_json(decision)})
        return
    click.echo(
        f"policy: {choice.source}"
        + (f" (broken edit ignored: {choice.error})" if choice.error else "")
    )
    data = _decision_json(decision)
    click.echo(f"role: {data['role']['value']} (rule {data['role']['rule']})")
    click.echo(
        f"environments: {data['environments']['value']} (rule {data['environments']['rule']})"
    )
    for g in data["groups"]:
        click.echo(f"group: {g['name']} (rule {g['rule']})")
    for g in data["grants"]:
        click.echo(f"grant: {g}")
    for error in data["errors"]:
        click.echo(f"ERROR: {error} (access would be kept as it is)")
    click.echo("why:")
    for step in data["explanation"]:
        click.echo(f"  [{'x' if step['matched'] else ' '}] {step['rule']}: {step['detail']}")


@policy_group.command("plan")
@click.argument("slug")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@fails_cleanly
def policy_plan(ctx: Context, slug: str, file: str | None, as_json: bool) -> None:
    """Who would gain or lose what if FILE (default: the current policy) were applied."""
    candidate = _load_policy(file, slug) if file else None
    result = planning.plan(ctx.store, slug, candidate, on_change=None if as_json else _print_change)
    _print_plan(result, as_json)
    if result.refused:
        sys.exit(1)


@policy_group.command("apply")
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@fails_cleanly
def policy_apply(ctx: Context, slug: str, as_json: bool) -> None:
    """Re-evaluate every user of SLUG with its current policy (refused when a guard would break)."""
    result = planning.plan(ctx.store, slug)
    if result.refused:
        _print_plan(result, as_json)
        raise click.ClickException(f"not applied: {result.refused}")
    result = planning.apply(ctx.store, slug, actor=ctx.actor)
    _print_plan(result, as_json)
    if not as_json:
        click.echo(f"applied to {slug}")


def _load_policy(file: str, slug: str) -> policies.Policy:
    try:
        return planning.load_candidate(file, slug)
    except policies.PolicyError as exc:
        raise click.ClickException(f"the policy does not load:\n{exc}") from exc


def _read_profile(path: str) -> policies.Profile:
    """A profile captured as JSON: {source, userName, attributes, groups, idp}."""
    try:
        data = json.loads(Path(path).read_text())
        attributes = {
            str(k): tuple(v if isinstance(v, list) else [v])
            for k, v in (data.get("attributes") or {}).items()
        }
        idp = data.get("idp")
        return policies.Profile(
            source=policies.Source(data.get("source", "saml")),
            user_name=str(data["userName"]),
            idp=policies.IdpLink(idp, str(data["userName"])) if idp else None,
            attributes={k: tuple(map(str, v)) for k, v in attributes.items()},
            groups=tuple(map(str, data.get("groups") or ())),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise click.ClickException(
            f"{path}: not a profile ({type(exc).__name__}: {exc}); expected JSON with "
            "userName and optional source, attributes, groups, idp"
        ) from exc


def _decision_json(decision: policies.Decision) -> dict[str, Any]:
    envs = decision.environments
    return {
        "role": {"value": decision.role, "rule": decision.role_rule},
        "environments": {
            "value": envs if isinstance(envs, str) else list(envs),
            "rule": decision.environments_rule,
        },
        "groups": [{"name": g.name, "rule": g.rule} for g in decision.groups],
        "grants": [
            {
                "subject": g.group or "user",
                "environment": g.environment,
                g.kind: g.path,
                "level": g.level,
                "rule": g.rule,
            }
            for g in decision.grants
        ],
        "errors": list(decision.errors),
        "explanation": [
            {"rule": s.rule, "matched": s.matched, "detail": s.detail} for s in decision.explanation
        ],
    }


def _print_change(change: planning.Change) -> None:
    parts = []
    if change.role:
        parts.append(f"role {change.role[0]} -> {change.role[1]}")
    for kind, values in change.gains.items():
        parts += [f"+{kind[:-1]} {v}" for v in values]
    for kind, values in change.losses.items():
        parts += [f"-{kind[:-1]} {v}" for v in values]
    parts += [f"error: {e} (kept as is)" for e in change.errors]
    click.echo(f"{change.user_name}: " + "; ".join(parts))


def _print_plan(result: planning.Plan, as_json: bool) -> None:
    if as_json:
        emit(result.describe())
        return
    click.echo(f"policy: {result.policy_source}")
    for warning in result.warnings:
        click.echo(f"warning: {warning}")
    for change in result.changes:
        _print_change(change)
    click.echo(result.summary())
    if result.refused:
        click.echo(f"REFUSED: {result.refused}", err=True)


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
        actor=ctx.actor,
    )
    if link_by_email:
        ctx.store.write(lambda db: _set_link_by_email(db, idp.id))
    base = ctx.settings.base_url
    click.echo(f"added IdP {idp.name} ({idp.entity_id}) to {slug}")
    click.echo(
        f"give the IdP: SP entity ID {base}/saml/{slug}/metadata, ACS {base}/saml/{slug}/acs"
    )
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
                "certificates": len(i.certificates.get("signing", [])),
                "warnings": idps.expiry_warnings(i),
            }
            for i in idps.list_for(session, account.id)
        ]
    if as_json:
        emit(rows)
        return
    for row in rows:
        flags = ("idp-initiated " if row["idp_initiated"] else "") + (
            "jit" if row["jit"] else "scim-only"
        )
        click.echo(f"{row['name']}\t{row['entity_id']}\t{row['certificates']} cert(s)\t{flags}")
        for warning in list(row["warnings"]):  # type: ignore[call-overload]
            click.echo(f"  warning: {warning}")


@idps_group.command("remove")
@click.argument("slug")
@click.argument("name")
@pass_ctx
@fails_cleanly
def idps_remove(ctx: Context, slug: str, name: str) -> None:
    """Remove IdP NAME from SLUG; its logins stop at once."""
    idps.remove(ctx.store, slug, name, actor=ctx.actor)
    click.echo(f"removed IdP {name} from {slug}")


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


@main.group("sp-keys")
def sp_keys_group() -> None:
    """The account's SAML SP signing/encryption keys."""


@sp_keys_group.command("rotate")
@click.argument("slug")
@pass_ctx
@fails_cleanly
def sp_keys_rotate(ctx: Context, slug: str) -> None:
    """Add a new SP key that signs from now on; the previous one stays published until retired."""
    settings = ctx.settings.ensure_secret_key()
    with ctx.store.read() as session:
        account = accounts.get_account(session, slug)
    sp_keys.active(ctx.store, account.id, slug, settings.secret_key or "")
    key_id = sp_keys.rotate(ctx.store, account.id, slug, settings.secret_key or "", actor=ctx.actor)
    click.echo(f"new SP key {key_id} for {slug}")
    click.echo("give the IdPs the SP metadata again, then retire the previous key")


@sp_keys_group.command("retire")
@click.argument("slug")
@click.argument("key_id", type=int)
@pass_ctx
@fails_cleanly
def sp_keys_retire(ctx: Context, slug: str, key_id: int) -> None:
    """Stop publishing and using SP key KEY_ID."""
    with ctx.store.read() as session:
        account = accounts.get_account(session, slug)
    sp_keys.retire(ctx.store, account.id, key_id, actor=ctx.actor)
    click.echo(f"retired SP key {key_id} of {slug}")


add_adapter_commands()
