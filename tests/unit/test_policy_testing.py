"""Policy tests as code, and the shipped examples loading with all their tests passing."""

import dataclasses
import textwrap
from pathlib import Path

import pytest

import policies
from policies import PolicyError, Profile, Source, load, loads, run_tests

EXAMPLES = sorted((Path(policies.__file__).parent / "examples").glob("*.yaml"))

DEPARTMENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"
POLICY = """\
account: acme
environments: [production, staging]
rules:
  - name: marketing
    when: {department: {equals: Marketing}}
    then: {role: reports, groups: [Marketing], environments: [staging]}
grants:
  Marketing: [{environment: staging, folder: m/, level: editor}]
tests:
"""


def results(tests: str) -> list[policies.TestResult]:
    return run_tests(loads(POLICY + textwrap.dedent(tests), "p.yaml"))


def test_a_matching_expectation_passes():
    """A test whose expectations all hold passes with no failures."""
    (result,) = results(
        """\
        - name: marketer
          profile:
            userName: ann
            attributes:
              urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department: Marketing
          expect:
            role: reports
            environments: [staging]
            groups: [marketing]
            grants: [{environment: staging, folder: m/, level: editor, group: Marketing}]
        """
    )
    assert result.passed and result.failures == ()


def test_a_wrong_role_fails_naming_the_deciding_rule():
    """A role mismatch says what was expected, what came and from which rule."""
    (result,) = results(
        """\
        - name: nobody
          profile: {userName: bob}
          expect: {role: admin}
        """
    )
    assert not result.passed
    assert result.failures == ("role: expected admin, got media_library_user (from 'defaults')",)
    assert str(result).startswith("p.yaml:10: test 'nobody' FAILED: role: expected admin")


def test_grant_mismatches_list_missing_and_unexpected():
    """Grant expectations report what is missing and what is extra."""
    (result,) = results(
        """\
        - name: marketer
          profile:
            userName: ann
            attributes:
              urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department: Marketing
          expect:
            grants: [{environment: production, folder: m/, level: editor, group: Marketing}]
        """
    )
    assert result.failures == (
        "grants missing: group Marketing editor on production folder 'm/'",
        "grants not expected: group Marketing editor on staging folder 'm/'",
    )


def test_a_profile_that_cannot_be_evaluated_fails():
    """A test whose evaluation errors fails with the error."""
    policy = loads(POLICY + "  - {name: t, profile: {userName: ann}, expect: {role: reports}}\n")
    broken = Profile(Source.SCIM, "ann", attributes={DEPARTMENT: "Marketing"})  # not a tuple
    case = dataclasses.replace(policy.tests[0], profile=broken)
    (result,) = run_tests(dataclasses.replace(policy, tests=(case,)))
    assert not result.passed
    assert result.failures[0].startswith("evaluation failed: rule 'marketing': attribute")


def test_expectations_are_validated_like_rules():
    """An expectation naming an undeclared environment is a load error."""
    with pytest.raises(PolicyError, match=r"p.yaml:10:63: environment 'dev' is not one of"):
        loads(
            POLICY + "  - {name: t, profile: {userName: a}, expect: {environments: [dev]}}\n",
            "p.yaml",
        )


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads_and_its_tests_pass(path):
    """Every shipped example is valid and its own tests pass."""
    policy = load(path)
    outcomes = run_tests(policy)
    assert outcomes, "an example should carry tests"
    assert [str(r) for r in outcomes if not r.passed] == []


def test_readme_sample_loads_and_its_tests_pass():
    """The format sample in policies/README.md is a valid policy whose tests pass."""
    readme = (Path(policies.__file__).parent / "README.md").read_text()
    sample = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert [str(r) for r in run_tests(loads(sample, "README.md")) if not r.passed] == []
