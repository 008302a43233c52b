"""Returning SAML logins (issue 14): a user whose attributes, policy and stored state are as at
their last login is signed in without provisioning; a change in any of those inputs sends the
login down the one write path, and what the person gets shows it."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import select, update

from bridge import accounts, provisioning
from bridge.models import AuditEvent, User
from tests.integration.test_statement_counts import Logins

ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
POLICY = """account: {slug}
environments: [production, staging]
defaults: {{role: media_library_user, environments: [production]}}
rules:
  - name: admins
    when: {{groups: {{contains: cld-admins}}}}
    then: {{role: {role}, environments: all}}
"""


@pytest.fixture
def spy(monkeypatch):
    """Counts the logins that went down the write path (bridge.provisioning.provision_in)."""
    calls: list[str] = []
    real = provisioning.provision_in

    def provision_in(db, registry, account_id, profile, **kw):
        calls.append(profile.user_name)
        return real(db, registry, account_id, profile, **kw)

    monkeypatch.setattr(provisioning, "provision_in", provision_in)
    return calls


@pytest.fixture
def logins(client, store, account, settings):
    (settings.policy_dir / f"{account.slug}.yaml").write_text(
        POLICY.format(slug=account.slug, role="admin")
    )
    return Logins(client, store, account)


def session(logins) -> dict:
    resp = logins.client.get("/session", headers={"Accept": "application/json"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.json


def sign_in(logins, name="ann@example.com", **attributes):
    resp = logins.post(name, **attributes)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return session(logins)


def updates_by_logins(logins) -> int:
    with logins.store.read() as db:
        return len(
            db.scalars(
                select(AuditEvent.id).where(
                    AuditEvent.account_id == logins.account.id,
                    AuditEvent.action == "user.update",
                    AuditEvent.actor == "saml:test",
                )
            ).all()
        )


def test_unchanged_login_is_not_provisioned(logins, spy):
    """The same attributes, policy and state: signed in, nothing provisioned or audited but
    the login itself."""
    first = sign_in(logins, groups=["cld-admins"], givenName=["Ann"])
    assert first["role"] == "admin" and spy == ["ann@example.com"]
    again = sign_in(logins, groups=["cld-admins"], givenName=["Ann"])
    assert again["role"] == "admin" and again["user"]["id"] == first["user"]["id"]
    assert spy == ["ann@example.com"]  # the second login did not provision
    assert logins.audit_actions()[-3:] == ["user.create", "login.succeed", "login.succeed"]


def test_changed_attribute_reprovisions(logins, spy):
    """A changed attribute (the given name, the groups) goes through the write path."""
    sign_in(logins, groups=["cld-admins"], givenName=["Ann"])
    renamed = sign_in(logins, groups=["cld-admins"], givenName=["Anna"])
    assert len(spy) == 2 and renamed["role"] == "admin"
    with logins.store.read() as db:
        assert db.get(User, uuid.UUID(renamed["user"]["id"])).given_name == "Anna"
    demoted = sign_in(logins, groups=["staff"], givenName=["Anna"])
    assert len(spy) == 3 and demoted["role"] == "media_library_user"
    assert updates_by_logins(logins) == 2


def test_changed_policy_reprovisions(logins, spy, settings):
    """An edited policy file is a new policy: the next login applies it."""
    assert sign_in(logins, groups=["cld-admins"])["role"] == "admin"
    path = settings.policy_dir / f"{logins.account.slug}.yaml"
    path.write_text(POLICY.format(slug=logins.account.slug, role="technical_admin"))
    assert sign_in(logins, groups=["cld-admins"])["role"] == "technical_admin"
    assert len(spy) == 2


def test_stored_policy_version_reprovisions(logins, spy, store):
    """A stored policy version made active is a new policy for the next login too."""
    from bridge import policy_versions

    assert sign_in(logins, groups=["cld-admins"])["role"] == "admin"
    source = POLICY.format(slug=logins.account.slug, role="billing")
    made = policy_versions.create(store, logins.account.slug, source, origin="test", actor="t")
    policy_versions.activate(store, logins.account.slug, made.version.number, actor="t")
    assert sign_in(logins, groups=["cld-admins"])["role"] == "billing"
    assert len(spy) == 2


def test_deactivated_user_is_refused(logins, spy, scim_for):
    """A user deactivated since their last login is refused, with nothing opened."""
    user_id = sign_in(logins)["user"]["id"]
    scim = scim_for(logins.account)
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "value": {"active": False}}],
    }
    assert scim.patch(f"Users/{user_id}", json=body).status_code == 200
    logins.client = logins.client.application.test_client()  # a browser without the session
    resp = logins.post("ann@example.com")
    assert resp.status_code == 403
    with logins.store.read() as db:
        from bridge import logins as login_log

        assert login_log.recent(db, logins.account.id, limit=1)[0]["reason"] == "user_deactivated"
    assert logins.client.get("/session").status_code == 401
    assert len(spy) == 2


def test_deactivation_in_flight_is_waited_for(logins, spy, store):
    """A returning login whose user is being deactivated by a write not yet committed waits for
    it (PostgreSQL: the returning-user read share-locks the user's row; SQLite: the write lock)
    and is refused, with nothing opened: it must not sign them in from the row as it was."""
    user_id = uuid.UUID(sign_in(logins)["user"]["id"])  # remembered: unchanged next time
    logins.client = logins.client.application.test_client()  # a browser without the session
    updated, release = threading.Event(), threading.Event()

    def deactivate(db):
        db.execute(
            update(User).where(User.id == user_id).values(active=False, version=User.version + 1)
        )
        updated.set()
        assert release.wait(10)

    writer = threading.Thread(target=store.write, args=(deactivate,))
    writer.start()
    assert updated.wait(10)
    answered: list = []
    login = threading.Thread(target=lambda: answered.append(logins.post("ann@example.com")))
    login.start()
    login.join(0.5)
    waited = login.is_alive()
    release.set()
    writer.join(10)
    login.join(10)
    assert waited, "the login did not wait for the deactivation in flight"
    assert answered[0].status_code == 403, answered[0].get_data(as_text=True)
    with logins.store.read() as db:
        from bridge import logins as login_log

        assert login_log.recent(db, logins.account.id, limit=1)[0]["reason"] == "user_deactivated"
    assert logins.client.get("/session").status_code == 401
    assert len(spy) == 2  # the waiting login went down the write path, which refused it


def test_scim_group_change_reprovisions(logins, spy, scim_for):
    """The user joined a SCIM group the policy reads since their last login (the assertion
    carries no groups): the next login goes through the write path and the role follows."""
    user_id = sign_in(logins)["user"]["id"]
    assert session(logins)["role"] == "media_library_user"
    scim = scim_for(logins.account)
    made = scim.post("Groups", json={"displayName": "cld-admins", "members": [{"value": user_id}]})
    assert made.status_code == 201, made.get_data(as_text=True)
    assert sign_in(logins)["role"] == "admin"
    assert len(spy) == 2


def test_new_environment_reprovisions(logins, spy, store):
    """An environment added to the account since the last login: the next one re-applies the
    policy (an `all` or a named environment may now grant more)."""
    sign_in(logins, groups=["cld-admins"])
    accounts.add_environment(store, logins.account.slug, "qa", actor="t")
    sign_in(logins, groups=["cld-admins"])
    assert len(spy) == 2


@pytest.fixture
def scim_for(client, store):
    from tests.conftest import ScimClient

    def make(account):
        token = accounts.issue_token(store, account.slug, label="t", actor="t")
        return ScimClient(client, token.raw, account)

    return make
