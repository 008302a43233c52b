"""evaluate(policy, profile) -> Decision: run the rules in order and combine what matched.

How outputs combine across matching rules:
- role: one primary role. Precedence `highest` keeps the most powerful role any matching rule
  gives (ties: the earlier rule); `first-match` keeps the first matching rule's role.
- environments: the union of every matching rule's list, in the file's declared order; `all`
  from any rule wins (under either role precedence: use `stop: true` to keep later rules from
  adding any). `environments_rule` is the first rule that gave the winning value.
- groups: the union, case-insensitively; each group is credited to the first rule that gave it.
- grants: the union; for the same environment and path the highest level wins (ties: earlier).
  The decided groups' top-level grants are added as group-subject grants of rule `grants`.
- `stop: true` on a matching rule ends evaluation; defaults fill the role and environments when
  no matching rule gives them.

Evaluation never raises. A rule that cannot be evaluated for this profile (an attribute of the
wrong type, a value too long for a pattern) makes the Decision carry `errors` and the least
access (lowest role, no environments, groups or grants); callers must check `ok` and keep the
user's access as it was rather than apply it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.conditions import InputError, evaluate_condition
from policies.inputs import Inputs
from policies.model import (
    ALL_ENVIRONMENTS,
    LEVELS,
    ROLES,
    Decision,
    Environments,
    GrantSpec,
    GroupSpec,
    Policy,
    Profile,
    Rule,
    Step,
    role_rank,
)

DEFAULTS_RULE = "defaults"
GRANTS_RULE = "grants"
ERROR_RULE = "error"


@dataclass
class _Outcome:
    """One rule's evaluation: whether it matched, why, and notes on what it lost."""

    rule: Rule
    matched: bool
    detail: str
    notes: list[str] = field(default_factory=list)


def evaluate(policy: Policy, profile: Profile) -> Decision:
    """Decide role, environments, groups and grants; the same inputs give the same result."""
    inputs = Inputs(policy.inputs, profile)
    outcomes: list[_Outcome] = []
    errors: list[str] = []
    stopped_by: str | None = None
    for rule in policy.rules:
        if stopped_by is not None:
            outcomes.append(_Outcome(rule, False, f"not evaluated: stopped by {stopped_by!r}"))
            continue
        try:
            matched, detail = (
                (True, "always") if rule.when is None else evaluate_condition(rule.when, inputs)
            )
        except InputError as exc:
            matched, detail = False, f"error: {exc}"
            errors.append(f"rule {rule.name!r}: {exc}")
        except Exception as exc:  # evaluate must never raise; the caller keeps access as it was
            matched, detail = False, f"error: {type(exc).__name__}: {exc}"
            errors.append(f"rule {rule.name!r}: unexpected {type(exc).__name__}: {exc}")
        outcomes.append(_Outcome(rule, matched, detail))
        if matched and rule.stop:
            stopped_by = rule.name
    hits = [o for o in outcomes if o.matched]
    role, role_rule = _role(policy, hits)
    environments, environments_rule = _environments(policy, hits)
    groups = _groups(hits)
    grants = _grants(hits) + tuple(
        g for spec in groups for g in policy.group_grants.get(spec.name.casefold(), ())
    )
    explanation = (
        *(_step(o) for o in outcomes),
        _defaults_step(policy, role_rule, environments_rule),
    )
    if errors:
        return Decision(
            ROLES[-1], ERROR_RULE, (), ERROR_RULE, explanation=explanation, errors=tuple(errors)
        )
    return Decision(role, role_rule, environments, environments_rule, groups, grants, explanation)


def _role(policy: Policy, matched: list[_Outcome]) -> tuple[str, str]:
    givers = [o for o in matched if o.rule.role is not None]
    if not givers:
        return policy.defaults.role, DEFAULTS_RULE
    if policy.precedence == "highest":
        winner = min(givers, key=lambda o: role_rank(o.rule.role or ""))
    else:
        winner = givers[0]
    role = winner.rule.role or ""
    for o in givers:
        if o is not winner:
            o.notes.append(
                f"role {o.rule.role} lost to {role} from {winner.rule.name!r} "
                f"(precedence {policy.precedence})"
            )
    return role, winner.rule.name


def _environments(policy: Policy, matched: list[_Outcome]) -> tuple[Environments, str]:
    givers = [o for o in matched if o.rule.environments is not None]
    if not givers:
        return policy.defaults.environments, DEFAULTS_RULE
    everything = next((o for o in givers if o.rule.environments == ALL_ENVIRONMENTS), None)
    if everything is not None:
        for o in givers:
            if o.rule.environments != ALL_ENVIRONMENTS:
                o.notes.append(f"environments subsumed by all from {everything.rule.name!r}")
        return ALL_ENVIRONMENTS, everything.rule.name
    named: list[str] = []
    for o in givers:
        named.extend(e for e in o.rule.environments or () if e not in named)
    order = {name: i for i, name in enumerate(policy.environments)}
    named.sort(key=lambda e: order.get(e, len(order)))
    return tuple(named), givers[0].rule.name


def _groups(matched: list[_Outcome]) -> tuple[GroupSpec, ...]:
    given: dict[str, GroupSpec] = {}
    for o in matched:
        for name in o.rule.groups:
            first = given.setdefault(name.casefold(), GroupSpec(name, o.rule.name))
            if first.rule != o.rule.name:
                o.notes.append(f"group {name!r} already given by {first.rule!r}")
    return tuple(given.values())


def _grants(matched: list[_Outcome]) -> tuple[GrantSpec, ...]:
    best: dict[tuple[str, str, str], tuple[GrantSpec, _Outcome]] = {}
    for o in matched:
        for grant in o.rule.grants:
            key = (grant.environment, grant.kind, grant.path)
            if key not in best:
                best[key] = (grant, o)
                continue
            held, holder = best[key]
            what = f"grant {grant.level} on {grant.environment} {grant.kind} {grant.path!r}"
            if grant.level == held.level:
                o.notes.append(f"{what} already given by {holder.rule.name!r}")
            elif LEVELS.index(grant.level) > LEVELS.index(held.level):
                best[key] = (grant, o)
                holder.notes.append(
                    f"grant {held.level} on {grant.environment} {grant.kind} {grant.path!r} "
                    f"lost to {grant.level} from {o.rule.name!r}"
                )
            else:
                o.notes.append(f"{what} lost to {held.level} from {holder.rule.name!r}")
    return tuple(grant for grant, _ in best.values())


def _step(o: _Outcome) -> Step:
    detail = o.detail
    if o.matched:
        detail += " => " + _gives(o.rule)
    return Step(o.rule.name, o.matched, "; ".join([detail, *o.notes]))


def _gives(rule: Rule) -> str:
    parts = []
    if rule.role is not None:
        parts.append(f"role {rule.role}")
    if rule.environments is not None:
        parts.append(f"environments {_envs(rule.environments)}")
    if rule.groups:
        parts.append(f"groups {', '.join(rule.groups)}")
    for g in rule.grants:
        parts.append(f"grant {g.level} on {g.environment} {g.kind} {g.path!r}")
    if rule.stop:
        parts.append("stop")
    return ", ".join(parts) or "nothing"


def _defaults_step(policy: Policy, role_rule: str, environments_rule: str) -> Step:
    used = []
    if role_rule == DEFAULTS_RULE:
        used.append(f"role {policy.defaults.role}")
    if environments_rule == DEFAULTS_RULE:
        used.append(f"environments {_envs(policy.defaults.environments)}")
    return Step(DEFAULTS_RULE, bool(used), "; ".join(used) or "not used: rules decided")


def _envs(environments: Environments) -> str:
    if environments == ALL_ENVIRONMENTS:
        return "all"
    return ", ".join(environments) or "none"
