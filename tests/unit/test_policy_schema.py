"""The shipped JSON Schema (for editors) agrees with the loader on examples and on bad files."""

import json
from importlib import resources
from pathlib import Path

import pytest
import yaml

import policies
from policies import LEVELS, ROLES, PolicyError, loads

jsonschema = pytest.importorskip("jsonschema")

SCHEMA = json.loads(resources.files("policies").joinpath("policy.schema.json").read_text())
EXAMPLES = sorted((Path(policies.__file__).parent / "examples").glob("*.yaml"))
HEAD = "account: acme\nenvironments: [production]\n"

# Structural mistakes both must refuse; cross-references (declared environments, input names,
# regex safety, unreachable rules) are the loader's alone.
BAD = {
    "unknown top-level key": "rule: []\n",
    "unknown rule key": "rules: [{name: r, whne: {}, then: {role: admin}}]\n",
    "unknown role": "rules: [{name: r, then: {role: amdin}}]\n",
    "unknown level": (
        "rules: [{name: r, then: {grants: [{environment: production, folder: a, level: x}]}}]\n"
    ),
    "grant with folder and collection": (
        "rules: [{name: r, then: {grants: [{environment: production, folder: a, "
        "collection: b, level: viewer}]}}]\n"
    ),
    "two ops": "rules: [{name: r, when: {title: {equals: a, in: [b]}}, then: {stop: true}}]\n",
    "no operator": "rules: [{name: r, when: {title: {ignore_case: true}}, then: {stop: true}}]\n",
    "present false": "rules: [{name: r, when: {title: {present: false}}, then: {stop: true}}]\n",
    "empty any": "rules: [{name: r, when: {any: []}, then: {stop: true}}]\n",
    "empty then": "rules: [{name: r, then: {}}]\n",
    "rule without name": "rules: [{then: {role: admin}}]\n",
    "reserved rule name": "rules: [{name: defaults, then: {role: admin}}]\n",
    "bad precedence": "roles: {precedence: lowest}\n",
    "number for a string": "rules: [{name: r, when: {title: {equals: 7}}, then: {stop: true}}]\n",
    "derived input mapped": "inputs: {userName: {saml: uid}}\n",
    "input without source": "inputs: {badge: {ignore_case: true}}\n",
    "environment named all": "environments: [all]\n",
    "empty environments in a rule": "rules: [{name: r, then: {environments: []}}]\n",
    "unknown guard role": "guards: {keep_at_least_one: owner}\n",
    "test without expect": "tests: [{name: t, profile: {userName: a}}]\n",
}


def schema_errors(document: object) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return [error.message for error in validator.iter_errors(document)]


def test_schema_is_valid_draft_2020_12():
    """The schema itself is a valid draft 2020-12 schema."""
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_schema_lists_the_engine_roles_and_levels():
    """Roles and levels in the schema are exactly the engine's."""
    assert tuple(SCHEMA["$defs"]["role"]["enum"]) == ROLES
    assert tuple(SCHEMA["$defs"]["level"]["enum"]) == LEVELS


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid_for_the_schema(path):
    """Every shipped example passes the schema as well as the loader."""
    assert schema_errors(yaml.safe_load(path.read_text())) == []


@pytest.mark.parametrize("body", BAD.values(), ids=BAD.keys())
def test_schema_and_loader_both_refuse(body):
    """A structurally wrong file is refused by the schema and by the loader."""
    text = body if body.startswith("environments:") else HEAD + body
    text = text if text.startswith("account") else "account: acme\n" + text
    assert schema_errors(yaml.safe_load(text)) != []
    with pytest.raises(PolicyError):
        loads(text)
