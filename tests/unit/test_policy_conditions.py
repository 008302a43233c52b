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


def test_present_does_not_match_a_missing_or_blank_input():
    """present is false without a value: a `present` rule must not grant everyone access."""
    assert not holds("{department: {present: true}}", scim())
    assert not holds("{department: {present: true}}", dept("  ", ""))


def test_a_failed_present_fails_all_around_it():
    """In `all`, a `present` on a missing input fails the whole rule, wherever it stands."""
    staff = scim(groups=("staff",))
    assert not holds("{all: [{department: {present: true}}, {groups: {contains: staff}}]}", staff)
    assert not holds("{all: [{groups: {contains: staff}}, {department: {present: true}}]}", staff)
    assert not holds("{all: [{groups: {contains: staff}}, {department: {equals: x}}]}", staff)
    assert holds("{any: [{department: {present: true}}, {groups: {contains: staff}}]}", staff)


def test_absent_does_not_match_a_present_input():
    """absent is false as soon as one value is there."""
    assert not holds("{department: {absent: true}}", dept("Legal"))
    assert not holds("{department: {absent: true}}", dept("", "Legal"))


def test_not_present_matches_exactly_the_profiles_without_the_input():
    """not: [present] is the same set as absent."""
    assert holds("{not: {department: {present: true}}}", scim())
    assert not holds("{not: {department: {present: true}}}", dept("Legal"))


def test_matches_honours_ignore_case():
    """matches is case-sensitive on free text unless the check sets ignore_case: true."""
    profile = scim({"title": ("SENIOR ENGINEER",)})
    assert not holds("{title: {matches: 'senior .*'}}", profile)
    assert holds("{title: {matches: 'senior .*', ignore_case: true}}", profile)
    groups = scim(groups=("CLD-Admins",))
    assert holds("{groups: {matches: 'cld-.*'}}", groups)
    assert not holds("{groups: {matches: 'cld-.*', ignore_case: false}}", groups)


def test_glob_is_case_sensitive_where_the_input_is():
    """glob on department compares exactly, so 'Mark*' does not match 'marketing'."""
    assert not holds("{department: {glob: 'Mark*'}}", dept("marketing"))
    assert holds("{department: {glob: 'Mark*'}}", dept("Marketing"))
    assert holds("{department: {glob: 'Mark*', ignore_case: true}}", dept("marketing"))
    shouting = Profile(Source.SCIM, "Ann@ACME.example")  # email falls back to userName
    assert holds("{email: {glob: '*@acme.example'}}", shouting)
    assert not holds("{email: {glob: '*@acme.example', ignore_case: false}}", shouting)


def test_glob_and_matches_are_full_matches():
    """A glob or regex matching only part of the value does not hold."""
    assert not holds("{department: {glob: 'Mark*'}}", dept("Sales-Marketing"))
    assert not holds("{department: {matches: 'Sales'}}", dept("Sales-Marketing"))


def test_any_fails_when_no_item_holds_and_all_holds_when_every_item_does():
    """any of two false conditions is false; all of two true ones is true."""
    profile = dept("Legal")
    assert not holds(
        "{any: [{department: {equals: Sales}}, {department: {equals: Brand}}]}", profile
    )
    assert holds("{all: [{department: {present: true}}, {department: {equals: Legal}}]}", profile)
    assert not holds("{not: {department: {equals: Legal}}}", profile)


def test_an_error_inside_any_is_not_skipped_by_a_later_match():
    """A check that cannot be evaluated makes the decision an error even if a later item holds."""
    decision = decide(
        "{any: [{title: {matches: 'x.*'}}, {department: {equals: Legal}}]}",
        scim({"title": ("x" * 2000,), f"{ENTERPRISE}:department": ("Legal",)}),
    )
    assert not decision.ok and decision.role == "media_library_user"


def test_value_at_the_pattern_length_limit_is_matched():
    """A value of exactly MAX_MATCH_LENGTH characters is matched, one more is an error."""
    from policies.conditions import MAX_MATCH_LENGTH

    assert holds("{title: {matches: 'x+'}}", scim({"title": ("x" * MAX_MATCH_LENGTH,)}))
    over = decide("{title: {matches: 'x+'}}", scim({"title": ("x" * (MAX_MATCH_LENGTH + 1),)}))
    assert not over.ok
    assert over.errors == (
        f"rule 'r': title matches 'x+': a value of {MAX_MATCH_LENGTH + 1} characters is longer "
        f"than the {MAX_MATCH_LENGTH} a pattern may be matched against",
    )


def test_explanations_of_each_operator():
    """Each check explains itself with its operands and the value it saw."""
    profile = scim({"title": ("Counsel",), f"{ENTERPRISE}:costCenter": ("Legal",)})
    cases = {
        "{title: {in: [Brand, Counsel]}}": "title in ['Brand', 'Counsel']: matched value 'Counsel'",
        "{title: {present: true}}": "title present: value 'Counsel'",
        "{title: {absent: true}}": "title absent: value 'Counsel'",
        "{department: {absent: true}}": "department absent: input department absent",
        "{title: {glob: 'C*'}}": "title glob 'C*': matched value 'Counsel'",
        "{title: {equals: Clerk}}": "title equals 'Clerk': no match in 'Counsel'",
        "{not: {title: {equals: Clerk}}}": "not [title equals 'Clerk': no match in 'Counsel']",
        "{any: [{title: {equals: Clerk}}, {title: {equals: Counsel}}]}": "any of [title equals "
        "'Clerk': no match in 'Counsel'; title equals 'Counsel': matched value 'Counsel']",
        "{all: [{title: {equals: Clerk}}, {title: {equals: Counsel}}]}": "all of [title equals "
        "'Clerk': no match in 'Counsel']",
    }
    for when, detail in cases.items():
        step = decide(when, profile).explanation[0]
        assert step.detail.split(" => ")[0] == detail, when


def test_explanation_shortens_long_and_many_values():
    """At most five values are shown, each clipped to 80 characters."""
    many = scim({"title": tuple(f"t{i}" for i in range(7))})
    step = decide("{title: {equals: x}}", many).explanation[0]
    assert step.detail == ("title equals 'x': no match in 't0', 't1', 't2', 't3', 't4' (+2 more)")
    five = decide("{title: {equals: x}}", scim({"title": ("a", "b", "c", "d", "e")}))
    assert five.explanation[0].detail == "title equals 'x': no match in 'a', 'b', 'c', 'd', 'e'"
    long = decide("{title: {equals: x}}", scim({"title": ("y" * 80, "z" * 81)}))
    assert long.explanation[0].detail == (
        f"title equals 'x': no match in {'y' * 80!r}, {'z' * 79 + '…'!r}"
    )
    for value, shown in [("y" * 80, "y" * 80), ("z" * 81, "z" * 79 + "…")]:
        hit = decide(f"{{title: {{glob: '{value[0]}*'}}}}", scim({"title": (value,)}))
        assert hit.explanation[0].detail.split(" => ")[0] == (
            f"title glob '{value[0]}*': matched value {shown!r}"
        )
