"""Policy tests as code: the `tests:` section of a policy file, parsed and run by run_tests."""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from policies.engine import evaluate
from policies.model import (
    ALL_ENVIRONMENTS,
    ROLES,
    Decision,
    Environments,
    Expectation,
    GrantSpec,
    IdpLink,
    Policy,
    PolicyTest,
    Profile,
    Source,
)
from policies.rules import parse_grant
from policies.scope import Scope

TEST_KEYS = ("name", "description", "profile", "expect")
PROFILE_KEYS = ("source", "userName", "externalId", "idp", "attributes", "groups")
EXPECT_KEYS = ("role", "environments", "groups", "grants")


@dataclass(frozen=True)
class TestResult:
    """The outcome of one policy test, with the Decision it was checked against."""

    __test__ = False  # not a pytest test class

    name: str
    passed: bool
    failures: tuple[str, ...]
    decision: Decision
    file: str
    line: int

    def __str__(self) -> str:
        head = f"{self.file}:{self.line}: test {self.name!r} "
        return head + ("passed" if self.passed else "FAILED: " + "; ".join(self.failures))


def run_tests(policy: Policy) -> list[TestResult]:
    """Evaluate every test profile of the policy and compare with what it expects."""
    results = []
    for case in policy.tests:
        decision = evaluate(policy, case.profile)
        failures = _compare(case.expect, decision)
        results.append(
            TestResult(case.name, not failures, tuple(failures), decision, policy.file, case.line)
        )
    return results


def _compare(expect: Expectation, got: Decision) -> list[str]:
    if not got.ok:
        return ["evaluation failed: " + "; ".join(got.errors)]
    failures = []
    if expect.role is not None and expect.role != got.role:
        failures.append(f"role: expected {expect.role}, got {got.role} (from {got.role_rule!r})")
    if expect.environments is not None and _envs(expect.environments) != _envs(got.environments):
        failures.append(
            f"environments: expected {_show_envs(expect.environments)}, "
            f"got {_show_envs(got.environments)} (from {got.environments_rule!r})"
        )
    if expect.groups is not None:
        want = sorted(expect.groups, key=str.casefold)
        have = sorted((g.name for g in got.groups), key=str.casefold)
        if [g.casefold() for g in want] != [g.casefold() for g in have]:
            failures.append(f"groups: expected {want}, got {have}")
    if expect.grants is not None:
        want_keys = {_grant_key(g): g for g in expect.grants}
        have_keys = {_grant_key(g): g for g in got.grants}
        missing = [_show_grant(g) for k, g in want_keys.items() if k not in have_keys]
        extra = [_show_grant(g) for k, g in have_keys.items() if k not in want_keys]
        if missing:
            failures.append("grants missing: " + ", ".join(missing))
        if extra:
            failures.append("grants not expected: " + ", ".join(extra))
    return failures


def _envs(environments: Environments) -> frozenset[str] | str:
    return environments if environments == ALL_ENVIRONMENTS else frozenset(environments)


def _show_envs(environments: Environments) -> str:
    return environments if environments == ALL_ENVIRONMENTS else ", ".join(environments) or "none"


def _grant_key(g: GrantSpec) -> tuple[str, str, str, str, str]:
    return ((g.group or "").casefold(), g.environment, g.kind, g.path, g.level)


def _show_grant(g: GrantSpec) -> str:
    owner = f"group {g.group} " if g.group else ""
    return f"{owner}{g.level} on {g.environment} {g.kind} {g.path!r}"


def parse_tests(b: Scope, node: yaml.Node) -> tuple[PolicyTest, ...]:
    """The `tests:` section: a list of {name, profile, expect}."""
    tests: list[PolicyTest] = []
    lines: dict[str, int] = {}
    for item in b.r.sequence(node, "tests") or ():
        m = b.r.mapping(item, "a test", TEST_KEYS, required=("name", "profile", "expect"))
        if m is None or not {"name", "profile", "expect"} <= m.keys():
            continue
        name = b.r.string(m["name"], "a test name", 200)
        if name is None:
            continue
        if name in lines:
            b.r.problem(m["name"], f"duplicate test name {name!r} (first at line {lines[name]})")
        lines.setdefault(name, item.start_mark.line + 1)
        if "description" in m:
            b.r.string(m["description"], "description", 4000)
        profile = _profile(b, m["profile"], f"test {name!r}")
        expect = _expect(b, m["expect"], f"test {name!r}")
        if profile is not None and expect is not None:
            tests.append(PolicyTest(name, profile, expect, item.start_mark.line + 1))
    return tuple(tests)


def _profile(b: Scope, node: yaml.Node, what: str) -> Profile | None:
    m = b.r.mapping(node, f"the profile of {what}", PROFILE_KEYS, required=("userName",))
    if m is None or "userName" not in m:
        return None
    user_name = b.r.string(m["userName"], "userName", 256)
    source = Source.SCIM
    if "source" in m:
        chosen = b.r.choice(m["source"], f"the profile of {what}", [s.value for s in Source])
        source = Source(chosen) if chosen else source
    external_id = b.r.string(m["externalId"], "externalId", 256) if "externalId" in m else None
    entity_id = b.r.string(m["idp"], "idp", 1024) if "idp" in m else None
    attributes: dict[str, tuple[str, ...]] = {}
    pairs = b.r.pairs(m["attributes"], "attributes") if "attributes" in m else []
    for _, key, value in pairs or ():
        values = b.r.strings(value, f"attribute {key!r}", single=True, allow_empty=True)
        attributes[key] = tuple(v for v, _ in values or ())
    groups = b.r.strings(m["groups"], "groups", allow_empty=True) if "groups" in m else []
    if user_name is None:
        return None
    return Profile(
        source=source,
        user_name=user_name,
        external_id=external_id,
        idp=IdpLink(entity_id, user_name) if entity_id else None,
        attributes=attributes,
        groups=tuple(g for g, _ in groups or ()),
    )


def _expect(b: Scope, node: yaml.Node, what: str) -> Expectation | None:
    m = b.r.mapping(node, f"expect: of {what}", EXPECT_KEYS)
    if m is None:
        return None
    if not m:
        b.r.problem(node, f"expect: of {what} checks nothing")
    role = b.r.choice(m["role"], f"expect: of {what}", ROLES, "role") if "role" in m else None
    envs = None
    if "environments" in m:
        envs = b.environments_value(m["environments"], "environments", allow_empty=True)
    groups = None
    if "groups" in m:
        found = b.r.strings(m["groups"], "groups", allow_empty=True)
        groups = tuple(g for g, _ in found or ())
    grants = None
    if "grants" in m:
        found_grants = []
        for item in b.r.sequence(m["grants"], "grants") or ():
            group = None
            if isinstance(item, yaml.MappingNode):
                group = next((v for k, v in item.value if k.value == "group"), None)
            name = b.r.string(group, "group", 256) if group is not None else None
            keys = ("environment", "folder", "collection", "level", "group")
            grant = parse_grant(b, item, f"expect: of {what}", rule="", group=name, keys=keys)
            if grant is not None:
                found_grants.append(grant)
        grants = tuple(found_grants)
    return Expectation(role, envs, groups, grants)
