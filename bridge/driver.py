"""SQLite: a statement built once, sent straight to the driver when SQLAlchemy would add nothing.

SQLAlchemy's execution of a statement (its compiled form looked up, an execution context, the
parameters processed, a cursor result set up, a BEGIN if needed) costs SQLite several times
what SQLite itself spends on the statement: a SCIM create on SQLite sent 8 statements, a tenth
of its CPU in their execution alone (bench/instructions.py: a create 0.79x the instructions with
this and bridge.store's kept read connection, a GET 0.91x, logins 0.90-0.95x). Here a
statement is compiled once per shape (MAX_SHAPES kept: so a statement must be built once, at
module level, as bridge.values' combined statements must), then sent on the connection's own
sqlite3 connection, with its values converted as SQLAlchemy converts them (each type's bind and
result processors) and its errors raised as SQLAlchemy raises them (IntegrityError, ...), in
whatever transaction the Connection is in (it begins as ever: bridge.store).

SQLAlchemy runs it as before (same statement, same values) on any other database, and while
the engine or connection has a listener of its execution (tracing, a test or bench counting
statements: the engine the app makes has none), or when its execution does more than send
it: a Python default or onupdate to fill, RETURNING, parameters expanded at execution; and for
a read whose columns cannot be a named tuple's fields.
"""

from __future__ import annotations

import functools
import keyword
import operator
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Executable, Select
from sqlalchemy.exc import DBAPIError

MAX_SHAPES = 256  # statements kept compiled (one per statement and parameter keys)
_Convert = Callable[[Any], Any] | None


def execute(conn: Connection, statement: Executable, rows: Sequence[Mapping[str, Any]]) -> int:
    """Run `statement` (an INSERT, UPDATE or DELETE built once) once per row of parameters
    (all with the same keys) on `conn`; its rowcount (through SQLAlchemy, an INSERT's only with
    its preserve_rowcount option, as ever)."""
    direct = _direct(conn) and _write(statement, tuple(rows[0]), conn.dialect)
    if not direct:
        return conn.execute(statement, list(rows) if len(rows) > 1 else rows[0]).rowcount
    sql, params = direct
    return int(_send(conn, sql, [params(row) for row in rows], fetch=False))


def rows(
    conn: Connection, statement: Select[*tuple[Any, ...]], params: Mapping[str, Any]
) -> list[Any]:
    """The rows of `statement` (a SELECT built once) with `params`: SQLAlchemy's Rows, or on
    SQLite named tuples of the same values (by attribute, by index and as `_mapping`)."""
    direct = _direct(conn) and _read(statement, tuple(params), conn.dialect)
    if not direct:
        return list(conn.execute(statement, params))
    sql, binds, make, converts = direct
    fetched = _send(conn, sql, [binds(params)], fetch=True)
    if not converts:
        return [make(row) for row in fetched]
    made = []
    for row in fetched:
        values = list(row)
        for i, convert in converts:
            values[i] = convert(values[i])
        made.append(make(values))
    return made


# the events of a statement's execution: a listener of one must see it (SQLAlchemy sends it)
_WATCHING = ("before_execute", "after_execute", "before_cursor_execute", "after_cursor_execute")


def _direct(conn: Connection) -> bool:
    """Whether statements on `conn` may go straight to the driver: SQLite, with no listener
    of their execution. (SQLAlchemy's own flag stays set once any listener was added, even
    after it is removed: the listeners themselves are asked then.)"""
    if conn.dialect.name != "sqlite":
        return False
    if not (conn._has_events or conn.engine._has_events):
        return True
    dispatch = conn.dispatch
    return not any(getattr(dispatch, name) for name in _WATCHING)


def _send(conn: Connection, sql: str, values: list[Sequence[Any]], *, fetch: bool) -> Any:
    """`sql` once per sequence of `values` on `conn`'s own sqlite3 connection: the rows it read
    (`fetch`) or its rowcount; the driver's error raised as SQLAlchemy raises it
    (sqlite3.IntegrityError: IntegrityError, ...)."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if len(values) == 1:
            cursor.execute(sql, values[0])
        else:
            cursor.executemany(sql, values)
        return cursor.fetchall() if fetch else cursor.rowcount
    except conn.dialect.loaded_dbapi.Error as exc:
        base = conn.dialect.loaded_dbapi.Error
        raise DBAPIError.instance(sql, values, exc, base, dialect=conn.dialect) from exc
    finally:
        cursor.close()


class _Params:
    """A compiled statement's positional parameters from a row of values by key: each key's
    value (or the parameter's own, when not given), converted where its type converts."""

    def __init__(self, binds: list[tuple[str, Any, _Convert]]) -> None:
        self.binds = binds
        keys = [key for key, _default, _convert in binds]
        self.get = operator.itemgetter(*keys) if len(keys) > 1 else None
        self.converts = [(i, c) for i, (_k, _d, c) in enumerate(binds) if c is not None]

    def __call__(self, row: Mapping[str, Any]) -> Sequence[Any]:
        try:  # every key given (the usual): picked in one call
            values = list(self.get(row)) if self.get is not None else self._each(row)
        except KeyError:
            values = self._each(row)
        for i, convert in self.converts:
            values[i] = convert(values[i])
        return values

    def _each(self, row: Mapping[str, Any]) -> list[Any]:
        return [row.get(key, default) for key, default, _convert in self.binds]


def _binds(compiled: Any, keys: tuple[str, ...], dialect: Any) -> _Params | None:
    """The compiled statement's parameters (_Params); None when one would need more than a
    value (a callable, or a required one not given)."""
    binds = []
    for name in compiled.positiontup:
        bind = compiled.binds[name]
        if bind.key not in keys and (bind.required or bind.callable is not None):
            return None
        convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
        binds.append((bind.key, bind.value, convert))
    return _Params(binds)


def _plain(compiled: Any) -> bool:
    """Whether sending the compiled SQL with its values is all SQLAlchemy would do."""
    return bool(compiled.positional) and not (
        compiled.insert_prefetch
        or compiled.update_prefetch
        or compiled.effective_returning
        or compiled.literal_execute_params
        or compiled.post_compile_params
    )


@functools.lru_cache(maxsize=MAX_SHAPES)
def _write(
    statement: Executable, keys: tuple[str, ...], dialect: Any
) -> tuple[str, _Params] | None:
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))  # type: ignore[attr-defined]
    binds = _binds(compiled, keys, dialect) if _plain(compiled) else None
    return None if binds is None else (compiled.string, binds)


@functools.lru_cache(maxsize=MAX_SHAPES)
def _read(
    statement: Select[*tuple[Any, ...]], keys: tuple[str, ...], dialect: Any
) -> tuple[str, _Params, Callable[[Any], Any], list[tuple[int, Callable[[Any], Any]]]] | None:
    compiled = statement.compile(dialect=dialect)
    binds = _binds(compiled, keys, dialect) if _plain(compiled) else None
    columns = list(statement.selected_columns)
    names = [str(column.key) for column in columns]
    usable = all(n.isidentifier() and not keyword.iskeyword(n) and n[0] != "_" for n in names)
    if binds is None or not usable or len(set(names)) != len(names):
        return None
    processors = [
        column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
    ]
    converts: list[tuple[int, Callable[[Any], Any]]] = [
        (i, c) for i, c in enumerate(processors) if c is not None
    ]
    return compiled.string, binds, _row_type(tuple(names))._make, converts  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=MAX_SHAPES)
def _row_type(names: tuple[str, ...]) -> type:
    base = namedtuple("Row", names)  # type: ignore[misc]

    class Row(base):
        """A row as SQLAlchemy's Row is read here: by attribute, by index, as `_mapping`."""

        __slots__ = ()

        @property
        def _mapping(self) -> dict[str, Any]:
            return dict(zip(self._fields, self, strict=True))

    return Row
