"""The engine's seam: a policy of defaults gives its explained Decision."""

from policies import Decision, Defaults, Policy, Profile, Source, Step, evaluate, role_rank


def test_defaults_decide_role_and_environments():
    """With no rules, the defaults give the role and environments, explained."""
    policy = Policy("acme", Defaults(role="reports", environments=("production",)))
    decision = evaluate(policy, Profile(source=Source.SCIM, user_name="ann"))
    assert decision.role == "reports"
    assert decision.environments == ("production",)
    assert decision.role_rule == "defaults"
    assert decision.explanation[0].detail == "role reports; environments production"


def test_defaults_alone_give_the_whole_decision():
    """With no rules, groups the IdP sends give nothing: the Decision is the defaults, whole."""
    policy = Policy("acme", Defaults(environments="all"))
    profile = Profile(source=Source.SAML, user_name="bob", groups=("a", "b"))
    assert evaluate(policy, profile) == Decision(
        role="media_library_user",
        role_rule="defaults",
        environments="all",
        environments_rule="defaults",
        explanation=(Step("defaults", True, "role media_library_user; environments all"),),
    )


def test_role_rank_orders_design_roles():
    """master_admin outranks admin; an unknown role ranks below all known ones."""
    assert role_rank("master_admin") < role_rank("admin") < role_rank("media_library_user")
    assert role_rank("nonsense") > role_rank("media_library_user")


def test_defaults_that_give_no_environment_say_so():
    """A policy whose defaults give no environments explains that as "environments none"."""
    decision = evaluate(Policy("acme", Defaults()), Profile(source=Source.SCIM, user_name="ann"))
    assert decision.environments == ()
    assert decision.explanation == (
        Step("defaults", True, "role media_library_user; environments none"),
    )
