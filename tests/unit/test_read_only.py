"""models.read_only: an instance made from a Core row reads as the ORM's loading would."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from bridge.models import Account, AuthnRequest, IdentityProvider, read_only


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
