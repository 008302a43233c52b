"""Inputs: where each canonical or declared input is read for SAML and SCIM profiles."""

import textwrap

from policies import IdpLink, Profile, Source, evaluate, loads

ENTRA_GROUPS = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"


def holds(when: str, profile: Profile, inputs: str = "") -> bool:
    """Whether a one-rule policy with these inputs gives its role to the profile."""
    text = textwrap.dedent(inputs) + textwrap.dedent(
        f"""\
        account: acme
        rules:
          - name: r
            when: {when}
            then: {{role: admin}}
        """
    )
    decision = evaluate(loads(text, "p.yaml"), profile)
    assert decision.ok, decision.errors
    return decision.role == "admin"


def saml(**attributes: tuple[str, ...]) -> Profile:
    return Profile(Source.SAML, "ann@acme.example", attributes=attributes)


def saml_attrs(attributes: dict[str, tuple[str, ...]], user_name: str = "ann") -> Profile:
    return Profile(Source.SAML, user_name, attributes=attributes)


def test_saml_groups_default_reads_the_entra_claim():
    """Without an inputs section, Entra's groups claim feeds the groups input."""
    assert holds("{groups: {contains: admins}}", saml_attrs({ENTRA_GROUPS: ("admins",)}))


def test_first_present_candidate_wins():
    """When `groups` is present the later Entra claim is not read."""
    profile = saml_attrs({"groups": ("staff",), ENTRA_GROUPS: ("admins",)})
    assert not holds("{groups: {contains: admins}}", profile)


def test_split_handles_okta_comma_joined_values():
    """split: ',' turns one comma-joined value into stripped group names."""
    inputs = """\
        inputs:
          groups:
            saml: {from: groups, split: ","}
        """
    assert holds("{groups: {contains: admins}}", saml(groups=("staff, admins",)), inputs)


def test_without_split_a_joined_value_is_one_group():
    """The built-in groups mapping does not split, so group names may contain commas."""
    assert not holds("{groups: {contains: admins}}", saml(groups=("staff,admins",)))


def test_scim_department_reads_the_enterprise_extension():
    """SCIM department comes from the enterprise extension path by default."""
    path = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"
    profile = Profile(Source.SCIM, "ann", attributes={path: ("Legal",)})
    assert holds("{department: {equals: Legal}}", profile)


def test_scim_groups_are_the_profile_memberships():
    """For SCIM the groups input is the profile's group memberships."""
    assert holds("{groups: {contains: admins}}", Profile(Source.SCIM, "ann", groups=("Admins",)))


def test_email_domain_is_the_lowercased_part_after_the_last_at():
    """email_domain derives from email: after the last @, lower-cased."""
    profile = saml(email=('"odd@name"@Sub.Acme.EXAMPLE',))
    assert holds("{email_domain: {equals: sub.acme.example, ignore_case: false}}", profile)


def test_email_falls_back_to_an_address_like_username():
    """With no email attribute, a userName containing @ is the email."""
    profile = saml_attrs({}, user_name="joe@agency.example")
    assert holds("{email_domain: {equals: agency.example}}", profile)


def test_email_is_the_first_address_only():
    """Of several SCIM emails only the first (primary) one counts."""
    profile = Profile(
        Source.SCIM, "ann", attributes={"emails.value": ("ann@acme.example", "ann@agency.example")}
    )
    assert not holds("{email_domain: {equals: agency.example}}", profile)


def test_declared_input_reads_each_source():
    """A declared input reads its SAML attribute or its SCIM path."""
    inputs = """\
        inputs:
          cost_center:
            saml: costCenter
            scim: urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter
        """
    path = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter"
    when = "{cost_center: {equals: FIN}}"
    assert holds(when, saml(costCenter=("FIN",)), inputs)
    assert holds(when, Profile(Source.SCIM, "ann", attributes={path: ("FIN",)}), inputs)


def test_declared_input_without_a_source_is_absent_there():
    """An input declared for SAML only is absent on SCIM profiles."""
    inputs = """\
        inputs:
          badge: {saml: badge}
        """
    profile = Profile(Source.SCIM, "ann", attributes={"badge": ("gold",)})
    assert holds("{badge: {absent: true}}", profile, inputs)


def test_overriding_saml_keeps_the_builtin_scim_mapping():
    """Re-mapping department for SAML leaves its SCIM path as built in."""
    inputs = """\
        inputs:
          department: {saml: dept}
        """
    path = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"
    when = "{department: {equals: Legal}}"
    assert holds(when, saml(dept=("Legal",)), inputs)
    assert not holds(when, saml(department=("Legal",)), inputs)
    assert holds(when, Profile(Source.SCIM, "ann", attributes={path: ("Legal",)}), inputs)


def test_idp_and_source_inputs():
    """idp is the IdP's entity ID and source the profile's source."""
    profile = Profile(Source.SAML, "ann", idp=IdpLink("https://idp.example/x", "ann"))
    assert holds("{idp: {equals: 'https://idp.example/x'}, source: {equals: saml}}", profile)


def test_cli_profiles_read_scim_paths():
    """Profiles from the CLI or a policy re-run use the SCIM mapping."""
    assert holds(
        "{title: {equals: CTO}}", Profile(Source.CLI, "ann", attributes={"title": ("CTO",)})
    )


def test_saml_falls_back_to_scim_paths_and_memberships():
    """A SAML profile without a groups claim uses the SCIM memberships the service added."""
    profile = Profile(Source.SAML, "ann", groups=("Admins",), attributes={"title": ("CTO",)})
    assert holds("{groups: {contains: admins}}", profile)
    assert holds("{title: {equals: CTO}}", profile)


def test_saml_attribute_wins_over_the_scim_fallback():
    """When the assertion carries the attribute, stored SCIM values are not read."""
    profile = Profile(Source.SAML, "ann", groups=("Admins",), attributes={"groups": ("Staff",)})
    assert not holds("{groups: {contains: admins}}", profile)


def test_values_are_stripped_and_blank_ones_absent():
    """One value or several, from SAML or SCIM: white space around a value is dropped and a
    blank value counts as absent (the fallback to the next source then applies)."""
    ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"
    for attributes in ({"department": (" Sales ",)}, {"department": ("", " Sales\t")}):
        assert holds("{department: {equals: Sales}}", saml_attrs(attributes))
    assert holds(
        "{department: {equals: Sales}}", saml_attrs({"department": (" ",), ent: ("Sales",)})
    )
    scim = Profile(Source.SCIM, "ann", attributes={ent: (" Sales ",)})
    assert holds("{department: {equals: Sales}}", scim)
    blank = Profile(Source.SCIM, "ann", attributes={"title": ("  ",)})
    assert not holds("{title: {matches: '.*'}}", blank)


# A compiled input (policies.inputs.reader, what the caching evaluator and `policy plan` use)
# must resolve exactly as Inputs does: same values, same refusals, for any spec and profile.
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from policies.conditions import InputError  # noqa: E402
from policies.inputs import BUILTIN_INPUTS, Inputs, reader  # noqa: E402
from policies.model import InputSpec, SourceSpec  # noqa: E402

NAMES = ["groups", ENTRA_GROUPS, "department", "title", "email", "emails.value", "mail", "x"]
VALUES = st.one_of(
    st.lists(
        st.one_of(
            st.sampled_from(["a@b.example", " Sales ", "", " ", "x,y", "no-at", "A@B@C.Example"]),
            st.integers(0, 3),
        ),
        max_size=3,
    ).map(tuple),
    st.lists(st.sampled_from(["a@b.example", "ops"]), max_size=2),  # a list, not a tuple
    st.sampled_from(["a string", None, 7]),
)
SOURCES = st.one_of(
    st.none(),
    st.builds(
        SourceSpec,
        st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True).map(tuple),
        st.sampled_from([None, ","]),
    ),
)
SPECS = st.dictionaries(
    st.sampled_from(["groups", "department", "email", "team", "cost"]),
    st.builds(InputSpec, st.just("n"), SOURCES, SOURCES, st.booleans(), first_only=st.booleans()),
    max_size=3,
)


@settings(max_examples=600, deadline=None)
@given(
    specs=SPECS,
    name=st.sampled_from(
        [*BUILTIN_INPUTS, "email_domain", "userName", "source", "idp", "team", "cost", "nothing"]
    ),
    source=st.sampled_from([Source.SAML, Source.SCIM, Source.POLICY, "saml"]),
    user_name=st.one_of(st.sampled_from(["ann@Acme.Example", "ann", " ", "a@"]), st.none()),
    idp=st.one_of(
        st.none(), st.builds(IdpLink, st.sampled_from(["urn:idp", "", None]), st.just("n"))
    ),
    attributes=st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=4),
    groups=VALUES,
)
def test_a_compiled_input_resolves_as_inputs_does(
    specs, name, source, user_name, idp, attributes, groups
):
    profile = Profile(source, user_name, idp=idp, attributes=attributes, groups=groups)

    def outcome(resolve):
        try:
            return resolve()
        except InputError as exc:
            return ("refused", str(exc))

    expected = outcome(lambda: Inputs(specs, profile)(name))
    got = outcome(lambda: reader(specs, name)(source, user_name, idp, attributes, groups))
    assert got == expected
