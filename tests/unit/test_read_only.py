"""models.read_only and models.loaded: an instance made from a Core row reads (and, loaded,
writes) as the ORM's loading would make it."""

from __future__ import annotations

import pytest
from sqlalchemy import event, inspect, select

from bridge.models import (
    Account,
    AuthnRequest,
    Group,
    IdentityProvider,
    User,
    UserAddress,
    UserEmail,
    UserPhoneNumber,
    held,
    loaded,
    read_only,
)


@pytest.mark.parametrize("model", [Account, IdentityProvider, AuthnRequest])
def test_each_column_is_read_under_its_attributes_name(model):
    """read_only fills an instance's attributes from a row's keys: the two must be the same
    names (a column mapped under another attribute name would be read as None)."""
    attributes = {prop.key: prop.columns[0].key for prop in inspect(model).column_attrs}
    assert all(key == column for key, column in attributes.items()), attributes


def test_values_are_read_back_and_missing_ones_are_none():
    idp = read_only(IdentityProvider, {"id": 7, "name": "okta", "certificates": {"signing": []}})
    assert (idp.id, idp.name, idp.certificates) == (7, "okta", {"signing": []})
    assert idp.metadata_xml is None  # not read: the SAML routes never read it
    state = inspect(idp)
    assert state.transient and not state.modified  # no session, nothing to write


def test_only_the_models_columns_are_taken_from_a_joined_row():
    """A row read with other tables' columns (a join, labelled `prefix` + column for this
    model's): the model's columns are taken under the prefix, nothing else lands on the
    instance."""
    row = {"id": 1, "slug": "acme", "idp_id": 7, "idp_name": "okta", "linked": True}
    idp = read_only(IdentityProvider, row, prefix="idp_")
    assert (idp.id, idp.name, idp.entity_id) == (7, "okta", None)
    assert not {"slug", "linked", "idp_id", "idp_name"} & set(vars(idp))
    account = read_only(Account, row)
    assert (account.id, account.slug) == (1, "acme") and "idp_name" not in vars(account)


@pytest.mark.parametrize("model", [User, UserEmail, UserPhoneNumber, UserAddress, Group])
def test_each_column_of_a_loaded_model_is_under_its_attributes_name(model):
    """The same for the models bridge.provisioning and bridge.groups make with `loaded`."""
    attributes = {prop.key: prop.columns[0].key for prop in inspect(model).column_attrs}
    assert all(key == column for key, column in attributes.items()), attributes


def _user_and_emails(db, user_id):
    """The user's row and their e-mails' rows, read as Core (as bridge.provisioning reads them)."""
    users, emails = User.__table__, UserEmail.__table__
    row = db.connection().execute(select(users).where(users.c.id == user_id)).one()
    found = db.connection().execute(
        select(emails).where(emails.c.user_id == user_id).order_by(emails.c.position)
    )
    return (
        read_only(User, dict(row._mapping)),
        [read_only(UserEmail, dict(r._mapping)) for r in found],
    )


def test_loaded_is_what_the_orm_would_load_and_writes_only_what_changes(store, account):
    """An instance `loaded` makes is persistent and unmodified; a change to it is written as
    the ORM writes a loaded object's (one column, the version checked), and replacing its
    collection deletes the rows it held; the session's own instance wins over a second one."""
    scim_user = User(account_id=account.id, user_name="Loaded", user_name_key="loaded")
    scim_user.emails = [UserEmail(value="a@example.com", value_key="a@example.com")]
    store.write(lambda db: db.add(scim_user))
    user_id = scim_user.id
    sent: list[str] = []

    def change(db):
        user, emails = _user_and_emails(db, user_id)
        user = loaded(db, user, emails=emails, phone_numbers=[], addresses=[])
        state = inspect(user)
        assert state.persistent and not state.modified and not db.dirty and not db.new
        assert [e.value for e in user.emails] == ["a@example.com"]
        assert held(db, User, user_id) is user
        again, _ = _user_and_emails(db, user_id)
        assert loaded(db, again) is user  # as the ORM's load answers: the one it holds
        event.listen(db.connection(), "before_cursor_execute", record)
        user.title = "Editor"
        user.emails = [UserEmail(value="b@example.com", value_key="b@example.com", position=0)]
        db.flush()
        event.remove(db.connection(), "before_cursor_execute", record)

    def record(_conn, _cursor, statement, *_args):
        sent.append(" ".join(statement.split()))

    store.write(change)
    update = next(s for s in sent if s.startswith("UPDATE users"))
    assert update.startswith("UPDATE users SET title=") and "users.version =" in update, sent
    assert any(s.startswith("DELETE FROM user_emails") for s in sent), sent
    with store.read() as db:
        stored = db.get(User, user_id)
        assert stored.title == "Editor" and [e.value for e in stored.emails] == ["b@example.com"]
