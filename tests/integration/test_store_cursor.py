"""On PostgreSQL the store's connections make a cursor's `description` when it is read
(bridge.store._cursor_factory): it must describe what psycopg's own describes, of the result it
was asked of. And psycopg keeps the conversion of a SCIM create's statement."""

from __future__ import annotations

import psycopg
import pytest

SQL = (
    "SELECT 1::int AS n, 'x'::varchar(20) AS s, now() AS at, gen_random_uuid() AS id,"
    """ '{"a": 1}'::json AS doc, true AS yes, 1.5::numeric(5, 2) AS amount,"""
    " NULL::text AS nothing"
)


@pytest.fixture
def raw(store):
    if store.dialect != "postgresql":
        pytest.skip("a psycopg cursor: PostgreSQL only")
    pooled = store.engine.raw_connection()
    try:
        yield pooled.driver_connection
    finally:
        pooled.close()


def test_a_description_is_psycopgs_own(raw):
    ours = raw.cursor()
    assert type(ours) is not psycopg.Cursor  # the store's own factory
    ours.execute(SQL)
    theirs = psycopg.Cursor(raw)
    theirs.execute(SQL)
    described = ours.description
    assert len(described) == 8
    assert [tuple(c) for c in described] == [tuple(c) for c in theirs.description]
    assert [c.name for c in described] == [
        "n", "s", "at", "id", "doc", "yes", "amount", "nothing",
    ]  # fmt: skip
    assert ours.fetchone()[0] == 1


def test_a_description_read_later_is_of_its_own_result(raw):
    """Asked of one result and read after the cursor ran another: the first result's columns."""
    cursor = raw.cursor()
    cursor.execute("SELECT 1 AS first, 2 AS second")
    described = cursor.description
    cursor.execute("SELECT 'x' AS other")
    assert [c.name for c in described] == ["first", "second"]
    assert [c.name for c in cursor.description] == ["other"]


def test_no_rows_no_description(raw):
    cursor = raw.cursor()
    cursor.execute("CREATE TEMPORARY TABLE described (n int)")
    assert cursor.description is None
    cursor.execute("INSERT INTO described VALUES (1)")
    assert cursor.description is None
    cursor.execute("SELECT n FROM described WHERE false")
    assert cursor.description is not None and [c.name for c in cursor.description] == ["n"]
    assert cursor.fetchall() == []
    raw.rollback()


def test_a_scim_creates_statement_is_converted_once(scim, store, monkeypatch):
    """psycopg converts a statement's placeholders once per text, but by default not one with
    more than 50 parameters: a SCIM create's one statement (55) was parsed with regular
    expressions at every create. The store raises that bound (bridge.store.PARAMS_KEPT)."""
    if store.dialect != "postgresql":
        pytest.skip("psycopg's conversion: PostgreSQL only")
    from psycopg import _queries

    parsed = []
    parse = _queries._query2pg_nocache

    def counted(query, encoding):
        parsed.append(query.count(b"%("))
        return parse(query, encoding)

    monkeypatch.setattr(_queries, "_query2pg_nocache", counted)
    user = {"userName": "first@example.com", "emails": [{"value": "first@example.com"}]}
    assert scim.post("Users", json=user).status_code == 201
    parsed.clear()  # each statement of that shape converted (at most) once
    user = {"userName": "second@example.com", "emails": [{"value": "second@example.com"}]}
    assert scim.post("Users", json=user).status_code == 201
    assert parsed == []  # 55 parameters, the default bound: [55]
