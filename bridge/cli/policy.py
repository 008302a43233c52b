"""Policy files: check, explain, plan, apply."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

import policies
from bridge import guards, planning, policy_versions
from bridge.accounts import get_account
from bridge.cli.base import Context, emit, fails_cleanly, main, pass_ctx
from bridge.errors import PolicyInvalid


@main.group("policy")
def policy_group() -> None:
    """Policies: check, explain, plan, apply; push, pull, sync (versions in the store)."""


@policy_group.command("check")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option(
    "--store", "against_store", is_flag=True, help="Also check guards against the stored users."
)
@pass_ctx
@fails_cleanly
def policy_check(ctx: Context, files: tuple[str, ...], against_store: bool) -> None:
    """Validate policy FILES (default: every file in BRIDGE_POLICY_DIR) and run their tests;
    with --store, also whether each would break a guard on its account's stored users."""
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
        if against_store:
            with ctx.store.read() as db:
                broken = guards.breaches(db, get_account(db, policy.account), policy)
            for breach in broken:
                click.echo(f"{path}: breaks {breach} (account {policy.account})", err=True)
            failed = failed or bool(broken)
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
        emit({"policy": choice.source, **planning.decision_json(decision)})
        return
    click.echo(
        f"policy: {choice.source}"
        + (f" (broken edit ignored: {choice.error})" if choice.error else "")
    )
    data = planning.decision_json(decision)
    click.echo(f"role: {data['role']['value']} (rule {data['role']['rule']})")
    envs = data["environments"]["value"]
    shown = envs if isinstance(envs, str) else ", ".join(envs) or "none"
    click.echo(f"environments: {shown} (rule {data['environments']['rule']})")
    for g in data["groups"]:
        click.echo(f"group: {g['name']} (rule {g['rule']})")
    for grant in decision.grants:
        who = f"members of group {grant.group}" if grant.group else "the user"
        click.echo(
            f"grant: {grant.level} on {grant.kind} {grant.path} in {grant.environment}"
            f" to {who} (rule {grant.rule})"
        )
    for error in data["errors"]:
        click.echo(f"ERROR: {error} (access would be kept as it is)")
    click.echo("why:")
    for step in data["explanation"]:
        click.echo(f"  [{'x' if step['matched'] else ' '}] {step['rule']}: {step['detail']}")


PROCESSES = click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=planning.usable_cpus,
    show_default="the CPUs this process may use",
    help=f"Plan an account of {planning.PARALLEL_USERS:,} users or more in this many processes.",
)


@policy_group.command("plan")
@click.argument("slug")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@PROCESSES
@pass_ctx
@fails_cleanly
def policy_plan(ctx: Context, slug: str, file: str | None, as_json: bool, processes: int) -> None:
    """Who would gain or lose what if FILE (default: the current policy) were applied."""
    candidate = _load_policy(file, slug) if file else None
    if as_json:
        result = planning.plan(ctx.store, slug, candidate, processes=processes)
    else:  # the policy and its warnings first, then each change as it is found
        result = planning.plan(
            ctx.store,
            slug,
            candidate,
            on_change=_print_change,
            on_start=_print_head,
            processes=processes,
        )
    _print_plan(result, as_json, head=False)
    if result.refused:
        sys.exit(1)


@policy_group.command("apply")
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@PROCESSES
@pass_ctx
@fails_cleanly
def policy_apply(ctx: Context, slug: str, as_json: bool, processes: int) -> None:
    """Re-evaluate every user of SLUG with its current policy (refused when a guard would break)."""
    result = planning.plan(ctx.store, slug, processes=processes)
    if result.refused:
        _print_plan(result, as_json)
        raise click.ClickException(f"not applied: {result.refused}")
    result = planning.apply(ctx.store, slug, actor=ctx.actor, processes=processes)
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


def _print_head(result: planning.Plan) -> None:
    click.echo(f"policy: {result.policy_source}")
    for warning in result.warnings:
        click.echo(f"warning: {warning}")


def _print_plan(result: planning.Plan, as_json: bool, *, head: bool = True) -> None:
    if result.processes > 1:
        click.echo(f"planned in {result.processes} processes", err=True)
    if as_json:
        emit(result.describe())
        return
    if head:
        _print_head(result)
    for change in result.changes:
        _print_change(change)
    for grant in result.group_grants:
        click.echo(grant.line())
    click.echo(result.summary())
    if result.refused:
        click.echo(f"REFUSED: {result.refused}", err=True)


@policy_group.command("push")
@click.argument("slug")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--dry-run", is_flag=True, help="Check and print the plan; store nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@fails_cleanly
def policy_push(ctx: Context, slug: str, file: str, dry_run: bool, as_json: bool) -> None:
    """Check FILE, plan it and apply it as SLUG's active policy in one step (a guard refuses)."""
    _push(ctx, slug, Path(file), dry_run=dry_run, as_json=as_json)


def _push(ctx: Context, slug: str, path: Path, *, dry_run: bool, as_json: bool) -> None:
    source = _read_source(path)
    try:
        if dry_run:
            _print_plan(policy_versions.plan(ctx.store, slug, source), as_json)
            return
        created, result = policy_versions.push(
            ctx.store, slug, source, origin=f"cli:{path.name}", actor=ctx.actor
        )
        number = created.version.number
    except PolicyInvalid as exc:
        raise click.ClickException(
            f"{path}: the policy does not load:\n" + "\n".join(exc.problems)
        ) from exc
    _print_plan(result, as_json)
    if not as_json:
        state = "new version" if created.new else "unchanged, version"
        click.echo(f"{slug}: {state} {number} is active")


def _read_source(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{path}: cannot read ({exc})") from exc


@policy_group.command("pull")
@click.argument("slug")
@pass_ctx
@fails_cleanly
def policy_pull(ctx: Context, slug: str) -> None:
    """Print SLUG's active policy source (as stored)."""
    with ctx.store.read() as db:
        account = get_account(db, slug)
        version = policy_versions.active(db, account.id)
        if version is None:
            raise click.ClickException(f"{slug} has no active policy version in the store")
        source = version.source
    click.echo(source, nl=not source.endswith("\n"))


@policy_group.command("sync")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.option("--dry-run", is_flag=True, help="Check and print the plans; store nothing.")
@pass_ctx
@fails_cleanly
def policy_sync(ctx: Context, directory: str, dry_run: bool) -> None:
    """Push every <slug>.yaml of DIRECTORY to its account (GitOps); stops at the first refusal."""
    paths = sorted(p for p in Path(directory).iterdir() if p.suffix in (".yaml", ".yml"))
    if not paths:
        raise click.ClickException(f"no <slug>.yaml files in {directory}")
    for path in paths:
        click.echo(f"== {path.name}")
        _push(ctx, path.stem, path, dry_run=dry_run, as_json=False)
