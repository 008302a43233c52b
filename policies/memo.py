"""Evaluating one policy over many profiles: users who look alike to it share one evaluation.

A Decision is a pure function of the values of the inputs the policy's conditions read (the
explanation quotes only those values), so it can be cached under them. Planning a policy over
100,000 users then costs one input resolution per user and one evaluation per distinct
combination, instead of one full evaluation per user.
"""

from __future__ import annotations

from collections.abc import Mapping

from policies.conditions import AllOf, AnyOf, Check, Condition, InputError, Not
from policies.engine import evaluate
from policies.inputs import BUILTIN_INPUTS, Inputs, reader
from policies.model import Decision, IdpLink, Policy, Profile


def read_inputs(policy: Policy) -> tuple[str, ...]:
    """Every input any rule's condition reads, sorted."""
    names: set[str] = set()

    def walk(condition: Condition) -> None:
        if isinstance(condition, Check):
            names.add(condition.input)
        elif isinstance(condition, AllOf | AnyOf):
            for item in condition.items:
                walk(item)
        elif isinstance(condition, Not):
            walk(condition.item)

    for rule in policy.rules:
        if rule.when is not None:
            walk(rule.when)
    return tuple(sorted(names))


def read_attributes(policy: Policy) -> frozenset[str]:
    """Every profile attribute the inputs the policy reads may look at (their SAML names and
    SCIM paths, `groups` also naming the memberships): a profile that lacks the others gets the
    same Decision, so a caller may build only these."""
    names = set(read_inputs(policy))
    if "email_domain" in names:
        names.add("email")
    found: set[str] = set()
    for name in names:
        spec = policy.inputs.get(name) or BUILTIN_INPUTS.get(name)
        for source in (spec.saml, spec.scim) if spec is not None else ():
            if source is not None:
                found.update(source.names)
    return frozenset(found)


Key = tuple[tuple[str, ...], ...]


class Evaluator:
    """`evaluate(policy, profile)`, cached by the values of the inputs the policy reads."""

    def __init__(self, policy: Policy, *, size: int = 10_000) -> None:
        self.policy = policy
        self.names = read_inputs(policy)
        self.attributes = read_attributes(policy)
        self.size = size
        self._cache: dict[Key, Decision] = {}
        self._readers = tuple(reader(policy.inputs, name) for name in self.names)

    def __call__(self, profile: Profile) -> Decision:
        return self.decide(profile)[1]

    def decide(self, profile: Profile) -> tuple[Key | None, Decision]:
        """The Decision and the input values it depends on (None when an input cannot be read:
        evaluate then says why, uncached)."""
        attributes = profile.attributes
        try:
            if type(attributes) is dict or isinstance(attributes, Mapping):
                key = self.key(
                    profile.source, profile.user_name, profile.idp, attributes, profile.groups
                )
            else:  # Inputs says why (for the inputs that read attributes)
                inputs = Inputs(self.policy.inputs, profile)
                key = tuple(inputs(name) for name in self.names)
        except InputError:
            return None, evaluate(self.policy, profile)
        return key, self.decision(key, profile)

    def key(
        self,
        source: object,
        user_name: str,
        idp: IdpLink | None,
        attributes: Mapping[str, object],
        groups: object,
    ) -> Key:
        """The values of the inputs the policy reads, for a profile of these parts (attributes a
        mapping), without building the Profile; raises InputError when one cannot be read."""
        return tuple([read(source, user_name, idp, attributes, groups) for read in self._readers])

    def decision(self, key: Key, profile: Profile) -> Decision:
        """The Decision for `profile`, whose input values are `key`: evaluated once per key."""
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) >= self.size:
                self._cache.clear()
            found = self._cache[key] = evaluate(self.policy, profile)
        return found


def reads_scim_path(policy: Policy, path: str) -> bool:
    """Whether any input the policy's conditions read comes from SCIM path `path` (e.g. groups,
    the user's group memberships): when none does, a change there cannot change a decision."""
    for name in read_inputs(policy):
        spec = policy.inputs.get(name) or BUILTIN_INPUTS.get(name)
        if spec is not None and spec.scim is not None and path in spec.scim.names:
            return True
    return False
