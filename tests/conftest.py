"""Fixtures: one fresh database per run (SQLite file by default, PostgreSQL when
BRIDGE_TEST_DATABASE_URL names a server), migrated to head; a fresh account per test.

Tests commit for real (the concurrency and audit tests need real transactions), so isolation
comes from giving every test its own account: no tenant sees another's rows.
"""

from __future__ import annotations

import itertools
import json as json_module
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bridge import accounts, create_app, schema
from bridge.cli import main
from bridge.models import Account
from bridge.settings import Settings
from bridge.store import Store

_counter = itertools.count()

# CI explores the same examples on every run (a red main must mean a change broke something);
# local runs explore new ones and keep what they find in .hypothesis/.
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


def _fresh_postgres(server_url: str) -> tuple[str, Callable[[], None]]:
    """Create an empty database beside the one the URL names; return its URL and a dropper."""
    url = make_url(server_url)
    name = f"bridge_test_{secrets.token_hex(4)}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url.set(database=name).render_as_string(hide_password=False), drop


@pytest.fixture(scope="session")
def empty_database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], str]]:
    """A factory of empty databases of the kind under test, all dropped at the end of the run."""
    server = os.environ.get("BRIDGE_TEST_DATABASE_URL")
    droppers: list[Callable[[], None]] = []

    def make() -> str:
        if server:
            url, drop = _fresh_postgres(server)
            droppers.append(drop)
            return url
        path = tmp_path_factory.mktemp("db") / f"bridge-{next(_counter)}.db"
        return f"sqlite:///{path}"

    yield make
    for drop in droppers:
        drop()


@pytest.fixture(scope="session")
def database_url(empty_database_url: Callable[[], str]) -> str:
    """The run's database, migrated to head."""
    url = empty_database_url()
    store = Store(url)
    schema.upgrade(store.engine)
    store.dispose()
    return url


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    instance = tmp_path_factory.mktemp("instance")
    (instance / "policies").mkdir()
    return Settings.from_env(
        {},
        database_url=database_url,
        instance_path=instance,
        policy_dir=instance / "policies",
    )


@pytest.fixture(scope="session")
def store(settings: Settings) -> Iterator[Store]:
    """The store as the app sees it, reading policy files from the app's policy folder."""
    store = Store(settings.database_url, policy_dir=settings.policy_dir)
    yield store
    store.dispose()


@pytest.fixture(scope="session")
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings)
    app.testing = True
    yield app
    app.extensions["bridge.store"].dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def account(store: Store) -> Account:
    """A fresh account with environments production (default) and staging."""
    slug = f"acct-{secrets.token_hex(4)}"
    created = accounts.create_account(store, slug, name="Test account", actor="test")
    accounts.add_environment(store, slug, "production", default=True, actor="test")
    accounts.add_environment(store, slug, "staging", actor="test")
    return created


@dataclass
class Cli:
    """Runs the `bridge` command against the test database, as a user would."""

    env: dict[str, str]

    def __call__(self, *args: str) -> Result:
        return CliRunner().invoke(main, list(args), env=self.env, catch_exceptions=False)


@pytest.fixture
def cli(database_url: str, tmp_path: Path) -> Cli:
    return Cli({"BRIDGE_DATABASE_URL": database_url, "BRIDGE_INSTANCE_PATH": str(tmp_path)})


class ScimClient:
    """An IdP's view of the SCIM API: paths under /scim/v2, the account's bearer token sent."""

    def __init__(self, client: FlaskClient, token: str, account: Account) -> None:
        self.client, self.token, self.account = client, token, account

    def request(self, method, path, *, json=None, headers=None, **kw):
        headers = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        if json is not None:
            kw["data"] = json_module.dumps(json)
            headers.setdefault("Content-Type", "application/scim+json")
        url = path if path.startswith("/") else f"/scim/v2/{path}"
        return self.client.open(url, method=method, headers=headers, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json=None, **kw):
        return self.request("POST", path, json=json, **kw)

    def put(self, path, json=None, **kw):
        return self.request("PUT", path, json=json, **kw)

    def patch(self, path, json=None, **kw):
        return self.request("PATCH", path, json=json, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


@pytest.fixture
def scim(client: FlaskClient, store: Store, account: Account) -> ScimClient:
    """A SCIM client holding a fresh token of a fresh account (`scim.account`)."""
    token = accounts.issue_token(store, account.slug, label="test", actor="test")
    return ScimClient(client, token.raw, account)


@dataclass
class Live:
    """The app served over real HTTP on a loopback port picked at run time."""

    base_url: str
    app: Flask


@pytest.fixture(scope="module")
def live(settings: Settings) -> Iterator[Live]:
    """A live server (threads) whose BRIDGE_BASE_URL is its own address: for stock HTTP
    clients (OIDC relying parties, webhook receivers) that talk to the app over sockets."""
    import threading
    from dataclasses import replace

    from werkzeug.serving import make_server

    holder: dict[str, Flask] = {}

    def wsgi(environ, start_response):  # the app is made once the port is known
        return holder["app"](environ, start_response)

    server = make_server("127.0.0.1", 0, wsgi, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    app = create_app(replace(settings, base_url=base))
    holder["app"] = app
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Live(base, app)
    server.shutdown()
    thread.join(timeout=10)
    app.extensions["bridge.store"].dispose()


@pytest.fixture(autouse=True)
def _no_store_scope_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every request ends its store scope (bridge.web): none may be left set in the test's
    thread after a test, or later work outside a request would read through its session."""
    from bridge import store as store_module

    yield
    left = store_module._scope.get()
    if left is not None:
        store_module._scope.set(None)
        pytest.fail(f"{request.node.nodeid} left a request's store scope open", pytrace=False)
