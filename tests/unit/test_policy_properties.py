"""Properties: on arbitrary profiles evaluate never raises and always gives the same Decision."""

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import policies
from policies import IdpLink, PolicyError, Profile, Source, evaluate, load, loads

EXAMPLE = load(Path(policies.__file__).parent / "examples" / "cloudinary.yaml")
NAMES = st.sampled_from(
    [
        "groups",
        "department",
        "title",
        "email",
        "costCenter",
        "emails.value",
        "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter",
    ]
)
HUGE = st.integers(min_value=1, max_value=50_000).map(lambda n: "Engineer, cld-admins" * n)
TEXT = st.one_of(
    st.text(), HUGE, st.sampled_from(["cld-admins", "Marketing", "FIN-1", "a@agency.example"])
)
VALUES = st.one_of(
    st.lists(TEXT, max_size=5).map(tuple),
    st.lists(TEXT, max_size=5),
    TEXT,  # a bare string where a tuple belongs
    st.integers(),
    st.none(),
    st.lists(st.one_of(st.integers(), st.none()), max_size=3).map(tuple),
)
PROFILES = st.builds(
    Profile,
    source=st.sampled_from(list(Source)),
    user_name=st.one_of(TEXT, st.none()),
    idp=st.one_of(st.none(), st.builds(IdpLink, st.text(), st.text())),
    attributes=st.dictionaries(st.one_of(NAMES, st.text()), VALUES, max_size=6),
    groups=st.one_of(st.lists(TEXT, max_size=5).map(tuple), st.just("cld-admins")),
)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(PROFILES)
def test_evaluate_never_raises(profile):
    """Any profile, however malformed, yields a Decision; a bad one carries errors."""
    decision = evaluate(EXAMPLE, profile)
    assert decision.ok or decision.role == "media_library_user"


@SETTINGS
@given(PROFILES)
def test_evaluate_is_deterministic(profile):
    """The same policy and profile give equal Decisions."""
    assert evaluate(EXAMPLE, profile) == evaluate(EXAMPLE, profile)


WORDS = st.sampled_from(
    [
        "name",
        "when",
        "then",
        "role",
        "environments",
        "groups",
        "grants",
        "stop",
        "all",
        "any",
        "not",
        "equals",
        "in",
        "contains",
        "matches",
        "glob",
        "present",
        "absent",
        "ignore_case",
        "department",
        "title",
        "environment",
        "folder",
        "collection",
        "level",
        "saml",
        "scim",
        "from",
        "split",
        "admin",
        "production",
        "viewer",
        "(a+)+",
        ".*",
        "[",
    ]
)
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8), WORDS)
TREES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(WORDS, inner, max_size=4)),
    max_leaves=30,
)
TOP = st.sampled_from(["environments", "inputs", "defaults", "roles", "rules", "grants", "tests"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(TOP, TREES, max_size=5))
def test_loads_only_ever_raises_policy_error(document):
    """Any YAML document either loads or raises PolicyError with problems, never another error."""
    try:
        loads(yaml.safe_dump({"account": "a", **document}))
    except PolicyError as exc:
        assert exc.problems


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_loads_survives_arbitrary_text(text):
    """Arbitrary text, YAML or not, either loads or raises PolicyError."""
    try:
        loads(text)
    except PolicyError as exc:
        assert exc.problems
