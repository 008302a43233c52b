"""Value objects shared by every caller of the engine: Profile in, Decision out, Policy between."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from policies.conditions import Condition

# DESIGN §1: ranked from most to least powerful.
ROLES: tuple[str, ...] = (
    "master_admin",
    "admin",
    "technical_admin",
    "media_library_admin",
    "billing",
    "reports",
    "media_library_user",
)
LEVELS: tuple[str, ...] = ("viewer", "contributor", "editor", "manager")
ALL_ENVIRONMENTS: Literal["all"] = "all"
PRECEDENCES: tuple[str, ...] = ("highest", "first-match")

Precedence = Literal["highest", "first-match"]
Environments = tuple[str, ...] | Literal["all"]


def role_rank(role: str) -> int:
    """Lower is more powerful; unknown roles rank below every known one."""
    return ROLES.index(role) if role in ROLES else len(ROLES)


class Source(enum.StrEnum):
    """Where a profile came from; also the provenance of rows the protocol itself writes."""

    SCIM = "scim"
    SAML = "saml"
    CLI = "cli"
    POLICY = "policy"


@dataclass(frozen=True)
class IdpLink:
    """A SAML identity: the IdP's entity ID and the NameID it asserts for the user."""

    entity_id: str
    name_id: str


@dataclass(frozen=True)
class Profile:
    """A protocol-neutral description of one user, as an IdP sees them.

    `fields` holds account-store attributes to set (absent keys are left as they are);
    `attributes` holds the raw inputs a policy may read: for SAML the attribute names exactly as
    sent, for SCIM attribute paths (`title`, `emails.value`, `urn:...:User:department`);
    `groups` the IdP group names the user belongs to (SCIM memberships; a SAML assertion's
    groups arrive as an attribute). A SAML profile may also carry the stored user's SCIM paths
    and groups; the engine reads them only when the assertion lacks the attribute.
    """

    source: Source
    user_name: str
    external_id: str | None = None
    idp: IdpLink | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class GroupSpec:
    """A policy-managed group membership and the rule that gave it."""

    name: str
    rule: str


@dataclass(frozen=True)
class GrantSpec:
    """A content permission: subject x environment x folder or collection path x level."""

    subject: Literal["user", "group"]
    environment: str
    kind: Literal["folder", "collection"]
    path: str
    level: str
    rule: str
    group: str | None = None


@dataclass(frozen=True)
class Step:
    """One line of a decision's explanation."""

    rule: str
    matched: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    """What a policy says a profile gets, with the rule behind each part and why.

    `environments_rule` names the first matching rule that gave environments (several may have;
    their lists are united). A Decision with `errors` is not `ok`: it carries the least access
    (lowest role, nothing else) and the caller must keep the user's access as it was.
    """

    role: str
    role_rule: str
    environments: Environments
    environments_rule: str
    groups: tuple[GroupSpec, ...] = ()
    grants: tuple[GrantSpec, ...] = ()
    explanation: tuple[Step, ...] = ()
    errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every rule could be evaluated, so the Decision may be applied."""
        return not self.errors


@dataclass(frozen=True)
class Defaults:
    """What a profile gets when no rule decides."""

    role: str = "media_library_user"
    environments: Environments = ()


@dataclass(frozen=True)
class SourceSpec:
    """Where one input is read for one source: candidate names (first present wins), a splitter."""

    names: tuple[str, ...]
    split: str | None = None


@dataclass(frozen=True)
class InputSpec:
    """A canonical or declared input and where each source carries it."""

    name: str
    saml: SourceSpec | None = None
    scim: SourceSpec | None = None
    ignore_case: bool = False
    first_only: bool = False


@dataclass(frozen=True)
class Rule:
    """One rule: a condition (None: always) and what a matching profile gets."""

    name: str
    when: Condition | None = None
    role: str | None = None
    environments: Environments | None = None
    groups: tuple[str, ...] = ()
    grants: tuple[GrantSpec, ...] = ()
    stop: bool = False
    line: int = 0
    description: str = ""


@dataclass(frozen=True)
class Guards:
    """Invariants the service enforces across all users at plan/apply time."""

    keep_at_least_one: tuple[str, ...] = ()


@dataclass(frozen=True)
class Expectation:
    """What a policy test expects; None means not checked."""

    role: str | None = None
    environments: Environments | None = None
    groups: tuple[str, ...] | None = None
    grants: tuple[GrantSpec, ...] | None = None


@dataclass(frozen=True)
class PolicyTest:
    """A profile and what the policy must decide for it, written in the policy file."""

    name: str
    profile: Profile
    expect: Expectation
    line: int = 0


@dataclass(frozen=True)
class Policy:
    """An account's policy: rules over inputs, defaults, group grants, guards and its own tests.

    `inputs` holds the file's declarations merged over the built-in ones it names; `group_grants`
    maps a case-folded group name to the grants that group carries.
    """

    account: str
    defaults: Defaults = Defaults()
    environments: tuple[str, ...] = ()
    precedence: Precedence = "highest"
    inputs: Mapping[str, InputSpec] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    group_grants: Mapping[str, tuple[GrantSpec, ...]] = field(default_factory=dict)
    guards: Guards = Guards()
    tests: tuple[PolicyTest, ...] = ()
    file: str = "<policy>"
