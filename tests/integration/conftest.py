"""Fixtures of the integration tests beyond the suite's own (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from bridge import api_keys
from bridge.models import Account
from bridge.store import Store
from tests.integration.api_client import ApiClient


@pytest.fixture
def api_for(client: FlaskClient, store: Store) -> Callable[..., ApiClient]:
    """Makes an API client holding a fresh key of `account` with `scope`."""

    def make(account: Account, scope: str = "write") -> ApiClient:
        key = api_keys.issue(store, account.slug, scope=scope, label="test", actor="test")
        return ApiClient(client, key.raw, key.id)

    return make


@pytest.fixture
def api(api_for: Callable[..., ApiClient], account: Account) -> ApiClient:
    """An API client with a write key of the test's account."""
    return api_for(account, "write")
