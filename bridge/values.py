"""Every value checked against its column before a flush: both databases store the same things.

SQLite would take 300 characters in a String(256) column, a dict where text belongs or a lone
surrogate (then fail to encode it); PostgreSQL refuses the first two and any NUL. Checking every
new and changed row here, before the SQL is sent, makes each of those an InvalidInput (a 4xx) on
every write path (SCIM, SAML, CLI) instead of a database error (a 500), whatever the adapter.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Boolean, Column, Insert, String, Table, insert, inspect
from sqlalchemy.orm import Session

from bridge.errors import InvalidInput


def check_flush(db: Session, _context: Any, _instances: Any) -> None:
    """Refuse the flush if a new or changed row holds a value its column cannot store."""
    for obj in (*db.new, *db.dirty):
        check_row(obj)


def insert_rows(db: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows written with one Core INSERT on the session's connection, without the ORM's unit of
    work (a flush costs more than the INSERT): each checked as a flush checks its objects, and
    what the session holds flushed first (the rows may reference it). No rows: no statement."""
    if not rows:
        return
    for row in rows:
        check_values(table, row)
    db.flush()
    db.connection().execute(_insert(table), list(rows))


@functools.cache
def _insert(table: Table) -> Insert:
    return insert(table)  # built once per table


def check_row(obj: Any) -> None:
    """Raise InvalidInput naming the first column of `obj` whose value does not fit."""
    state = inspect(obj)
    for attr in state.mapper.column_attrs:
        check_value(attr.columns[0], getattr(obj, attr.key, None))


def check_values(table: Table, row: Mapping[str, Any]) -> None:
    """The same for a row written without the ORM (a Core INSERT of `row` into `table`)."""
    for column in table.columns:
        check_value(column, row.get(column.key))


def check_value(column: Column[Any], value: Any) -> None:
    if value is None:
        return
    what = f"{column.table.name}.{column.name}"
    if isinstance(column.type, String):
        check_text(value, what, column.type.length)
    elif isinstance(column.type, Boolean) and not isinstance(value, bool):
        raise InvalidInput(f"{what} must be true or false")


def storable(text: str) -> str:
    """Outside text kept in a record that must not be lost for it (a log line, a delivery's
    answer): each NUL, which PostgreSQL refuses, as U+FFFD, as an undecodable byte already is."""
    return text.replace("\x00", "\ufffd")


def check_text(value: Any, what: str, limit: int | None = None) -> None:
    """`value` is text every database can store, at most `limit` characters."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, not {type(value).__name__}")
    if limit is not None and len(value) > limit:
        raise InvalidInput(f"{what} is {len(value)} characters long; at most {limit}")
    if "\x00" in value:
        raise InvalidInput(f"{what} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} contains a lone surrogate (not valid Unicode)") from None
