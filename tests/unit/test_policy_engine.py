"""The engine: precedence, stop, defaults, how outputs combine, explanations and errors."""

import textwrap
from collections.abc import Mapping

from policies import (
    Decision,
    GrantSpec,
    GroupSpec,
    Policy,
    Profile,
    Source,
    Step,
    evaluate,
    loads,
)

HEAD = """\
account: acme
environments: [production, staging, development]
defaults: {role: reports, environments: [development]}
"""


def policy(body: str) -> Policy:
    """A policy of the common head plus `body`."""
    return loads(HEAD + textwrap.dedent(body), "p.yaml")


def member(*groups: str) -> Profile:
    return Profile(Source.SCIM, "ann@acme.example", groups=groups)


TWO_ROLES = """\
roles: {precedence: PRECEDENCE}
rules:
  - name: staff
    when: {groups: {contains: staff}}
    then: {role: media_library_user}
  - name: admins
    when: {groups: {contains: admins}}
    then: {role: admin}
"""


def test_highest_precedence_keeps_the_most_powerful_role():
    """With precedence highest a later, stronger role wins and the weaker one is explained."""
    decision = evaluate(
        policy(TWO_ROLES.replace("PRECEDENCE", "highest")), member("staff", "admins")
    )
    assert (decision.role, decision.role_rule) == ("admin", "admins")
    staff = decision.explanation[0]
    assert (
        "role media_library_user lost to admin from 'admins' (precedence highest)" in staff.detail
    )


def test_first_match_precedence_keeps_the_first_role():
    """With precedence first-match the earlier rule's role wins even if weaker."""
    decision = evaluate(
        policy(TWO_ROLES.replace("PRECEDENCE", "first-match")), member("staff", "admins")
    )
    assert (decision.role, decision.role_rule) == ("media_library_user", "staff")
    assert "role admin lost to media_library_user from 'staff'" in decision.explanation[1].detail


def test_stop_ends_evaluation():
    """A matching rule with stop: true keeps later rules from running."""
    p = policy(
        """\
        rules:
          - name: contractors
            when: {groups: {contains: contractors}}
            then: {role: media_library_user, stop: true}
          - name: admins
            when: {groups: {contains: admins}}
            then: {role: admin}
        """
    )
    decision = evaluate(p, member("contractors", "admins"))
    assert decision.role == "media_library_user"
    assert decision.explanation[1].detail == "not evaluated: stopped by 'contractors'"


def test_stop_on_a_rule_that_does_not_match_changes_nothing():
    """stop only acts when its rule matched."""
    p = policy(
        """\
        rules:
          - name: contractors
            when: {groups: {contains: contractors}}
            then: {role: media_library_user, stop: true}
          - name: admins
            when: {groups: {contains: admins}}
            then: {role: admin}
        """
    )
    assert evaluate(p, member("admins")).role == "admin"


def test_defaults_fill_what_no_rule_decides():
    """A rule giving only environments leaves the role to the defaults, and says so."""
    p = policy(
        """\
        rules:
          - name: everyone
            then: {environments: [staging]}
        """
    )
    decision = evaluate(p, member())
    assert (decision.role, decision.role_rule) == ("reports", "defaults")
    assert (decision.environments, decision.environments_rule) == (("staging",), "everyone")
    assert decision.explanation[-1].detail == "role reports"


def test_no_match_gives_the_defaults():
    """A profile no rule matches gets the default role and environments."""
    p = policy(
        """\
        rules:
          - name: admins
            when: {groups: {contains: admins}}
            then: {role: admin, environments: all}
        """
    )
    decision = evaluate(p, member("staff"))
    assert (decision.role, decision.environments) == ("reports", ("development",))
    assert decision.explanation[-1].detail == "role reports; environments development"


ENVIRONMENTS = """\
rules:
  - name: a
    when: {groups: {contains: a}}
    then: {environments: [staging]}
  - name: b
    when: {groups: {contains: b}}
    then: {environments: [production, staging]}
  - name: c
    when: {groups: {contains: c}}
    then: {environments: all}
"""


def test_environments_unite_in_declared_order():
    """Environments of several rules are united, ordered as the file declares them."""
    decision = evaluate(policy(ENVIRONMENTS), member("a", "b"))
    assert decision.environments == ("production", "staging")
    assert decision.environments_rule == "a"


def test_all_environments_wins():
    """A rule giving all wins over lists, which are noted as subsumed."""
    decision = evaluate(policy(ENVIRONMENTS), member("a", "c"))
    assert (decision.environments, decision.environments_rule) == ("all", "c")
    assert "environments subsumed by all from 'c'" in decision.explanation[0].detail


def test_groups_unite_case_insensitively_credited_to_the_first_rule():
    """Two rules giving the same group yield one membership from the first rule."""
    p = policy(
        """\
        rules:
          - name: first
            then: {groups: [Marketing, Brand]}
          - name: second
            then: {groups: [marketing]}
        """
    )
    decision = evaluate(p, member())
    assert decision.groups == (GroupSpec("Marketing", "first"), GroupSpec("Brand", "first"))
    assert "group 'marketing' already given by 'first'" in decision.explanation[1].detail


def test_highest_grant_level_wins_on_the_same_path():
    """Two grants on one folder keep the higher level; the other is explained."""
    p = policy(
        """\
        rules:
          - name: viewers
            then: {grants: [{environment: production, folder: brand/, level: viewer}]}
          - name: editors
            then: {grants: [{environment: production, folder: brand/, level: editor}]}
        """
    )
    decision = evaluate(p, member())
    assert decision.grants == (
        GrantSpec("user", "production", "folder", "brand/", "editor", "editors"),
    )
    assert "grant viewer on production folder 'brand/' lost to editor from 'editors'" in (
        decision.explanation[0].detail
    )


GROUP_GRANTS = """\
rules:
  - name: marketing
    when: {groups: {contains: mkt}}
    then: {groups: [Marketing]}
grants:
  marketing:
    - {environment: production, collection: Campaigns, level: editor}
"""


def test_group_grants_follow_the_groups_a_decision_gives():
    """A decided group brings its top-level grants as group-subject grants of rule 'grants'."""
    decision = evaluate(policy(GROUP_GRANTS), member("mkt"))
    assert decision.grants == (
        GrantSpec(
            "group", "production", "collection", "Campaigns", "editor", "grants", "Marketing"
        ),
    )


def test_group_grants_need_the_group():
    """A profile the group rule does not match gets none of the group's grants."""
    assert evaluate(policy(GROUP_GRANTS), member("staff")).grants == ()


def test_explanation_names_the_matched_value_and_absent_inputs():
    """Each rule's step says what matched, on which input and value, or what was missing."""
    p = policy(
        """\
        rules:
          - name: platform-admins
            when: {groups: {contains: cld-admins}}
            then: {role: admin}
          - name: marketing
            when: {department: {equals: Marketing}}
            then: {groups: [Marketing]}
        """
    )
    first, second, defaults = evaluate(p, member("CLD-Admins")).explanation
    assert first.matched and first.rule == "platform-admins"
    assert first.detail == "groups contains 'cld-admins': matched value 'CLD-Admins' => role admin"
    assert not second.matched
    assert second.detail == "department equals 'Marketing': input department absent"
    assert (defaults.rule, defaults.detail) == ("defaults", "environments development")


def test_an_unevaluable_rule_gives_errors_and_least_access():
    """An attribute of the wrong type makes the Decision not ok, with the lowest role."""
    p = policy(
        """\
        rules:
          - name: admins
            when: {title: {equals: Boss}}
            then: {role: admin, environments: all, groups: [Bosses]}
        """
    )
    profile = Profile(Source.SCIM, "ann", attributes={"title": "Boss"})
    decision = evaluate(p, profile)
    assert not decision.ok
    assert decision.errors == (
        "rule 'admins': attribute 'title' holds a str, not a list of strings",
    )
    assert (decision.role, decision.environments, decision.groups) == ("media_library_user", (), ())


def test_a_rule_after_stop_cannot_error():
    """Rules that stop keeps from running are not evaluated, so they raise no error."""
    p = policy(
        """\
        rules:
          - name: staff
            when: {groups: {contains: staff}}
            then: {role: reports, stop: true}
          - name: titled
            when: {title: {equals: Boss}}
            then: {role: admin}
        """
    )
    profile = Profile(Source.SCIM, "ann", attributes={"title": 42}, groups=("staff",))
    assert evaluate(p, profile).ok


def test_environments_follow_the_declared_order_not_the_alphabet():
    """Environments are listed in the file's declared order (production before development)."""
    p = policy(
        """\
        rules:
          - name: devs
            then: {environments: [development]}
          - name: prod
            then: {environments: [production]}
        """
    )
    decision = evaluate(p, member())
    assert (decision.environments, decision.environments_rule) == (
        ("production", "development"),
        "devs",
    )


def test_every_grant_of_every_rule_is_kept():
    """Two grants of one rule and one of another on different paths all reach the Decision."""
    p = policy(
        """\
        rules:
          - name: brand
            then:
              grants:
                - {environment: production, folder: brand/, level: viewer}
                - {environment: staging, folder: brand/, level: editor}
          - name: campaigns
            then: {grants: [{environment: production, collection: Campaigns, level: manager}]}
        """
    )
    assert evaluate(p, member()).grants == (
        GrantSpec("user", "production", "folder", "brand/", "viewer", "brand"),
        GrantSpec("user", "staging", "folder", "brand/", "editor", "brand"),
        GrantSpec("user", "production", "collection", "Campaigns", "manager", "campaigns"),
    )


def test_a_lower_grant_from_a_later_rule_keeps_the_higher_one():
    """A later viewer grant on a path an earlier rule made editor of changes nothing."""
    p = policy(
        """\
        rules:
          - name: editors
            then: {grants: [{environment: production, folder: brand/, level: editor}]}
          - name: viewers
            then: {grants: [{environment: production, folder: brand/, level: viewer}]}
          - name: also-editors
            then: {grants: [{environment: production, folder: brand/, level: editor}]}
        """
    )
    decision = evaluate(p, member())
    assert decision.ok
    assert decision.grants == (
        GrantSpec("user", "production", "folder", "brand/", "editor", "editors"),
    )
    editors, viewers, also, _ = decision.explanation
    assert editors.detail == ("always => grant editor on production folder 'brand/'")
    assert viewers.detail == (
        "always => grant viewer on production folder 'brand/'; "
        "grant viewer on production folder 'brand/' lost to editor from 'editors'"
    )
    assert also.detail == (
        "always => grant editor on production folder 'brand/'; "
        "grant editor on production folder 'brand/' already given by 'editors'"
    )


def test_same_path_in_another_environment_or_kind_is_another_grant():
    """A folder and a collection of the same name, or another environment, do not compete."""
    p = policy(
        """\
        rules:
          - name: a
            then: {grants: [{environment: production, folder: brand, level: manager}]}
          - name: b
            then:
              grants:
                - {environment: production, collection: brand, level: viewer}
                - {environment: staging, folder: brand, level: viewer}
        """
    )
    assert [g.level for g in evaluate(p, member()).grants] == ["manager", "viewer", "viewer"]


def test_highest_precedence_ties_keep_the_earlier_rule():
    """Two rules giving the same role: the earlier is credited."""
    p = policy(
        """\
        rules:
          - name: one
            then: {role: admin}
          - name: two
            then: {role: admin}
          - name: three
            then: {role: billing}
        """
    )
    decision = evaluate(p, member())
    assert (decision.role, decision.role_rule) == ("admin", "one")
    assert decision.explanation[2].detail == (
        "always => role billing; role billing lost to admin from 'one' (precedence highest)"
    )


def test_explanation_lists_everything_a_rule_gives():
    """A matched rule's step names its role, environments, groups, grants and stop."""
    p = policy(
        """\
        rules:
          - name: all-of-it
            when: {groups: {contains: staff}}
            then:
              role: admin
              environments: [production, staging]
              groups: [Brand, Ops]
              grants: [{environment: staging, collection: C, level: manager}]
              stop: true
          - name: everything
            then: {environments: all}
          - name: stopper
            then: {stop: true}
        """
    )
    steps = evaluate(p, member("staff")).explanation
    assert steps[0].detail == (
        "groups contains 'staff': matched value 'staff' => role admin, environments "
        "production, staging, groups Brand, Ops, grant manager on staging collection 'C', stop"
    )
    assert steps[1:] == (
        Step("everything", False, "not evaluated: stopped by 'all-of-it'"),
        Step("stopper", False, "not evaluated: stopped by 'all-of-it'"),
        Step("defaults", False, "not used: rules decided"),
    )
    steps = evaluate(p, member()).explanation
    assert steps[1:] == (
        Step("everything", True, "always => environments all"),
        Step("stopper", True, "always => stop"),
        Step("defaults", True, "role reports"),
    )


class _FailingAttributes(Mapping):
    """Attributes read from a store that fails mid-evaluation (a bug, not bad input)."""

    def __getitem__(self, key):
        raise RuntimeError("store went away")

    def __contains__(self, key):
        return True

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0


def test_an_unexpected_error_gives_the_error_decision_not_an_exception():
    """A failure other than bad input still gives least access, with every part credited to
    'error', and no rule after it grants anything."""
    p = policy(
        """\
        rules:
          - name: admins
            when: {title: {equals: Boss}}
            then: {role: admin}
          - name: everyone
            then: {role: billing, environments: all, groups: [Staff]}
        """
    )
    profile = Profile(Source.SCIM, "ann", attributes=_FailingAttributes())
    decision = evaluate(p, profile)
    assert decision == Decision(
        role="media_library_user",
        role_rule="error",
        environments=(),
        environments_rule="error",
        explanation=(
            Step("admins", False, "error: RuntimeError: store went away"),
            Step("everyone", True, "always => role billing, environments all, groups Staff"),
            Step("defaults", False, "not used: rules decided"),
        ),
        errors=("rule 'admins': unexpected RuntimeError: store went away",),
    )


def test_the_error_decision_credits_error_for_input_errors_too():
    """An input error: role and environments both come from rule 'error', nothing else given."""
    p = policy(
        """\
        rules:
          - name: everyone
            then: {role: admin, environments: all, groups: [Staff],
                   grants: [{environment: production, folder: f, level: manager}]}
          - name: titled
            when: {title: {equals: Boss}}
            then: {role: billing}
        """
    )
    decision = evaluate(p, Profile(Source.SCIM, "ann", attributes={"title": "Boss"}))
    assert (decision.role, decision.role_rule) == ("media_library_user", "error")
    assert (decision.environments, decision.environments_rule) == ((), "error")
    assert (decision.groups, decision.grants) == ((), ())
    assert decision.errors == (
        "rule 'titled': attribute 'title' holds a str, not a list of strings",
    )
    assert decision.explanation[1] == Step(
        "titled", False, "error: attribute 'title' holds a str, not a list of strings"
    )


def test_a_rule_built_in_code_that_gives_nothing_says_so():
    """A Policy built directly (not loaded) may hold a rule giving nothing; its step says so."""
    from policies.model import Rule

    decision = evaluate(Policy("acme", rules=(Rule("empty"),)), member())
    assert decision.explanation[0] == Step("empty", True, "always => nothing")
    assert (decision.role, decision.role_rule) == ("media_library_user", "defaults")
