"""Policy: the active version, an editor whose errors show inline (every one, as file:line:col),
plan before apply (who gains, loses, changes role; a guard's refusal shown as such), apply,
history with diffs, rollback. Over bridge.policy_versions and bridge.planning, the services the
management API and `idbridge policy push` use."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from flask import g, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from bridge import planning, policy_versions
from bridge.accounts import get_account
from bridge.errors import GuardRefused, InvalidInput, PolicyInvalid
from bridge.policy import policy_for
from bridge.web import get_store
from console.base import bp

SHOWN = 200  # changes listed on a plan page; the counts cover everyone
HISTORY = 50


@dataclass
class Shown:
    """A plan with at most SHOWN changes kept (an account may have 100,000 users)."""

    plan: planning.Plan
    changes: list[planning.Change] = field(default_factory=list)

    @property
    def more(self) -> int:
        """Changed users not listed."""
        return max(0, len(self.plan.changed) + self.plan.errors - len(self.changes))


def _plan(source: str) -> Shown:
    """Validate `source` (PolicyInvalid lists every problem) and plan it over every user."""
    store = get_store()
    candidate = policy_versions.parse(g.slug, source)
    kept: list[planning.Change] = []

    def keep(change: planning.Change) -> None:
        if len(kept) < SHOWN:
            kept.append(change)

    return Shown(planning.plan(store, g.slug, candidate, on_change=keep), kept)


def _source_field() -> str:
    source = request.form.get("source", "").replace("\r\n", "\n")
    if not source.strip():
        raise InvalidInput("the policy is empty")
    return source


def _current_source() -> tuple[str, str]:
    """What the editor starts from: the active version, else the account's policy file (not yet
    in the store), else a minimal policy; and where it came from."""
    store = get_store()
    with store.read() as db:
        account = get_account(db, g.slug)
        version = policy_versions.active(db, account.id)
        if version is not None:
            return version.source, f"version {version.number}"
        choice = policy_for(db, account, store.policies)
    path = store.policies.path_for(g.slug) if store.policies is not None else None
    if path is not None:
        return path.read_text(encoding="utf-8", errors="replace"), choice.source
    return f"account: {g.slug}\n", choice.source


def located(problems: list[str], source: str) -> list[tuple[str, int | None, str]]:
    """Each problem with the line it names (`file:line:col: message`) and that line's text, so
    the page shows the error next to what caused it."""
    lines = source.split("\n")
    found = []
    for problem in problems:
        match = LOCATION.match(problem)
        number = int(match[1]) if match else None
        text = lines[number - 1] if number and 0 < number <= len(lines) else ""
        found.append((problem, number, text))
    return found


LOCATION = re.compile(r"^[^:]*:(\d+):\d+:")


def _editor(
    source: str | None = None, problems: list[str] | None = None, status: int = 200
) -> ResponseReturnValue:
    store = get_store()
    with store.read() as db:
        account = get_account(db, g.slug)
        active = policy_versions.active(db, account.id)
        versions = policy_versions.history(db, account.id, limit=HISTORY)
        choice = policy_for(db, account, store.policies)
    current, origin = _current_source()
    return (
        render_template(
            "console/policy.html",
            active=active,
            versions=versions,
            serving=choice.source,
            serving_error=choice.error,
            source=current if source is None else source,
            origin=origin,
            problems=located(problems or [], current if source is None else source),
        ),
        status,
    )


@bp.get("/<slug>/policy", endpoint="policy")
def policy_page(slug: str) -> ResponseReturnValue:
    """The active version, the editor, and the history."""
    return _editor()


@bp.post("/<slug>/policy/check", endpoint="policy_check")
def check_policy(slug: str) -> ResponseReturnValue:
    """The editor's check as you type (console.js): every error with its line, or what loads;
    nothing is planned or saved."""
    source = request.form.get("source", "").replace("\r\n", "\n")
    try:
        policy = policy_versions.parse(slug, source)
    except PolicyInvalid as exc:
        found = located(exc.problems, source)
        problems = [{"problem": p, "line": n, "text": t} for p, n, t in found]
        return jsonify(ok=False, problems=problems)
    rules, tests = len(policy.rules), len(policy.tests)
    summary = f"Loads: {rules} rule{'s' * (rules != 1)}"
    summary += f", {tests} test{'s' * (tests != 1)} passing." if tests else "."
    return jsonify(ok=True, problems=[], summary=summary)


@bp.post("/<slug>/policy/plan", endpoint="policy_plan")
def plan_policy(slug: str) -> ResponseReturnValue:
    """Check the edited source (errors inline) and show what applying it would change."""
    source = _source_field()
    try:
        shown = _plan(source)
    except PolicyInvalid as exc:
        return _editor(source, exc.problems, 400)
    return render_template("console/policy_plan.html", shown=shown, source=source)


@bp.post("/<slug>/policy/apply", endpoint="policy_apply")
def apply_policy(slug: str) -> ResponseReturnValue:
    """Store the source as a new version and activate it; checked and planned first, so a guard
    it would break refuses it before anything is written."""
    source = _source_field()
    try:
        shown = _plan(source)
    except PolicyInvalid as exc:
        return _editor(source, exc.problems, 400)
    if shown.plan.refused:
        return render_template("console/policy_plan.html", shown=shown, source=source), 409
    store = get_store()
    created = policy_versions.create(store, slug, source, origin="console", actor=g.admin.actor)
    return _activate(created.version.number)


def _activate(number: int) -> ResponseReturnValue:
    try:
        result = policy_versions.activate(get_store(), g.slug, number, actor=g.admin.actor)
    except GuardRefused as exc:  # the users changed since the plan
        with get_store().read() as db:
            version = policy_versions.get(db, g.admin.account_id, number)
            source = version.source
        shown = _plan(source)
        shown.plan.refused = shown.plan.refused or exc.detail
        return render_template("console/policy_plan.html", shown=shown, source=source), 409
    return redirect(
        url_for("console.policy", applied=number, changed=len(result.changed)), code=303
    )


@bp.get("/<slug>/policy/versions/<int(max=2147483647):number>", endpoint="policy_version")
def version_page(slug: str, number: int) -> ResponseReturnValue:
    """One version: its source, its diff against another (the previous by default), and, when
    asked, the plan of making it active again (rollback)."""
    with get_store().read() as db:
        version = policy_versions.get(db, g.admin.account_id, number)
        against = request.args.get("against", type=int) or (number - 1 if number > 1 else None)
        diff = (
            policy_versions.diff(db, g.admin.account_id, number, against)
            if against and against != number
            else []
        )
        active = policy_versions.active(db, g.admin.account_id)
        numbers = [v.number for v in policy_versions.history(db, g.admin.account_id)]
        doc = policy_versions.describe(version, source=True)
    shown = _plan(doc["source"]) if request.args.get("plan") and not doc["active"] else None
    return render_template(
        "console/policy_version.html",
        version=doc,
        diff=diff,
        against=against,
        active=active.number if active else None,
        numbers=numbers,
        shown=shown,
    )


@bp.post(
    "/<slug>/policy/versions/<int(max=2147483647):number>/activate", endpoint="policy_activate"
)
def activate_version(slug: str, number: int) -> ResponseReturnValue:
    """Make an earlier version active again (rollback): planned and guarded like an apply."""
    return _activate(number)
