"""`idbridge policy vocabulary`: the words a policy file may use, read from the engine itself."""

from __future__ import annotations

import click

import policies
from bridge.cli.base import emit
from bridge.cli.policy import policy_group
from policies.conditions import OPERATORS
from policies.model import PRECEDENCES

PROVENANCES = ("policy:<rule>", "scim", "saml", "manual")


def vocabulary() -> dict[str, object]:
    """Roles (most powerful first), grant levels (least first), and the other fixed words."""
    return {
        "roles": list(policies.ROLES),
        "levels": list(policies.LEVELS),
        "environments": f"the account's environment names, or {policies.ALL_ENVIRONMENTS!r}",
        "precedence": list(PRECEDENCES),
        "inputs": list(policies.CANONICAL_INPUTS),
        "checks": list(OPERATORS),
        "grant_targets": ["folder", "collection"],
        "provenance": list(PROVENANCES),
    }


@policy_group.command("vocabulary")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def policy_vocabulary(as_json: bool) -> None:
    """Role names and ranks, grant levels and the other words a policy file may use."""
    words = vocabulary()
    if as_json:
        emit(words)
        return
    click.echo("roles, most powerful first (precedence `highest` keeps the first a user matches):")
    for rank, role in enumerate(policies.ROLES, start=1):
        click.echo(f"  {rank}. {role}")
    click.echo("grant levels, least first (on one environment and path the highest wins):")
    for rank, level in enumerate(policies.LEVELS, start=1):
        click.echo(f"  {rank}. {level}")
    click.echo(f"environments: {words['environments']}")
    click.echo('grant targets: folder: "path/" or collection: Name')
    click.echo(f"roles precedence: {' | '.join(PRECEDENCES)}")
    click.echo(
        f"inputs (others must be declared under inputs:): {', '.join(policies.CANONICAL_INPUTS)}"
    )
    click.echo(f"checks: {', '.join(OPERATORS)}; combine with all, any, not")
    click.echo(f"provenance of what is written: {', '.join(PROVENANCES)}")
