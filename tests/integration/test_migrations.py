"""Migrations build the schema the models describe, on SQLite and PostgreSQL."""

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from bridge import schema
from bridge.models import Base
from bridge.store import Store


def test_upgrade_empty_database_to_head(empty_database_url):
    """An empty database upgrades to head, twice without harm, with every table present."""
    store = Store(empty_database_url())
    try:
        assert schema.current(store.engine) is None
        schema.upgrade(store.engine)
        schema.upgrade(store.engine)
        assert schema.current(store.engine) == schema.head()
        tables = set(inspect(store.engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
    finally:
        store.dispose()


def test_upgrade_keeps_existing_rows(empty_database_url):
    """Upgrading a database that already holds accounts from 0001 to head keeps them."""
    store = Store(empty_database_url())
    try:
        schema.upgrade(store.engine, "0001")
        with store.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO accounts"
                    " (slug, name, default_role, created, audit_seq, audit_head)"
                    " VALUES ('old', 'Old', 'media_library_user', '2026-01-01 00:00:00', 0, '')"
                )
            )
        schema.upgrade(store.engine)
        with store.engine.connect() as conn:
            row = conn.execute(text("SELECT slug, session_minutes FROM accounts")).one()
        assert row.slug == "old" and row.session_minutes == 480
    finally:
        store.dispose()


def test_models_match_migrations(database_url):
    """Autogenerate finds nothing to add: the migrations and the models agree."""
    store = Store(database_url)
    try:
        with store.engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
        assert diff == []
    finally:
        store.dispose()


def test_identifier_keys_are_recomputed(empty_database_url):
    """0003 recomputes the key columns under RFC 8265: `STRAßE` stops sharing `strasse`'s key,
    a LONG S name keeps itself as its key; a downgrade puts the casefold() keys back."""
    store = Store(empty_database_url())
    names = {"STRAßE@a.test": "strasse@a.test", "\u017fam@a.test": "sam@a.test", "Ann": "ann"}
    try:
        schema.upgrade(store.engine, "0002")
        with store.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO accounts (id, slug, name, default_role, created, audit_seq,"
                    " audit_head, session_minutes) VALUES (1, 'a', 'A', 'media_library_user',"
                    " '2026-01-01 00:00:00', 0, '', 480)"
                )
            )
            for i, (name, old) in enumerate(names.items()):
                conn.execute(
                    text(
                        "INSERT INTO users (id, account_id, user_name, user_name_key, version,"
                        " created, last_modified) VALUES (:id, 1, :n, :k, 1, :t, :t)"
                    ),
                    {
                        "id": f"0000000000000000000000000000000{i}",
                        "n": name,
                        "k": old,
                        "t": "2026-01-01 00:00:00",
                    },
                )
        schema.upgrade(store.engine)

        def keys():
            with store.engine.connect() as conn:
                return dict(conn.execute(text("SELECT user_name, user_name_key FROM users")).all())

        assert keys() == {
            "STRAßE@a.test": "straße@a.test",
            "\u017fam@a.test": "\u017fam@a.test",
            "Ann": "ann",
        }
        config = schema.alembic_config(store.url)
        with store.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0006_harden_identifier_keys-1")
        assert keys() == names
    finally:
        store.dispose()


def test_external_id_unique_index_stops_on_duplicates(empty_database_url, tmp_path):
    """0013 makes (account, externalId) unique with NULLs allowed many times. A database whose
    users already share an externalId is not changed: `idbridge db upgrade` exits 1 naming the
    account and the value; once one is fixed it upgrades, and a new duplicate is refused by the
    index; the downgrade puts the plain index back."""
    from click.testing import CliRunner
    from sqlalchemy.exc import IntegrityError

    from bridge.cli import main

    url = empty_database_url()
    store = Store(url)
    env = {"BRIDGE_DATABASE_URL": url, "BRIDGE_INSTANCE_PATH": str(tmp_path)}
    insert = text(
        "INSERT INTO users (id, account_id, user_name, user_name_key, external_id, version,"
        " created, last_modified) VALUES (:id, 1, :n, :n, :e, 1, :t, :t)"
    )
    try:
        schema.upgrade(store.engine, "0012_force_authn")
        with store.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO accounts (id, slug, name, default_role, created, audit_seq,"
                    " audit_head, session_minutes) VALUES (1, 'a', 'A', 'media_library_user',"
                    " '2026-01-01 00:00:00', 0, '', 480)"
                )
            )
            for i, ext in enumerate(["x-1", "x-1", None, None, "x-2"]):
                row = {"id": f"{i:032x}", "n": f"u{i}", "e": ext, "t": "2026-01-01 00:00:00"}
                conn.execute(insert, row)
        stopped = CliRunner().invoke(main, ["db", "upgrade"], env=env)
        assert stopped.exit_code == 1, stopped.output
        assert "upgrade stopped, nothing changed" in stopped.output
        assert "account 'a': 2 users with externalId 'x-1'" in stopped.output
        assert schema.current(store.engine) == "0012_force_authn"

        with store.engine.begin() as conn:
            conn.execute(text("UPDATE users SET external_id = 'x-3' WHERE user_name = 'u1'"))
        done = CliRunner().invoke(main, ["db", "upgrade"], env=env)
        assert done.exit_code == 0, done.output
        assert schema.current(store.engine) == schema.head()
        with store.engine.begin() as conn:  # NULLs: as many as there are users without one
            conn.execute(insert, {"id": f"{9:032x}", "n": "u9", "e": None, "t": "2026-01-01"})
        with pytest.raises(IntegrityError), store.engine.begin() as conn:
            conn.execute(insert, {"id": f"{8:032x}", "n": "u8", "e": "x-2", "t": "2026-01-01"})

        config = schema.alembic_config(store.url)
        with store.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0012_force_authn")
        with store.engine.begin() as conn:
            conn.execute(insert, {"id": f"{8:032x}", "n": "u8", "e": "x-2", "t": "2026-01-01"})
    finally:
        store.dispose()
