"""Value objects shared by every caller of the engine: Profile in, Decision out."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

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
    `attributes` holds the raw inputs a policy may read (SAML attribute or SCIM path -> values);
    `groups` the IdP group names the user belongs to.
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
    """What a policy says a profile gets, with the rule behind each part and why."""

    role: str
    role_rule: str
    environments: tuple[str, ...] | Literal["all"]
    environments_rule: str
    groups: tuple[GroupSpec, ...] = ()
    grants: tuple[GrantSpec, ...] = ()
    explanation: tuple[Step, ...] = ()


@dataclass(frozen=True)
class Defaults:
    """What a profile gets when no rule decides."""

    role: str = "media_library_user"
    environments: tuple[str, ...] | Literal["all"] = ()


@dataclass(frozen=True)
class Policy:
    """An account's policy. Until rule files land, only the defaults."""

    account: str
    defaults: Defaults = Defaults()


def evaluate(policy: Policy, profile: Profile) -> Decision:
    """Decide role, environments, groups and grants; the same inputs give the same result."""
    defaults = policy.defaults
    return Decision(
        role=defaults.role,
        role_rule="defaults",
        environments=defaults.environments,
        environments_rule="defaults",
        explanation=(
            Step("defaults", True, f"role {defaults.role}; environments {_envs(defaults)}"),
        ),
    )


def _envs(defaults: Defaults) -> str:
    if defaults.environments == ALL_ENVIRONMENTS:
        return "all"
    return ", ".join(defaults.environments) or "none"
