"""Loading a policy file: YAML -> validated Policy, or PolicyError naming file, line and column.

Everything is checked before a Policy exists: unknown keys (with a did-you-mean), wrong types,
unknown roles, levels, inputs and operators, environments the file does not declare, duplicate
rule names, unsafe regexes, grants for groups no rule gives, and rules that can never run
because an earlier rule without `when:` has `stop: true`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import MappingProxyType

import yaml

from policies.engine import GRANTS_RULE
from policies.errors import PolicyError, did_you_mean
from policies.inputs import BUILTIN_INPUTS, DERIVED_INPUTS
from policies.model import (
    ALL_ENVIRONMENTS,
    PRECEDENCES,
    ROLES,
    Defaults,
    GrantSpec,
    Guards,
    InputSpec,
    Policy,
    Precedence,
    Rule,
    SourceSpec,
)
from policies.nodes import Reader
from policies.rules import COMBINATORS, MAX_ENVIRONMENT, parse_grants, parse_rules
from policies.scope import Scope
from policies.testing import parse_tests

TOP_KEYS = (
    "version",
    "account",
    "environments",
    "inputs",
    "defaults",
    "roles",
    "rules",
    "grants",
    "guards",
    "tests",
)
INPUT_KEYS = ("saml", "scim", "ignore_case")
MAX_FILE_CHARS = 1_000_000
MAX_DEPTH = 64  # nested lists and mappings: composing and building recurse once per level
_INPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]*")


def load(path: str | os.PathLike[str]) -> Policy:
    """Read and validate a policy file; raises PolicyError naming every problem found."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reader = Reader(str(path))
        reader.at(None, f"cannot read the policy file: {exc}")
        raise PolicyError(reader.problems) from None
    return loads(text, str(path))


def loads(text: str, filename: str = "<policy>") -> Policy:
    """Validate policy text; `filename` only names the file in problems."""
    reader = Reader(filename)
    root = _compose(text, reader)
    policy = Builder(reader).policy(root) if root is not None else None
    if reader.problems or policy is None:
        raise PolicyError(reader.problems)
    return policy


def _compose(text: str, reader: Reader) -> yaml.Node | None:
    if len(text) > MAX_FILE_CHARS:
        reader.at(None, f"the policy file is larger than {MAX_FILE_CHARS} characters")
        return None
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):  # a stream: never recurses
            if isinstance(event, yaml.AliasEvent):
                reader.at(
                    event.start_mark, "YAML aliases (*name) are not supported; repeat the value"
                )
            elif isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    reader.at(event.start_mark, f"lists and mappings nest deeper than {MAX_DEPTH}")
                    return None
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        root = None if reader.problems else yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        reader.at(exc.problem_mark or exc.context_mark, f"invalid YAML: {exc.problem or exc}")
        return None
    except yaml.YAMLError as exc:
        reader.at(None, f"invalid YAML: {exc}")
        return None
    if root is None and not reader.problems:
        reader.at(None, "the policy file is empty")
    return root


class Builder(Scope):
    """Turns a composed document into a Policy, recording problems on the reader."""

    def policy(self, root: yaml.Node) -> Policy | None:
        """The whole file; None when it is not even a mapping."""
        top = self.r.mapping(root, "the policy", TOP_KEYS, required=("account",))
        if top is None:
            return None
        if "version" in top:
            node = top["version"]
            if not (node.tag == "tag:yaml.org,2002:int" and node.value == "1"):
                self.r.problem(node, "version must be 1")
        account = self.r.string(top["account"], "account", 64) if "account" in top else None
        if "environments" in top:
            self.environments = self._declared_environments(top["environments"])
        if "inputs" in top:
            self.inputs = self._inputs(top["inputs"])
        defaults = self._defaults(top["defaults"]) if "defaults" in top else Defaults()
        precedence = self._precedence(top["roles"]) if "roles" in top else "highest"
        rules = parse_rules(self, top["rules"]) if "rules" in top else ()
        group_grants = self._group_grants(top["grants"], rules) if "grants" in top else {}
        guards = self._guards(top["guards"]) if "guards" in top else Guards()
        tests = parse_tests(self, top["tests"]) if "tests" in top else ()
        return Policy(
            account=account or "",
            defaults=defaults,
            environments=self.environments,
            precedence=precedence,
            inputs=MappingProxyType(self.inputs),
            rules=rules,
            group_grants=MappingProxyType(group_grants),
            guards=guards,
            tests=tests,
            file=self.r.file,
        )

    def _declared_environments(self, node: yaml.Node) -> tuple[str, ...]:
        items = self.r.strings(node, "environments", allow_empty=True, max_length=MAX_ENVIRONMENT)
        names: list[str] = []
        for name, item in items or ():
            if name == ALL_ENVIRONMENTS:
                self.r.problem(item, "'all' cannot name an environment: it means every one")
            elif name in names:
                self.r.problem(item, f"environment {name!r} is declared twice")
            else:
                names.append(name)
        return tuple(names)

    def _inputs(self, node: yaml.Node) -> dict[str, InputSpec]:
        specs: dict[str, InputSpec] = {}
        for key_node, name, value in self.r.pairs(node, "inputs") or ():
            if name in DERIVED_INPUTS:
                self.r.problem(
                    key_node, f"input {name!r} comes from the profile and cannot be mapped"
                )
                continue
            if name in COMBINATORS or not _INPUT_NAME.fullmatch(name):
                self.r.problem(key_node, f"{name!r} cannot name an input")
                continue
            m = self.r.mapping(value, f"input {name!r}", INPUT_KEYS)
            if m is None:
                continue
            base = BUILTIN_INPUTS.get(name, InputSpec(name))
            if not (m.keys() & {"saml", "scim"}):
                self.r.problem(value, f"input {name!r} needs saml: or scim:")
            saml = self._source(m["saml"], name, "saml") if "saml" in m else base.saml
            scim = self._source(m["scim"], name, "scim") if "scim" in m else base.scim
            fold = self.r.boolean(m["ignore_case"], "ignore_case") if "ignore_case" in m else None
            specs[name] = InputSpec(
                name, saml, scim, base.ignore_case if fold is None else fold, base.first_only
            )
        return specs

    def _source(self, node: yaml.Node, name: str, source: str) -> SourceSpec | None:
        what = f"{source}: of input {name!r}"
        split = None
        if isinstance(node, yaml.MappingNode):
            m = self.r.mapping(node, what, ("from", "split"), required=("from",))
            if m is None or "from" not in m:
                return None
            split = self.r.string(m["split"], "split", 8) if "split" in m else None
            node = m["from"]
        names = self.r.strings(node, what, single=True)
        return None if names is None else SourceSpec(tuple(n for n, _ in names), split)

    def _defaults(self, node: yaml.Node) -> Defaults:
        m = self.r.mapping(node, "defaults", ("role", "environments")) or {}
        role = self.r.choice(m["role"], "defaults", ROLES, "role") if "role" in m else None
        envs = None
        if "environments" in m:
            envs = self.environments_value(m["environments"], "environments", allow_empty=True)
        return Defaults(role or Defaults.role, () if envs is None else envs)

    def _precedence(self, node: yaml.Node) -> Precedence:
        m = self.r.mapping(node, "roles", ("precedence",)) or {}
        if (
            "precedence" in m
            and self.r.choice(m["precedence"], "roles", PRECEDENCES, "precedence") == "first-match"
        ):
            return "first-match"
        return "highest"

    def _group_grants(
        self, node: yaml.Node, rules: tuple[Rule, ...]
    ) -> dict[str, tuple[GrantSpec, ...]]:
        given: dict[str, str] = {}
        for group in (g for rule in rules for g in rule.groups):
            given.setdefault(group.casefold(), group)
        out: dict[str, tuple[GrantSpec, ...]] = {}
        for key_node, group, value in self.r.pairs(node, "grants") or ():
            if group.casefold() not in given:
                hint = did_you_mean(group, given.values())
                self.r.problem(key_node, f"grants for group {group!r}, which no rule gives{hint}")
            elif group.casefold() in out:
                self.r.problem(key_node, f"grants for group {group!r} are given twice")
            else:
                out[group.casefold()] = parse_grants(
                    self,
                    value,
                    f"grants of group {group!r}",
                    rule=GRANTS_RULE,
                    group=given[group.casefold()],
                )
        return out

    def _guards(self, node: yaml.Node) -> Guards:
        m = self.r.mapping(node, "guards", ("keep_at_least_one",)) or {}
        if "keep_at_least_one" not in m:
            return Guards()
        what = "keep_at_least_one"
        found = self.r.strings(m[what], what, single=True, allow_empty=True) or []
        roles: list[str] = []
        for role, item in found:
            if role not in ROLES:
                self.r.problem(item, f"unknown role {role!r} in guards{did_you_mean(role, ROLES)}")
            elif role not in roles:
                roles.append(role)
        return Guards(tuple(roles))
