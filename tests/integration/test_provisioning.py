"""The one write path: matching, fields, the default Decision with provenance, audit."""

import uuid

import pytest
from sqlalchemy import select

from bridge import provisioning
from bridge.errors import Conflict, InvalidInput, NotFound
from bridge.models import (
    AuditEvent,
    Environment,
    EnvironmentAccess,
    Grant,
    Group,
    Membership,
    RoleAssignment,
    User,
)
from tests.factories import profile, saml_profile


def _user(store, user_id):
    with store.read() as db:
        return db.get(User, user_id)


def _access(store, user_id):
    with store.read() as db:
        return provisioning.access_of(db, db.get(User, user_id))


def _events(store, account):
    with store.read() as db:
        return db.scalars(
            select(AuditEvent).where(AuditEvent.account_id == account.id).order_by(AuditEvent.seq)
        ).all()


def test_create_applies_account_defaults_with_provenance(store, account):
    """A new user gets the default role and default environments, marked as policy rows."""
    out = provisioning.provision(store, account.id, profile("Ann@Example.com"), actor="test")
    assert out.created and out.changed
    access = _access(store, out.user_id)
    assert access["role"] == {"role": "media_library_user", "provenance": "policy:defaults"}
    assert access["environments"] == [
        {"environment": "production", "provenance": "policy:defaults"}
    ]
    event = _events(store, account)[-1]
    assert (event.action, event.target_id, event.before) == ("user.create", str(out.user_id), None)
    assert event.after["user_name"] == "Ann@Example.com"


def test_user_name_matches_case_insensitively(store, account):
    """A second profile differing only in case updates the same user."""
    first = provisioning.provision(store, account.id, profile("Bob@Example.com"), actor="t")
    second = provisioning.provision(store, account.id, profile("bob@EXAMPLE.com"), actor="t")
    assert second.user_id == first.user_id and not second.created
    assert _user(store, first.user_id).user_name == "bob@EXAMPLE.com"


def test_must_create_refuses_taken_user_name(store, account):
    """A create-only call for a taken userName (any case) is a Conflict and changes nothing."""
    provisioning.provision(store, account.id, profile("carol@example.com"), actor="t")
    before = len(_events(store, account))
    with pytest.raises(Conflict, match="this userName already exists"):
        provisioning.provision(
            store, account.id, profile("CAROL@example.com"), actor="t", must_create=True
        )
    assert len(_events(store, account)) == before


def test_rename_onto_taken_user_name_conflicts(store, account):
    """Renaming a user to another user's userName is a Conflict."""
    provisioning.provision(store, account.id, profile("dan@example.com"), actor="t")
    eve = provisioning.provision(store, account.id, profile("eve@example.com"), actor="t")
    with pytest.raises(Conflict):
        provisioning.provision(
            store, account.id, profile("DAN@example.com"), actor="t", user_id=eve.user_id
        )


def test_external_id_matches_before_user_name(store, account):
    """A profile with a known externalId updates that user even under a new userName."""
    first = provisioning.provision(
        store, account.id, profile("old@example.com", external_id="ext-1"), actor="t"
    )
    again = provisioning.provision(
        store, account.id, profile("new@example.com", external_id="ext-1"), actor="t"
    )
    assert again.user_id == first.user_id
    assert _user(store, first.user_id).user_name == "new@example.com"


def test_same_user_name_other_external_id_conflicts(store, account):
    """A userName held by a user with a different externalId is not silently taken over."""
    provisioning.provision(
        store, account.id, profile("fay@example.com", external_id="a"), actor="t"
    )
    with pytest.raises(Conflict, match="another externalId"):
        provisioning.provision(
            store, account.id, profile("fay@example.com", external_id="b"), actor="t"
        )


def test_email_alone_never_matches(store, account):
    """Two users sharing an e-mail address stay two users."""
    mail = {"emails": [{"value": "shared@example.com", "primary": True}]}
    a = provisioning.provision(store, account.id, profile("a1", fields=mail), actor="t")
    b = provisioning.provision(store, account.id, profile("b1", fields=mail), actor="t")
    assert a.user_id != b.user_id


def test_fields_and_version(store, account):
    """A real change bumps version and lastModified; repeating it changes nothing."""
    fields = {
        "given_name": "Gil",
        "department": "Marketing",
        "emails": [{"value": "gil@example.com", "type": "work", "primary": True}],
        "phone_numbers": [{"value": "+1 555 0100", "type": "mobile"}],
        "addresses": [{"type": "work", "locality": "Berlin", "country": "DE"}],
    }
    out = provisioning.provision(store, account.id, profile("gil", fields=fields), actor="t")
    created = _user(store, out.user_id)
    assert (created.given_name, created.department, created.version) == ("Gil", "Marketing", 1)
    assert [e.value for e in created.emails] == ["gil@example.com"]
    assert created.addresses[0].locality == "Berlin"

    again = provisioning.provision(store, account.id, profile("gil", fields=fields), actor="t")
    assert not again.changed
    assert _user(store, out.user_id).version == 1

    moved = {**fields, "addresses": [{"type": "work", "locality": "Paris", "country": "FR"}]}
    changed = provisioning.provision(store, account.id, profile("gil", fields=moved), actor="t")
    updated = _user(store, out.user_id)
    assert changed.changed and updated.version == 2
    assert updated.last_modified > created.last_modified
    assert _events(store, account)[-1].before["addresses"][0]["locality"] == "Berlin"


def test_two_primary_emails_rejected(store, account):
    """At most one primary value per multi-valued attribute (RFC 7643 §2.4)."""
    emails = [{"value": "a@x.com", "primary": True}, {"value": "b@x.com", "primary": True}]
    with pytest.raises(InvalidInput, match="at most one"):
        provisioning.provision(store, account.id, profile(fields={"emails": emails}), actor="t")


def test_manager_kept_as_sent_but_never_self(store, account):
    """A manager id is kept as the IdP sent it (even ahead of that user); never the user itself."""
    ahead = str(uuid.uuid4())
    worker = provisioning.provision(
        store, account.id, profile("worker", fields={"manager_id": ahead}), actor="t"
    )
    assert _user(store, worker.user_id).manager_id == ahead
    with pytest.raises(InvalidInput, match="own manager"):
        provisioning.provision(
            store,
            account.id,
            profile("worker", fields={"manager_id": str(worker.user_id)}),
            actor="t",
        )


def test_unknown_user_without_create(store, account):
    """create=False refuses a user that is not stored (SCIM-only accounts)."""
    with pytest.raises(NotFound):
        provisioning.provision(store, account.id, profile("ghost"), actor="t", create=False)


def test_manual_role_survives_reapply(store, account):
    """A manually assigned role is never replaced by the policy."""
    out = provisioning.provision(store, account.id, profile("hal"), actor="t")

    def make_manual(db):
        row = db.scalar(select(RoleAssignment).where(RoleAssignment.user_id == out.user_id))
        row.role, row.provenance = "admin", "manual"

    store.write(make_manual)
    provisioning.provision(store, account.id, profile("hal", fields={"title": "x"}), actor="t")
    assert _access(store, out.user_id)["role"] == {"role": "admin", "provenance": "manual"}


def test_delete_removes_user_and_access(store, account):
    """Deleting a user removes them and their access; the audit keeps the before-state."""
    out = provisioning.provision(store, account.id, profile("ivy"), actor="t")
    provisioning.delete_user(store, account.id, out.user_id, actor="t")
    assert _user(store, out.user_id) is None
    with store.read() as db:
        assert (
            db.scalar(select(RoleAssignment).where(RoleAssignment.user_id == out.user_id)) is None
        )
    event = _events(store, account)[-1]
    assert (event.action, event.after) == ("user.delete", None)
    assert event.before["user_name"] == "ivy"
    with pytest.raises(NotFound):
        provisioning.delete_user(store, account.id, out.user_id, actor="t")


def test_accounts_are_isolated(store, account):
    """The same userName in two accounts is two users, and ids do not cross accounts."""
    from bridge import accounts

    other = accounts.create_account(store, f"{account.slug}-b", actor="t")
    mine = provisioning.provision(store, account.id, profile("same@example.com"), actor="t")
    theirs = provisioning.provision(store, other.id, profile("same@example.com"), actor="t")
    assert mine.user_id != theirs.user_id
    with pytest.raises(NotFound):
        provisioning.provision(
            store, other.id, profile("same@example.com"), actor="t", user_id=mine.user_id
        )
    with pytest.raises(NotFound):
        provisioning.delete_user(store, other.id, mine.user_id, actor="t")


ACCESS_POLICY = """
account: {slug}
environments: [production, staging]
defaults: {{role: media_library_user, environments: [production]}}
rules:
  - name: marketing
    when: {{department: {{equals: Marketing}}}}
    then:
      role: {role}
      groups: [Marketing]
      environments: [production, staging]
      grants: [{{environment: production, folder: "marketing/", level: editor}}]
"""


def test_audited_access_is_what_a_read_finds(store, account, settings):
    """After each change (create; department out of and back into the rule; the policy's role
    edited) the audit's `after` access is what a read finds, manual and SCIM rows included,
    and the version moves by one; a change to nothing audits nothing."""
    policy = settings.policy_dir / f"{account.slug}.yaml"
    policy.write_text(ACCESS_POLICY.format(slug=account.slug, role="reports"))
    pat = profile("pat", fields={"department": "Marketing"})
    made = provisioning.provision(store, account.id, pat, actor="t")
    user_id = made.user_id
    assert _events(store, account)[-1].after["access"] == _access(store, user_id)

    def other_rows(db):  # rows of other provenances: the policy never touches them
        staging = db.scalar(
            select(Environment.id).where(
                Environment.account_id == account.id, Environment.name == "staging"
            )
        )
        crew = Group(account_id=account.id, display_name="Crew", display_name_key="crew")
        db.add(crew)
        db.flush()
        db.add(Membership(group_id=crew.id, user_id=user_id, provenance="scim"))
        db.add(EnvironmentAccess(user_id=user_id, environment_id=None, provenance="manual"))
        db.add(
            Grant(
                account_id=account.id,
                user_id=user_id,
                environment_id=staging,
                kind="folder",
                path="x/",
                level="viewer",
                provenance="manual",
            )
        )

    store.write(other_rows)
    steps = [
        ("Sales", None, True),
        ("Sales", None, False),
        ("Marketing", None, True),
        ("Marketing", "admin", True),  # the access alone changes
    ]
    for department, role, changes in steps:
        if role is not None:
            policy.write_text(ACCESS_POLICY.format(slug=account.slug, role=role))
        seen, version = len(_events(store, account)), _user(store, user_id).version
        out = provisioning.provision(
            store, account.id, profile("pat", fields={"department": department}), actor="t"
        )
        events = _events(store, account)
        assert out.changed is changes
        if not changes:
            assert len(events) == seen and _user(store, user_id).version == version
            continue
        assert [e.action for e in events[seen:]] == ["user.update"]
        now = _access(store, user_id)
        assert events[-1].after["access"] == now and _user(store, user_id).version == version + 1
        assert {"group": "Crew", "provenance": "scim"} in now["groups"]
        assert {"environment": "all", "provenance": "manual"} in now["environments"]
    assert now["role"] == {"role": "admin", "provenance": "policy:marketing"}


def test_first_login_through_an_unregistered_idp_is_refused(store, account):
    """A new user linked to an IdP the account has not registered is refused whole."""
    una = saml_profile("una@example.com", "https://nowhere.example/idp", "una")
    with pytest.raises(InvalidInput, match="is not registered for this account"):
        provisioning.provision(store, account.id, una, actor="t")
    with store.read() as db:
        assert db.scalar(select(User.id).where(User.account_id == account.id)) is None


DECIDING_POLICY = """
account: {slug}
environments: [production, staging]
defaults: {{role: media_library_user, environments: [production]}}
rules:
  - name: marketing
    when: {{department: {{equals: Marketing}}}}
    then:
      role: reports
      groups: {groups}
      environments: {environments}
      grants: [{{environment: production, folder: "marketing/", level: {level}}}]
"""


@pytest.mark.parametrize(
    "edit",
    [
        {"level": "viewer"},  # one grant's level: the same row, updated
        {"groups": "[Marketing, Sales]"},  # a group more
        {"groups": "[marketing]"},  # the same group named in another case: nothing changes
        {"environments": "all"},  # every environment instead of two
        {"environments": "[production]"},  # one environment fewer
    ],
)
def test_access_the_policy_alone_changes_is_written(store, account, settings, edit):
    """A user updated to the same values after their policy was edited gets exactly the access
    it now decides (the audit's `after` is what a read finds), and an update that decides the
    same access again writes nothing: access is compared with what the user's snapshot shows."""
    policy = settings.policy_dir / f"{account.slug}.yaml"
    base = {"groups": "[Marketing]", "environments": "[production, staging]", "level": "editor"}
    policy.write_text(DECIDING_POLICY.format(slug=account.slug, **base))
    pat = profile("pat", fields={"department": "Marketing"})
    user_id = provisioning.provision(store, account.id, pat, actor="t").user_id
    before = _access(store, user_id)
    policy.write_text(DECIDING_POLICY.format(slug=account.slug, **(base | edit)))
    out = provisioning.provision(store, account.id, pat, actor="t")
    now = _access(store, user_id)
    assert out.changed is (now != before)
    assert (now == before) is (edit == {"groups": "[marketing]"})
    assert _events(store, account)[-1].after["access"] == now
    if "level" in edit:
        assert [g["level"] for g in now["grants"]] == ["viewer"]
    if "environments" in edit:
        want = ["all"] if edit["environments"] == "all" else ["production"]
        assert [e["environment"] for e in now["environments"]] == want
    if edit.get("groups") == "[Marketing, Sales]":
        assert [g["group"] for g in now["groups"]] == ["Marketing", "Sales"]
    seen, version = len(_events(store, account)), _user(store, user_id).version
    again = provisioning.provision(store, account.id, pat, actor="t")
    assert not again.changed and _access(store, user_id) == now
    assert len(_events(store, account)) == seen and _user(store, user_id).version == version
