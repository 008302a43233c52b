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
    for key, what, kind, limit in _mapper_checks(inspect(obj).mapper):
        value = getattr(obj, key, None)
        if value is not None:
            _check(value, what, kind, limit)


def check_values(table: Table, row: Mapping[str, Any]) -> None:
    """The same for a row written without the ORM (a Core INSERT of `row` into `table`)."""
    for key, what, kind, limit in _table_checks(table):
        value = row.get(key)
        if value is not None:
            _check(value, what, kind, limit)


# What a column's values are checked for: (what it is called, "text" or "bool", length limit).
# Columns of other types take whatever SQLAlchemy accepts. Built once per table and mapper: the
# checks run on every row a write sends (about 70 columns a SCIM create).
_Check = tuple[str, str, int | None]


def _column_check(column: Column[Any]) -> _Check | None:
    what = f"{column.table.name}.{column.name}"
    if isinstance(column.type, String):
        return what, "text", column.type.length
    if isinstance(column.type, Boolean):
        return what, "bool", None
    return None


@functools.cache
def _table_checks(table: Table) -> tuple[tuple[str, str, str, int | None], ...]:
    return tuple(
        (column.key, *check)
        for column in table.columns
        if (check := _column_check(column)) is not None
    )


@functools.cache
def _mapper_checks(mapper: Any) -> tuple[tuple[str, str, str, int | None], ...]:
    return tuple(
        (attr.key, *check)
        for attr in mapper.column_attrs
        if (check := _column_check(attr.columns[0])) is not None
    )


def _check(value: Any, what: str, kind: str, limit: int | None) -> None:
    if kind == "text":
        check_text(value, what, limit)
    elif not isinstance(value, bool):
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
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} contains a lone surrogate (not valid Unicode)") from None
