"""Loading: every problem names file, line and column, with a did-you-mean for typos."""

import json
import textwrap

import pytest

from policies import Guards, PolicyError, Problem, load, loads

HEAD = """\
account: acme
environments: [production, staging]
"""


def problems(body: str, head: str = HEAD) -> list[str]:
    """The problems loading `head + body` as p.yaml reports, as printed lines."""
    with pytest.raises(PolicyError) as caught:
        loads(head + textwrap.dedent(body), "p.yaml")
    return str(caught.value).splitlines()


def test_unknown_top_level_key_suggests_the_right_one():
    """A typo in a top-level key is named at its position with a suggestion."""
    assert problems("rule: []\n") == [
        "p.yaml:3:1: unknown key 'rule' in the policy; did you mean 'rules'?"
    ]


def test_unknown_key_in_a_rule_names_the_rule():
    """A typo in a rule's keys names the rule."""
    body = """\
        rules:
          - name: admins
            whne: {groups: {contains: admins}}
            then: {role: admin}
        """
    assert problems(body) == [
        "p.yaml:5:5: unknown key 'whne' in rule 'admins'; did you mean 'when'?"
    ]


def test_unknown_role():
    """A misspelt role is reported at the value with a suggestion."""
    body = """\
        rules:
          - name: admins
            then: {role: amdin}
        """
    assert problems(body) == [
        "p.yaml:5:18: unknown role 'amdin' in rule 'admins'; did you mean 'admin'?"
    ]


def test_unknown_level():
    """A misspelt grant level is reported with a suggestion."""
    body = """\
        rules:
          - name: r
            then:
              grants: [{environment: production, folder: a/, level: edtor}]
        """
    assert problems(body) == [
        "p.yaml:6:61: unknown level 'edtor' in grants of rule 'r'; did you mean 'editor'?"
    ]


def test_undeclared_environment():
    """An environment missing from environments: is an error, abbreviations get a suggestion."""
    body = """\
        rules:
          - name: r
            then: {environments: [prod]}
        """
    assert problems(body) == [
        "p.yaml:5:27: environment 'prod' is not one of the declared environments; "
        "did you mean 'production'?"
    ]


def test_duplicate_rule_name():
    """A second rule with the same name points back at the first."""
    body = """\
        rules:
          - name: r
            then: {role: admin}
          - name: r
            then: {role: reports}
        """
    assert problems(body) == ["p.yaml:6:11: duplicate rule name 'r' (first at line 4)"]


def test_rule_after_an_unconditional_stop_can_never_run():
    """Rules after one without when: that stops are reported as unreachable."""
    body = """\
        rules:
          - name: everyone
            then: {role: reports, stop: true}
          - name: admins
            when: {groups: {contains: admins}}
            then: {role: admin}
        """
    assert problems(body) == [
        "p.yaml:6:11: rule 'admins' can never run: rule 'everyone' (line 4) "
        "has no when: and stop: true"
    ]


def test_unknown_input_suggests_a_known_one():
    """A misspelt input name is reported at its key."""
    body = """\
        rules:
          - name: r
            when: {grups: {contains: admins}}
            then: {role: admin}
        """
    assert problems(body) == [
        "p.yaml:5:12: unknown input 'grups'; did you mean 'groups'? "
        "(declare custom inputs under inputs:)"
    ]


def test_unknown_operator_suggests_a_known_one():
    """A misspelt operator is reported at its key."""
    body = """\
        rules:
          - name: r
            when: {groups: {contain: admins}}
            then: {role: admin}
        """
    assert (
        "p.yaml:5:21: unknown key 'contain' in the check on groups; did you mean 'contains'?"
        in problems(body)
    )


@pytest.mark.parametrize("pattern", ["(a+)+", "(a|a)*", "(\\\\w+\\\\.)+example", ".*.*.*.*x"])
def test_catastrophic_regex_is_rejected(pattern):
    """Patterns that backtrack catastrophically are refused at load, at the pattern."""
    body = f"""\
        rules:
          - name: r
            when: {{title: {{matches: "{pattern}"}}}}
            then: {{role: admin}}
        """
    (line,) = problems(body)
    assert line.startswith("p.yaml:5:29: regex ")
    assert "could backtrack catastrophically" in line


def test_invalid_regex_is_rejected():
    """A pattern that does not compile is reported with the regex error."""
    body = """\
        rules:
          - name: r
            when: {title: {matches: "(unclosed"}}
            then: {role: admin}
        """
    assert problems(body) == [
        "p.yaml:5:29: invalid regex '(unclosed': missing ), unterminated subpattern at position 0"
    ]


def test_number_where_a_string_is_expected():
    """An unquoted number for a string operand asks to quote it."""
    body = """\
        rules:
          - name: r
            when: {department: {equals: 2024}}
            then: {role: admin}
        """
    assert problems(body) == ["p.yaml:5:33: equals: must be a string, not a number (quote it)"]


def test_two_operators_in_one_check():
    """A check with two operators is ambiguous and refused."""
    body = """\
        rules:
          - name: r
            when: {department: {equals: A, in: [B]}}
            then: {role: admin}
        """
    (line,) = problems(body)
    assert line.startswith("p.yaml:5:24: the check on department needs exactly one of:")


def test_duplicate_yaml_key():
    """YAML would silently keep the last of two equal keys; the loader refuses."""
    body = """\
        rules:
          - name: r
            then: {role: admin, role: reports}
        """
    assert problems(body) == [
        "p.yaml:5:25: duplicate key 'role' in then: of rule 'r' (first at line 5)"
    ]


def test_yaml_syntax_error_has_a_position():
    """Malformed YAML is reported where the parser stopped."""
    assert problems("rules:\n  - name: r\n   then: {}\n") == [
        "p.yaml:5:4: invalid YAML: expected <block end>, but found '<block mapping start>'"
    ]


def test_grants_for_a_group_no_rule_gives():
    """Top-level grants must name a group some rule gives; typos get a suggestion."""
    body = """\
        rules:
          - name: r
            then: {groups: [Marketing]}
        grants:
          Marketting: [{environment: production, folder: m/, level: viewer}]
        """
    assert problems(body) == [
        "p.yaml:7:3: grants for group 'Marketting', which no rule gives; did you mean 'Marketing'?"
    ]


def test_derived_inputs_cannot_be_mapped():
    """email_domain comes from email and cannot be declared."""
    body = """\
        inputs:
          email_domain: {saml: domain}
        """
    assert problems(body) == [
        "p.yaml:4:3: input 'email_domain' comes from the profile and cannot be mapped"
    ]


def test_every_problem_is_reported_at_once():
    """Several problems come back together, in file order."""
    body = """\
        defaults: {role: nobody}
        roles: {precedence: lowest}
        """
    lines = problems(body)
    assert [line.split(": ", 1)[0] for line in lines] == ["p.yaml:3:18", "p.yaml:4:21"]


def test_missing_account():
    """account is required."""
    assert problems("environments: []\n", head="") == ["p.yaml:1:1: the policy needs 'account'"]


def test_problem_prints_as_file_line_column():
    """A Problem prints the way editors and CI annotate."""
    assert str(Problem("a.yaml", 3, 7, "bad")) == "a.yaml:3:7: bad"


def test_load_names_an_unreadable_file(tmp_path):
    """A missing file is a PolicyError naming it, not an OSError."""
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as caught:
        load(missing)
    assert caught.value.problems[0].file == str(missing)


def test_guards_and_precedence_are_parsed():
    """guards and roles.precedence land in the Policy."""
    policy = loads(
        HEAD + "roles: {precedence: first-match}\nguards: {keep_at_least_one: master_admin}\n"
    )
    assert policy.guards == Guards(("master_admin",))
    assert policy.precedence == "first-match"


def _pattern_problem(pattern: str) -> str | None:
    """The load problem for a rule matching `pattern` (None when the policy loads)."""
    text = textwrap.dedent(
        """\
        rules:
          - name: r
            when: {title: {matches: PATTERN}}
            then: {role: admin}
        """
    ).replace("PATTERN", json.dumps(pattern))
    try:
        loads(HEAD + text, "p.yaml")
    except PolicyError as exc:
        (line,) = str(exc).splitlines()
        return line.removeprefix("p.yaml:5:29: ")
    return None


NESTED = "a quantifier inside a repeated group, like (a+)+"
ALTERNATION = "an alternation inside a repeated group, like (a|a)*"


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("(a+)+", NESTED),
        ("(ab{1,2})*", NESTED),
        ("(?:x(a?))+", NESTED),  # a quantifier nested two groups deep
        ("(ab|cd)*", ALTERNATION),
        ("(ab|cd){2}", ALTERNATION),
        ("(a+b+)(c+)(d+)", "4 variable quantifiers (at most 3)"),
        ("(a+)(b+)(c+)(d+)", "4 variable quantifiers (at most 3)"),
        ("a{1,2}b{1,2}c{1,2}d{1,2}", "4 variable quantifiers (at most 3)"),
    ],
)
def test_backtracking_shapes_are_refused_with_the_reason(pattern, why):
    """Each shape that backtracks catastrophically is refused at load, saying which shape
    (lookarounds, conditionals and atomic groups are RE2's to refuse since issue 9)."""
    assert _pattern_problem(pattern) == (
        f"regex {pattern!r} could backtrack catastrophically: {why}"
    )


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("(?=a)a", "invalid perl operator: (?="),
        ("(?<!a)b", "invalid perl operator: (?<!"),
        ("(?>a+)", "invalid perl operator: (?>"),
        ("a++", "bad repetition operator: ++"),
        ("(a)(?(1)b|c)", "invalid perl operator: (?("),
        ("(a)\\1", "invalid escape sequence: \\1"),
    ],
)
def test_patterns_re2_cannot_run_are_refused_with_its_reason(pattern, why):
    """Lookarounds, atomic groups, possessive quantifiers, conditionals and backreferences are
    refused at load with RE2's own reason (no engine that runs them is linear-time)."""
    assert _pattern_problem(pattern) == (
        f"regex {pattern!r} is not supported by the linear-time engine (RE2): {why}"
    )


def test_a_refused_pattern_prints_nothing_of_its_own(capfd):
    """RE2 logs parse errors to stderr unless told not to: `idbridge policy check` shows the
    refusal once, as a policy error, not also as a stray RE2 log line."""
    assert _pattern_problem("(?=a)a") is not None
    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize(
    "pattern",
    [
        "a+b+c+",  # exactly the limit of variable quantifiers
        "(a+)(b+)(c+)",
        "a?b?c?d?e?",  # optional characters do not backtrack
        "a{2}b{2}c{2}d{2}x+",  # fixed counts are not variable
        "(a{2})+",  # a fixed count inside a repeated group
        "(a|b)",  # alternation outside any repeat
        "(ab|cd){1}",
        "(?:ab)+",
    ],
)
def test_safe_patterns_load(pattern):
    """Patterns within the limits load."""
    assert _pattern_problem(pattern) is None
