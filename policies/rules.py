"""Parsing the rules of a policy file: conditions, outputs and grants, checked as they are read."""

from __future__ import annotations

from typing import Literal

import yaml

from policies.conditions import OPERATORS, AllOf, AnyOf, Condition, Not, make_check
from policies.engine import DEFAULTS_RULE, ERROR_RULE, GRANTS_RULE
from policies.errors import did_you_mean
from policies.inputs import CANONICAL_INPUTS, default_ignore_case
from policies.model import LEVELS, ROLES, GrantSpec, Rule
from policies.scope import Scope

RULE_KEYS = ("name", "description", "when", "then")
THEN_KEYS = ("role", "environments", "groups", "grants", "stop")
GRANT_KEYS = ("environment", "folder", "collection", "level")
COMBINATORS = ("all", "any", "not")
RESERVED_RULES = (DEFAULTS_RULE, GRANTS_RULE, ERROR_RULE)
# Store column sizes: provenance "policy:<rule>" 160, environment 64, group 256, path 1024.
MAX_RULE_NAME, MAX_ENVIRONMENT, MAX_GROUP, MAX_PATH = 128, 64, 256, 1024


def parse_rules(b: Scope, node: yaml.Node) -> tuple[Rule, ...]:
    """The `rules:` list, in order; names are unique and every rule can run."""
    rules: list[Rule] = []
    lines: dict[str, int] = {}
    blocker: Rule | None = None
    for item in b.r.sequence(node, "rules") or ():
        m = b.r.mapping(item, _rule_label(item), RULE_KEYS, required=("name", "then"))
        if m is None or "name" not in m:
            continue
        name = b.r.string(m["name"], "a rule name", MAX_RULE_NAME)
        if name is None:
            continue
        if name in RESERVED_RULES:
            b.r.problem(m["name"], f"{name!r} is reserved and cannot name a rule")
        elif name in lines:
            b.r.problem(m["name"], f"duplicate rule name {name!r} (first at line {lines[name]})")
        lines.setdefault(name, item.start_mark.line + 1)
        if blocker is not None:
            b.r.problem(
                m["name"],
                f"rule {name!r} can never run: rule {blocker.name!r} (line {blocker.line}) "
                "has no when: and stop: true",
            )
        rule = _rule(b, name, m, item.start_mark.line + 1)
        if rule is not None:
            rules.append(rule)
            if rule.when is None and rule.stop and blocker is None:
                blocker = rule
    return tuple(rules)


def _rule_label(item: yaml.Node) -> str:
    """`rule 'x'` when the rule has a readable name, for messages about its other keys."""
    if isinstance(item, yaml.MappingNode):
        for key, value in item.value:
            if key.value == "name" and isinstance(value, yaml.ScalarNode) and value.value:
                return f"rule {value.value!r}"
    return "a rule"


def _rule(b: Scope, name: str, m: dict[str, yaml.Node], line: int) -> Rule | None:
    what = f"rule {name!r}"
    when = None
    if "when" in m:  # a broken condition never matches, so it blocks no later rule
        when = parse_condition(b, m["when"], f"when: of {what}") or AnyOf(())
    then = b.r.mapping(m["then"], f"then: of {what}", THEN_KEYS) if "then" in m else None
    if then is None:
        return None
    if not then:
        b.r.problem(m["then"], f"then: of {what} gives nothing")
    role = b.r.choice(then["role"], what, ROLES, "role") if "role" in then else None
    envs = None
    if "environments" in then:
        envs = b.environments_value(then["environments"], "environments", allow_empty=False)
    groups: list[str] = []
    found = []
    if "groups" in then:
        found = b.r.strings(then["groups"], "groups", allow_empty=True, max_length=MAX_GROUP) or []
    for group, item in found:
        if group.casefold() in (g.casefold() for g in groups):
            b.r.problem(item, f"group {group!r} is listed twice")
        else:
            groups.append(group)
    grants = (
        parse_grants(b, then["grants"], f"grants of {what}", rule=name) if "grants" in then else ()
    )
    stop = b.r.boolean(then["stop"], "stop") if "stop" in then else False
    about = b.r.string(m["description"], "description", 4000) if "description" in m else None
    return Rule(name, when, role, envs, tuple(groups), grants, bool(stop), line, about or "")


def parse_grants(
    b: Scope, node: yaml.Node, what: str, *, rule: str, group: str | None = None
) -> tuple[GrantSpec, ...]:
    """A list of grants for a user (or, with `group`, for that group)."""
    out: list[GrantSpec] = []
    for item in b.r.sequence(node, what) or ():
        grant = parse_grant(b, item, what, rule=rule, group=group)
        if grant is None:
            continue
        if any(
            (g.environment, g.kind, g.path) == (grant.environment, grant.kind, grant.path)
            for g in out
        ):
            b.r.problem(
                item,
                f"a second grant on {grant.environment} {grant.kind} {grant.path!r} in {what}",
            )
            continue
        out.append(grant)
    return tuple(out)


def parse_grant(
    b: Scope,
    node: yaml.Node,
    what: str,
    *,
    rule: str,
    group: str | None,
    keys: tuple[str, ...] = GRANT_KEYS,
) -> GrantSpec | None:
    """One {environment, folder|collection, level} grant."""
    m = b.r.mapping(node, f"a grant in {what}", keys, required=("environment", "level"))
    if m is None or not {"environment", "level"} <= m.keys():
        return None
    kinds = [k for k in ("folder", "collection") if k in m]
    if len(kinds) != 1:
        b.r.problem(node, f"a grant in {what} needs exactly one of folder: or collection:")
        return None
    env = b.r.string(m["environment"], "environment", MAX_ENVIRONMENT)
    if env is not None and env not in b.environments:
        hint = did_you_mean(env, b.environments)
        b.r.problem(
            m["environment"], f"environment {env!r} is not one of the declared environments{hint}"
        )
        env = None
    path = b.r.string(m[kinds[0]], kinds[0], MAX_PATH)
    level = b.r.choice(m["level"], what, LEVELS, "level")
    if env is None or path is None or level is None:
        return None
    kind: Literal["folder", "collection"] = "folder" if kinds[0] == "folder" else "collection"
    subject: Literal["user", "group"] = "user" if group is None else "group"
    return GrantSpec(subject, env, kind, path, level, rule, group)


def parse_condition(b: Scope, node: yaml.Node, what: str) -> Condition | None:
    """A `when:` mapping; several keys mean all of them must hold."""
    pairs = b.r.pairs(node, what)
    if pairs is None:
        return None
    if not pairs:
        b.r.problem(node, f"{what} must not be empty")
        return None
    items: list[Condition | None] = []
    for key_node, key, value in pairs:
        if key in ("all", "any"):
            subs = b.r.sequence(value, f"{key}:")
            if subs is not None and not subs:
                b.r.problem(value, f"{key}: needs at least one condition")
            parts = [parse_condition(b, s, f"a condition in {key}:") for s in subs or ()]
            ok = subs and all(p is not None for p in parts)
            group = AllOf if key == "all" else AnyOf
            items.append(group(tuple(p for p in parts if p is not None)) if ok else None)
        elif key == "not":
            sub = parse_condition(b, value, "not:")
            items.append(None if sub is None else Not(sub))
        else:
            items.append(_check(b, key_node, key, value))
    if any(i is None for i in items):
        return None
    conditions = tuple(i for i in items if i is not None)
    return conditions[0] if len(conditions) == 1 else AllOf(conditions)


def _check(b: Scope, key_node: yaml.Node, name: str, node: yaml.Node) -> Condition | None:
    known = (*CANONICAL_INPUTS, *b.inputs)
    if name not in known:
        hint = did_you_mean(name, (*known, *COMBINATORS))
        b.r.problem(key_node, f"unknown input {name!r}{hint} (declare custom inputs under inputs:)")
        return None
    m = b.r.mapping(node, f"the check on {name}", (*OPERATORS, "ignore_case"))
    if m is None:
        return None
    ops = [op for op in OPERATORS if op in m]
    if len(ops) != 1:
        b.r.problem(node, f"the check on {name} needs exactly one of: {', '.join(OPERATORS)}")
        return None
    op, operand = ops[0], m[ops[0]]
    fold = b.r.boolean(m["ignore_case"], "ignore_case") if "ignore_case" in m else None
    if op in ("present", "absent"):
        flag = b.r.boolean(operand, f"{op}:")
        if flag is False:
            b.r.problem(operand, f"{op}: takes only true")
        if not flag:
            return None
        operands: tuple[str, ...] = ()
    else:
        values = b.r.strings(operand, f"{op}:", single=op != "in")
        if values is None:
            return None
        operands = tuple(v for v, _ in values)
    if fold is None:
        fold = default_ignore_case(name, b.inputs)
    try:
        return make_check(name, op, operands, fold)
    except ValueError as exc:
        b.r.problem(operand, str(exc))
        return None
