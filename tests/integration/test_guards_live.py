"""The guard on the live path (issue 9): a SCIM change or a login that would take the last
master_admin away keeps that user's role, audits the refusal with the rule and the guard, and
/readyz and `idbridge policy check --store` say the active version breaks the guard."""

import os
import textwrap
import uuid

import pytest
from sqlalchemy import select

from bridge import idps, provisioning
from bridge.models import AuditEvent, User
from tests.integration.test_saml import Login
from tests.saml_idp import TestIdP

POLICY = """
account: {slug}
environments: [production, staging]
defaults: {{role: media_library_user, environments: [production]}}
rules:
  - name: owners
    when: {{department: {{equals: {owners}}}}}
    then: {{role: master_admin}}
guards: {{keep_at_least_one: master_admin}}
"""
ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


@pytest.fixture
def policy(settings, account):
    path = settings.policy_dir / f"{account.slug}.yaml"

    def write(owners):
        path.write_text(textwrap.dedent(POLICY.format(slug=account.slug, owners=owners)))
        st = path.stat()  # every edit visible even within one mtime tick
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        return path

    yield write
    path.unlink(missing_ok=True)


@pytest.fixture
def saml(client, store, account):
    """The account's test IdP, and a browser to sign in through it."""
    idps.add(store, account.slug, (idp := TestIdP()).metadata_xml(), name="test", actor="t")
    return Login(client, store, account, idp)


def role(store, user_id):
    with store.read() as db:
        return provisioning.access_of(db, db.get(User, uuid.UUID(str(user_id))))["role"]


def refusals(store, account):
    with store.read() as db:
        return db.scalars(
            select(AuditEvent)
            .where(AuditEvent.account_id == account.id, AuditEvent.action == "user.guard_refused")
            .order_by(AuditEvent.seq)
        ).all()


def test_scim_change_keeps_the_last_master_admin(scim, store, account, policy, client, cli):
    """A new version that gives nobody master_admin: the owner's next SCIM change keeps their
    role, the refusal is audited (rule and guard), /readyz and `policy check --store` say so;
    a second owner can then lose it, and a version that keeps one clears the warning."""
    path = policy("Owners")
    owner = scim.post("Users", json={"userName": "o@a.test", ENT: {"department": "Owners"}}).json
    other = scim.post("Users", json={"userName": "p@a.test", ENT: {"department": "Owners"}}).json
    assert role(store, owner["id"])["role"] == "master_admin"
    assert "policy_guard_breaches" not in client.get("/readyz").json

    policy("Nobody")  # valid, so live at once
    patch = {"Operations": [{"op": "replace", "path": "title", "value": "t"}]}
    assert scim.patch(f"Users/{other['id']}", json=patch).status_code == 200
    demoted = {"role": "media_library_user", "provenance": "policy:defaults"}
    assert role(store, other["id"]) == demoted
    assert refusals(store, account) == []  # the owner still holds it: nothing to refuse

    assert scim.patch(f"Users/{owner['id']}", json=patch).status_code == 200
    assert role(store, owner["id"]) == {"role": "master_admin", "provenance": "policy:owners"}
    (event,) = refusals(store, account)
    assert event.target_id == owner["id"]
    assert event.after == {
        "refused_role": "media_library_user",
        "rule": "defaults",
        "guard": "keep_at_least_one: master_admin",
        "kept": "master_admin",
    }
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["policy_guard_breaches"][account.slug] == [
        "guard keep_at_least_one: no user would keep the role master_admin"
    ]
    run = type(cli)({**cli.env, "BRIDGE_POLICY_DIR": str(path.parent)})
    checked = run("policy", "check", "--store", str(path))
    assert checked.exit_code == 1
    assert "breaks guard keep_at_least_one: no user would keep the role master_admin" in (
        checked.stderr
    )
    assert run("policy", "check", str(path)).exit_code == 0  # the file alone is valid


def test_login_keeps_the_last_master_admin(scim, store, account, policy, saml):
    """A SAML login (through the ACS) of the last master_admin under such a version signs them
    in with their role kept, and the refusal names the login as its actor."""
    policy("Owners")
    owner = scim.post("Users", json={"userName": "boss@a.test", ENT: {"department": "Owners"}})
    assert role(store, owner.json["id"])["role"] == "master_admin"
    policy("Nobody")
    request = saml.start("/welcome")
    resp = saml.post(saml.response(in_response_to=request.id, name_id="boss@a.test"))
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert saml.client.get("/session").json["role"] == "master_admin"
    (event,) = refusals(store, account)
    assert event.actor == "saml:test" and event.after["guard"] == "keep_at_least_one: master_admin"


def test_demotion_proceeds_while_another_holder_remains(scim, store, account, policy, client):
    """With a second master_admin kept by the policy, a demotion is not refused."""
    policy("Owners")
    first = scim.post("Users", json={"userName": "a@a.test", ENT: {"department": "Owners"}}).json
    scim.post("Users", json={"userName": "b@a.test", ENT: {"department": "Owners"}})
    patch = {"Operations": [{"op": "replace", "path": f"{ENT}:department", "value": "Sales"}]}
    assert scim.patch(f"Users/{first['id']}", json=patch).status_code == 200
    assert role(store, first["id"])["role"] == "media_library_user"
    assert refusals(store, account) == []
    assert account.slug not in client.get("/readyz").json.get("policy_guard_breaches", {})
