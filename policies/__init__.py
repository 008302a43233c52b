"""The policy engine: pure functions from a neutral Profile to an explainable Decision.

Imports nothing of ours and does no I/O beyond reading a policy file, so it can be tested alone.
`load`/`loads` validate a policy file (PolicyError names file:line:col of every problem),
`evaluate` decides, `run_tests` runs the file's own tests.
"""

from policies.conditions import MAX_MATCH_LENGTH
from policies.engine import evaluate
from policies.errors import PolicyError, Problem
from policies.inputs import BUILTIN_INPUTS, CANONICAL_INPUTS
from policies.loader import load, loads
from policies.memo import Evaluator, reads_scim_path
from policies.model import (
    ALL_ENVIRONMENTS,
    LEVELS,
    ROLES,
    Decision,
    Defaults,
    Expectation,
    GrantSpec,
    GroupSpec,
    Guards,
    IdpLink,
    InputSpec,
    Policy,
    PolicyTest,
    Profile,
    Rule,
    Source,
    SourceSpec,
    Step,
    role_rank,
)
from policies.testing import TestResult, run_tests

__all__ = [
    "ALL_ENVIRONMENTS",
    "BUILTIN_INPUTS",
    "CANONICAL_INPUTS",
    "LEVELS",
    "MAX_MATCH_LENGTH",
    "ROLES",
    "Decision",
    "Defaults",
    "Evaluator",
    "Expectation",
    "GrantSpec",
    "GroupSpec",
    "Guards",
    "IdpLink",
    "InputSpec",
    "Policy",
    "PolicyError",
    "PolicyTest",
    "Problem",
    "Profile",
    "Rule",
    "Source",
    "SourceSpec",
    "Step",
    "TestResult",
    "evaluate",
    "load",
    "loads",
    "reads_scim_path",
    "role_rank",
    "run_tests",
]
