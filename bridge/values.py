"""Every value checked against its column before a flush: both databases store the same things.

SQLite would take 300 characters in a String(256) column, a dict where text belongs or a lone
surrogate (then fail to encode it); PostgreSQL refuses the first two and any NUL. Checking every
new and changed row here, before the SQL is sent, makes each of those an InvalidInput (a 4xx) on
every write path (SCIM, SAML, CLI) instead of a database error (a 500), whatever the adapter.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Executable,
    Insert,
    String,
    Table,
    bindparam,
    insert,
    inspect,
)
from sqlalchemy.orm import Session

from bridge import driver
from bridge.errors import InvalidInput


def check_flush(db: Session, _context: Any, _instances: Any) -> None:
    """Refuse the flush if a new or changed row holds a value its column cannot store."""
    for obj in (*db.new, *db.dirty):
        check_row(obj)


# db.info: what insert_rows(later=True) and queue_statement hold back, in order: (table, rows)
# or (statement, its parameters)
QUEUED = "bridge.queued_rows"
# db.info of a session whose commit writes what is queued and whose rollback forgets it
# (bridge.store's sessions: listeners on their sessionmaker); any other session writes at once
QUEUES = "bridge.queues_rows"
MAX_SHAPES = 256  # statements write_queued keeps built (one per mix of tables and row counts)


def insert_rows(
    db: Session, table: Table, rows: Sequence[Mapping[str, Any]], *, later: bool = False
) -> None:
    """Rows written with one Core INSERT on the session's connection, without the ORM's unit of
    work (a flush costs more than the INSERT): each checked as a flush checks its objects, and
    what the session holds flushed first (the rows may reference it). No rows: no statement.

    `later`: the rows are checked now and queued, as is every insert_rows after them in this
    transaction, until write_queued writes them: the next audit event does (bridge.audit), on
    PostgreSQL in the same statement as the event, and the transaction's commit does if no
    event came (bridge.store). The caller reads none of the queued rows back before that (a
    new user's rows, which nothing else can see yet: bridge.provisioning). In a session without
    those listeners (not made by bridge.store: info has no QUEUES) `later` writes at once, as
    its commit would not."""
    if not rows:
        return
    for row in rows:
        check_values(table, row)
    queued = db.info.get(QUEUED)
    if (later and QUEUES in db.info) or queued is not None:
        defaults = _python_defaults(table)
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:  # each with its defaults, in the table's column order
            keys = _keys(table, tuple(row))
            filled = {k: row[k] if k in row else defaults[k]() for k in keys}
            groups.setdefault(keys, []).append(filled)
        db.info.setdefault(QUEUED, []).extend((table, group) for group in groups.values())
        return
    flushed(db).execute(_insert(table), list(rows))


def flushed(db: Session) -> Connection:
    """The session's connection, what the session holds flushed first: a Core statement sent
    on it sees this transaction's changes, as an ORM statement would (autoflush), for about half
    the CPU of the ORM's execution."""
    db.flush()
    return db.connection()


def queue_statement(db: Session, statement: Executable, params: Mapping[str, Any]) -> None:
    """`statement` (an UPDATE or DELETE) run with `params` when the queued rows are written (see
    insert_rows: the next audit event writes them, on PostgreSQL inside its own statement, or
    the commit), after the rows and statements queued before it: one round trip fewer on
    PostgreSQL. What it changes is read by no one in this transaction before then (a login's
    remembered digest, read by the next login: bridge.provisioning.remember_login). Its bind
    names must differ from every other queued statement's and from the audit event's. On
    PostgreSQL it runs on the same snapshot as the rows queued with it (a data-modifying CTE):
    it must not change a row queued with it. In a session that does not queue, at once."""
    if QUEUES not in db.info:
        flushed(db).execute(statement, dict(params))
        return
    db.info.setdefault(QUEUED, []).append((statement, dict(params)))


def write_queued(
    db: Session,
    statement: Executable | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    keep: bool = False,
) -> int | None:
    """Write the rows insert_rows queued in this transaction, what the session holds flushed
    first; then run `statement` (an INSERT, UPDATE or DELETE, built once) with `params`, if
    given, and return its rowcount. `keep`: rows inserted after this are still queued (a new
    user's link to their IdP, which needs their row, is written before their access is
    decided).

    On PostgreSQL that is one statement: each queued table's rows are a data-modifying CTE of
    `statement` (or of the last table's INSERT), one round trip where a table each took one.
    PostgreSQL checks their foreign keys at the end of the whole statement, so a new user's
    e-mails may reference the user inserted beside them. Elsewhere one INSERT per table, then
    `statement`: SQLite has no INSERT inside WITH (and its statements cost no round trip; they
    go straight to its driver, bridge.driver)."""
    queued: list[tuple[Any, Any]] = db.info.pop(QUEUED, None) or []
    if keep:
        db.info[QUEUED] = []
    if not queued and statement is None:
        return None
    if queued:
        db.flush()
    conn = db.connection()
    if queued and conn.dialect.name == "postgresql":
        shape = tuple(
            (what, tuple(rows[0]), len(rows)) if isinstance(what, Table) else (what, (), -1)
            for what, rows in queued
        )
        combined = _with_queued(statement, shape, conn.dialect)
        values = combined.params(params or {}, queued)
        if statement is None:
            conn.exec_driver_sql(combined.sql, values)
            return None
        # its options too (an INSERT's rowcount is kept when it asks: preserve_rowcount)
        return conn.exec_driver_sql(
            combined.sql, values, statement.get_execution_options()
        ).rowcount
    for what, rows in queued:
        if isinstance(what, Table):
            driver.execute(conn, _insert(what), rows)
        else:
            driver.execute(conn, what, [rows])
    return None if statement is None else driver.execute(conn, statement, [params or {}])


def forget_queued(db: Session, _previous: Any = None) -> None:
    """The rows queued in `db` are not written (its transaction rolled back)."""
    db.info.pop(QUEUED, None)


@functools.lru_cache(maxsize=MAX_SHAPES)
def _keys(table: Table, given: tuple[str, ...]) -> tuple[str, ...]:
    """The columns a queued row of `table` with the keys `given` gives, in the table's order:
    its own and those with a Python default."""
    unknown = sorted(set(given) - set(table.c.keys()))
    if unknown:  # as an INSERT of the row would refuse it: never dropped unseen
        raise ValueError(f"{table.name} has no column {', '.join(unknown)}")
    defaults = _python_defaults(table)
    return tuple(c.key for c in table.columns if c.key in given or c.key in defaults)


@functools.cache
def _insert(table: Table) -> Insert:
    return insert(table)  # built once per table


@functools.cache
def _python_defaults(table: Table) -> dict[str, Callable[[], Any]]:
    """Column key -> its value's maker, of the columns with a Python-side default: a queued row
    may be written inside another statement, whose defaults are not the INSERT's."""
    found: dict[str, Callable[[], Any]] = {}
    for column in table.columns:
        default = column.default
        if default is None or column.primary_key:
            continue
        if getattr(default, "is_scalar", False):
            found[column.key] = functools.partial(_same, default.arg)  # type: ignore[attr-defined]
        elif getattr(default, "is_callable", False):
            found[column.key] = functools.partial(default.arg, None)  # type: ignore[attr-defined]
    return found


def _same(value: Any) -> Any:
    return value


class _Combined:
    """A statement with queued rows' INSERTs as its CTEs, compiled once for one dialect: the SQL
    in the driver's parameter style and each parameter's conversion as SQLAlchemy makes them
    (a multi-row INSERT with bound parameters is not kept in SQLAlchemy's statement cache: it
    was compiled again at every execution, 2.5 ms of a SCIM create's CPU)."""

    def __init__(self, statement: Executable, queued: int, dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
        if compiled.positional:  # psycopg's style is named; another driver is not expected
            raise ValueError(f"{dialect.name}: positional parameters are not supported here")
        self.sql: str = compiled.string
        self.names = {bind.key: name for name, bind in compiled.binds.items()}
        self.convert = {
            name: process
            for name, bind in compiled.binds.items()
            if (process := bind.type.dialect_impl(dialect).bind_processor(dialect))
        }
        # the queued values' parameters in the order write_queued lists the values (queued<n>)
        self.queued = [
            (name, self.convert.get(name))
            for name in (self.names[f"queued{n}"] for n in range(queued))
        ]

    def params(self, given: Mapping[str, Any], queued: list[tuple[Any, Any]]) -> dict[str, Any]:
        """The driver's parameters: the statement's (`given`), the queued statements' and the
        queued rows' values."""
        out = {}
        named = [given, *(params for what, params in queued if not isinstance(what, Table))]
        for key, value in (item for params in named for item in params.items()):
            name = self.names[key]
            process = self.convert.get(name)
            out[name] = value if process is None else process(value)  # None too, as SQLAlchemy
        values = (
            value
            for what, rows in queued
            if isinstance(what, Table)
            for row in rows
            for value in row.values()
        )
        for (name, process), value in zip(self.queued, values, strict=True):
            out[name] = value if process is None else process(value)
        return out


@functools.lru_cache(maxsize=MAX_SHAPES)
def _with_queued(
    statement: Executable | None,
    shape: tuple[tuple[Any, tuple[str, ...], int], ...],
    dialect: Any,
) -> _Combined:
    """`statement` with an INSERT of each (table, columns, row count) of `shape`, and each
    queued statement ((statement, (), -1)), as a data-modifying CTE (with no statement, the
    last of them is the statement), the rows' values being the parameters queued0, queued1, ...
    in the order of the shape's tables, rows, columns."""
    inserts = []
    n = 0
    named: set[str] = set()  # the bind names of the statements, which must not be shared
    for what, keys, count in shape:
        if not isinstance(what, Table):
            _own_names(what, dialect, named)
            inserts.append(what)
            continue
        rows = []
        for _row in range(count):
            rows.append(
                {k: bindparam(f"queued{n + c}", type_=what.c[k].type) for c, k in enumerate(keys)}
            )
            n += len(keys)
        inserts.append(insert(what).values(rows))
    if statement is None:
        statement = inserts.pop()
    elif any(not isinstance(what, Table) for what, _keys, _count in shape):
        _own_names(statement, dialect, named)
    ctes = [ins.cte(f"queued{i}") for i, ins in enumerate(inserts)]
    combined = statement.add_cte(*ctes) if ctes else statement  # type: ignore[union-attr]
    return _Combined(combined, n, dialect)


def _own_names(statement: Executable, dialect: Any, seen: set[str]) -> None:
    """Add `statement`'s named parameters to `seen`; ValueError if one is there already (two
    statements of one combined statement would be given one value for both)."""
    compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
    names = {bind.key for bind in compiled.binds.values() if not bind.unique}
    if names & seen:
        raise ValueError(f"queued statements share parameter names: {sorted(names & seen)}")
    seen |= names


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
