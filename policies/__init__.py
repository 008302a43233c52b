"""The policy engine: pure functions from a neutral Profile to an explainable Decision.

Imports nothing of ours and does no I/O beyond reading a policy file, so it can be tested alone.
"""

from policies.model import (
    ALL_ENVIRONMENTS,
    LEVELS,
    ROLES,
    Decision,
    Defaults,
    GrantSpec,
    GroupSpec,
    IdpLink,
    Policy,
    Profile,
    Source,
    Step,
    evaluate,
    role_rank,
)

__all__ = [
    "ALL_ENVIRONMENTS",
    "LEVELS",
    "ROLES",
    "Decision",
    "Defaults",
    "GrantSpec",
    "GroupSpec",
    "IdpLink",
    "Policy",
    "Profile",
    "Source",
    "Step",
    "evaluate",
    "role_rank",
]
