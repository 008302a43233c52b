"""Properties: on arbitrary profiles evaluate never raises and always gives the same Decision."""

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import policies
from policies import GroupSpec, IdpLink, PolicyError, Profile, Source, evaluate, load, loads
from policies.model import ROLES

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


GROUP_NAMES = ["staff", "Admins", "admins", "ops", "contractors"]
ENVIRONMENT_NAMES = ["production", "staging", "development"]  # declared; not alphabetical
RULES = st.lists(
    st.fixed_dictionaries(
        {
            "group": st.sampled_from(GROUP_NAMES),
            "role": st.one_of(st.none(), st.sampled_from(ROLES)),
            "environments": st.one_of(
                st.none(),
                st.just("all"),
                st.lists(st.sampled_from(ENVIRONMENT_NAMES), min_size=1, max_size=3, unique=True),
            ),
            "groups": st.lists(
                st.sampled_from(["Brand", "brand", "Ops"]), max_size=2, unique_by=str.casefold
            ),
            "stop": st.booleans(),
        }
    ).filter(lambda r: r["role"] or r["environments"] or r["groups"] or r["stop"]),
    min_size=1,
    max_size=5,
)


def _policy_of(rules, precedence):
    return {
        "account": "a",
        "environments": ENVIRONMENT_NAMES,
        "roles": {"precedence": precedence},
        "defaults": {"role": "reports", "environments": ["development"]},
        "rules": [
            {
                "name": f"r{i}",
                "when": {"groups": {"contains": r["group"]}},
                "then": {k: v for k, v in r.items() if k != "group" and v not in (None, [], False)},
            }
            for i, r in enumerate(rules)
        ],
    }


def _expected(rules, precedence, member_of):
    """The Decision DESIGN describes, computed independently of the engine."""
    hits = []
    for i, r in enumerate(rules):
        if r["group"].casefold() in {g.casefold() for g in member_of}:
            hits.append((f"r{i}", r))
            if r["stop"]:
                break
    givers = [(n, r) for n, r in hits if r["role"]]
    if not givers:
        role = ("reports", "defaults")
    elif precedence == "first-match":
        role = (givers[0][1]["role"], givers[0][0])
    else:
        best = min(givers, key=lambda g: ROLES.index(g[1]["role"]))  # min keeps the earliest
        role = (best[1]["role"], best[0])
    envs = [(n, r["environments"]) for n, r in hits if r["environments"]]
    if not envs:
        environments = (("development",), "defaults")
    elif any(e == "all" for _, e in envs):
        environments = ("all", next(n for n, e in envs if e == "all"))
    else:
        named = {e for _, es in envs for e in es}
        environments = (tuple(e for e in ENVIRONMENT_NAMES if e in named), envs[0][0])
    groups = {}
    for n, r in hits:
        for g in r["groups"]:
            groups.setdefault(g.casefold(), GroupSpec(g, n))
    return role, environments, tuple(groups.values())


@settings(max_examples=300, deadline=None)
@given(
    rules=RULES,
    precedence=st.sampled_from(["highest", "first-match"]),
    member_of=st.lists(st.sampled_from([*GROUP_NAMES, "STAFF", "nobody"]), max_size=4),
)
def test_evaluate_gives_the_decision_the_design_describes(rules, precedence, member_of):
    """Role precedence, stop, environments in declared order ('all' wins), groups united
    case-insensitively and defaults: the engine agrees with an independent statement of them."""
    policy = loads(yaml.safe_dump(_policy_of(rules, precedence)))
    decision = evaluate(policy, Profile(Source.SCIM, "ann", groups=tuple(member_of)))
    role, environments, groups = _expected(rules, precedence, member_of)
    assert decision.ok
    assert (decision.role, decision.role_rule) == role
    assert (decision.environments, decision.environments_rule) == environments
    assert decision.groups == groups


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


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1))
def test_any_glob_loads_and_matches_itself_without_wildcards(pattern):
    """Any glob loads (fnmatch escapes what it does not translate: `[`, `]`, `\\`, `^`...),
    and one without wildcards or brackets matches exactly its own text."""
    rule = {"name": "r", "when": {"title": {"glob": pattern}}, "then": {"role": "admin"}}
    policy = loads(yaml.safe_dump({"account": "a", "rules": [rule]}))
    decision = evaluate(policy, Profile(Source.SCIM, "ann", attributes={"title": (pattern,)}))
    if not set(pattern) & set("*?["):
        assert decision.role == "admin", decision
