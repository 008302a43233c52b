"""Conditions: each operator, case rules, multi-valued inputs and the all/any/not combinators."""

import textwrap

from policies import Decision, Profile, Source, evaluate, loads

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def decide(when: str, profile: Profile) -> Decision:
    """Evaluate a one-rule policy giving admin when `when` holds."""
    text = textwrap.dedent(
        f"""\
        account: acme
        rules:
          - name: r
            when: {when}
            then: {{role: admin}}
        """
    )
    return evaluate(loads(text, "p.yaml"), profile)


def holds(when: str, profile: Profile) -> bool:
    decision = decide(when, profile)
    assert decision.ok, decision.errors
    return decision.role == "admin"


def scim(
    attributes: dict[str, tuple[str, ...]] | None = None, groups: tuple[str, ...] = ()
) -> Profile:
    return Profile(Source.SCIM, "ann@acme.example", attributes=attributes or {}, groups=groups)


def dept(*values: str) -> Profile:
    return scim({f"{ENTERPRISE}:department": values})


def test_equals_matches_the_exact_value():
    """equals holds for the same value and not for another."""
    assert holds("{department: {equals: Marketing}}", dept("Marketing"))
    assert not holds("{department: {equals: Marketing}}", dept("Sales"))


def test_department_is_case_sensitive_by_default():
    """Free-text inputs like department compare case-sensitively unless told otherwise."""
    assert not holds("{department: {equals: Marketing}}", dept("marketing"))


def test_ignore_case_option():
    """ignore_case: true makes a check on department case-insensitive."""
    assert holds("{department: {equals: Marketing, ignore_case: true}}", dept("MARKETING"))


def test_groups_compare_case_insensitively_by_default():
    """Group names ignore case: 'CLD-Admins' passes contains 'cld-admins'."""
    assert holds("{groups: {contains: cld-admins}}", scim(groups=("CLD-Admins",)))


def test_ignore_case_false_makes_groups_exact():
    """ignore_case: false turns the group default off."""
    assert not holds(
        "{groups: {contains: cld-admins, ignore_case: false}}", scim(groups=("CLD-Admins",))
    )


def test_contains_never_matches_a_substring():
    """A group whose name merely contains the operand does not match."""
    assert not holds("{groups: {contains: cld-admins}}", scim(groups=("cld-admins-old",)))


def test_multi_valued_input_matches_when_any_value_does():
    """One matching group among many is enough."""
    assert holds("{groups: {contains: cld-admins}}", scim(groups=("staff", "cld-admins", "x")))


def test_in_matches_any_listed_value():
    """in holds when a value is one of the listed operands."""
    assert holds("{department: {in: [Brand, Marketing]}}", dept("Marketing"))
    assert not holds("{department: {in: [Brand, Marketing]}}", dept("Legal"))


def test_matches_is_a_full_match():
    """A regex must match the whole value, not a part of it."""
    profile = scim({"title": ("Senior Engineer",)})
    assert not holds("{title: {matches: Engineer}}", profile)
    assert holds("{title: {matches: '(Senior )?Engineer'}}", profile)


def test_glob_on_email_ignores_case():
    """glob matches shell-style and email ignores case by default."""
    profile = scim({"emails.value": ("Joe@Contractors.Example",)})
    assert holds("{email: {glob: '*@contractors.example'}}", profile)
    assert not holds("{email: {glob: '*@other.example'}}", profile)


def test_present_and_absent():
    """present needs a non-empty value; an attribute of blank values is absent."""
    assert holds("{department: {present: true}}", dept("Legal"))
    assert holds("{department: {absent: true}}", dept("  ", ""))
    assert holds("{department: {absent: true}}", scim())


def test_several_keys_must_all_hold():
    """A when mapping with two inputs needs both."""
    profile = scim({f"{ENTERPRISE}:department": ("Legal",), "title": ("Counsel",)})
    assert holds("{department: {equals: Legal}, title: {equals: Counsel}}", profile)
    assert not holds("{department: {equals: Legal}, title: {equals: Clerk}}", profile)


def test_all_any_not():
    """all needs every condition, any needs one, not inverts."""
    profile = dept("Legal")
    assert holds("{any: [{department: {equals: Sales}}, {department: {equals: Legal}}]}", profile)
    assert not holds(
        "{all: [{department: {equals: Sales}}, {department: {equals: Legal}}]}", profile
    )
    assert holds("{not: {department: {equals: Sales}}}", profile)


def test_absent_input_fails_an_equals_check():
    """A check on an input the profile lacks does not hold."""
    assert not holds("{department: {equals: Legal}}", scim())


def test_overlong_value_for_a_pattern_is_an_error_not_a_mismatch():
    """A value past the pattern length cap makes the Decision carry an error."""
    decision = decide("{not: {title: {matches: 'Intern.*'}}}", scim({"title": ("x" * 5000,)}))
    assert not decision.ok
    assert "5000 characters" in decision.errors[0]
    assert decision.role == "media_library_user"
