"""The caching evaluator gives exactly what evaluate gives, sharing work between look-alikes."""

from hypothesis import given, settings
from hypothesis import strategies as st

from policies import Evaluator, Profile, Source, evaluate, loads

POLICY = """
account: acme
environments: [production, staging]
defaults: {role: media_library_user, environments: [production]}
rules:
  - name: admins
    when: {groups: {contains: admins}}
    then: {role: admin, environments: all}
  - name: sales
    when: {all: [{department: {equals: Sales}}, {email_domain: {in: [acme.example]}}]}
    then: {groups: [Sales], environments: [staging]}
  - name: patterned
    when: {title: {matches: "Head of .*"}}
    then: {role: technical_admin}
"""


def profile(name, groups=(), department=None, title=None):
    attributes = {}
    if department:
        attributes["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"] = (
            department,
        )
    if title is not None:
        attributes["title"] = (title,)
    return Profile(source=Source.SCIM, user_name=name, groups=tuple(groups), attributes=attributes)


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(["a@acme.example", "b@acme.example", "c@other.example", "plain"]),
    groups=st.lists(st.sampled_from(["admins", "Admins", "staff"]), max_size=2),
    department=st.sampled_from([None, "Sales", "sales", "R&D"]),
    title=st.one_of(st.none(), st.sampled_from(["Head of Sales", "Engineer"]), st.text(max_size=5)),
)
def test_cached_decisions_equal_fresh_ones(name, groups, department, title):
    """Whatever the profile, the cached evaluator returns evaluate's own Decision."""
    policy = loads(POLICY)
    cached = Evaluator(policy)
    p = profile(name, groups, department, title)
    assert cached(p) == evaluate(policy, p)
    assert cached(p) == evaluate(policy, p)  # and again, from the cache


def test_look_alikes_share_one_evaluation():
    """Profiles equal in every input the policy reads are evaluated once."""
    cached = Evaluator(loads(POLICY))
    for i in range(100):
        cached(profile(f"user{i}@acme.example", ["staff"], "Sales"))
    assert len(cached._cache) == 1
    assert cached.names == ("department", "email_domain", "groups", "title")


def test_refusals_stay_refusals():
    """A profile the policy cannot evaluate is refused the same, cached or not."""
    policy = loads(POLICY)
    cached = Evaluator(policy)
    bad = profile("x@acme.example", title="Head of " + "x" * 5000)
    assert not cached(bad).ok and cached(bad) == evaluate(policy, bad)


def test_reads_scim_path_sees_declared_inputs():
    """A policy reads SCIM `groups` through the built-in input or any declared one mapped to it."""
    from policies import reads_scim_path

    assert reads_scim_path(loads(POLICY), "groups")
    no_groups = loads(
        POLICY.replace("when: {groups: {contains: admins}}", "when: {title: {equals: Boss}}")
    )
    assert not reads_scim_path(no_groups, "groups")
    declared = loads(
        "account: acme\nenvironments: [production]\ninputs:\n  teams: {scim: groups}\n"
        "rules:\n  - name: t\n    when: {teams: {contains: ops}}\n    then: {role: admin}\n"
    )
    assert reads_scim_path(declared, "groups")


ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
ATTRIBUTES = [  # read by POLICY's inputs (SAML names and SCIM paths) or not
    "groups",
    "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
    "department",
    f"{ENT}:department",
    "title",
    "email",
    "emails.value",
    "mail",
    "phoneNumbers.value",
    "nickName",
    f"{ENT}:costCenter",
]


@settings(max_examples=300, deadline=None)
@given(
    source=st.sampled_from([Source.SCIM, Source.SAML]),
    name=st.sampled_from(["a@acme.example", "plain"]),
    groups=st.lists(st.sampled_from(["admins", "staff"]), max_size=2),
    attributes=st.dictionaries(
        st.sampled_from(ATTRIBUTES),
        st.one_of(
            st.lists(
                st.sampled_from(["admins", "Sales", "Head of Sales", " ", "b@acme.example"]),
                max_size=2,
            ).map(tuple),
            st.just("not a list"),
        ),
    ),
)
def test_a_profile_of_only_the_attributes_read_gets_the_same_decision(
    source, name, groups, attributes
):
    """Planning builds only read_attributes(policy): the Decision must not change."""
    from policies.memo import read_attributes

    policy = loads(POLICY)
    read = read_attributes(policy)
    assert "phoneNumbers.value" not in read and "nickName" not in read and "title" in read
    full = Profile(source=source, user_name=name, groups=tuple(groups), attributes=attributes)
    only = Profile(
        source=source,
        user_name=name,
        groups=tuple(groups),
        attributes={k: v for k, v in attributes.items() if k in read},
    )
    assert evaluate(policy, only) == evaluate(policy, full)
