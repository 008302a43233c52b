"""List and search requests (RFC 7644 §3.4.2, §3.4.3): parameters, a stable page, projection."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select, true
from sqlalchemy.orm import Session

from scim import schema
from scim.errors import InvalidValue
from scim.filters import Expr, parse
from scim.sql import AttributeMap, Compiler, UnknownAttribute, shape, sort_key

MAX_PAGE = 1000
DEFAULT_PAGE = 100


@dataclass(frozen=True)
class Projection:
    """`attributes` / `excludedAttributes` (§3.4.2.5), as lower-case (urn, attr, sub) triples."""

    include: frozenset[tuple[str, str, str]] = frozenset()
    exclude: frozenset[tuple[str, str, str]] = frozenset()

    @classmethod
    def parse(cls, resource: schema.Resource, attributes: Any, excluded: Any) -> Projection:
        return cls(_refs(resource, attributes), _refs(resource, excluded))

    def wants(self, urn: str, attr: str) -> bool:
        """Whether a top-level attribute (e.g. a group's members) is to be returned at all."""
        key = (urn.lower(), attr.lower())
        if self.include:
            return any(ref[:2] == key for ref in self.include)
        return not any(ref[:2] == key and not ref[2] for ref in self.exclude)

    def apply(self, doc: dict[str, Any], resource: schema.Resource) -> dict[str, Any]:
        if not self.include and not self.exclude:
            return doc
        out: dict[str, Any] = {}
        for key, value in doc.items():
            if resource.extension and key == resource.extension:
                ext = {k: v for k, v in value.items() if self._keep(key, k)}
                ext = {k: self._subs(key, k, v) for k, v in ext.items()}
                if ext:
                    out[key] = ext
            elif key in ("id", "schemas") or self._keep(resource.schema, key):
                out[key] = self._subs(resource.schema, key, value)
        return out

    def member(self, entry: dict[str, Any]) -> dict[str, Any]:
        """One entry of a group's members, with only the sub-attributes asked for."""
        return dict(self._subs(schema.CORE_GROUP, "members", entry))

    def _keep(self, urn: str, attr: str) -> bool:
        key = (urn.lower(), attr.lower())
        if self.include:
            return any(ref[:2] == key or ref == (urn.lower(), "", "") for ref in self.include)
        return not any(ref[:2] == key and not ref[2] for ref in self.exclude)

    def _subs(self, urn: str, attr: str, value: Any) -> Any:
        key = (urn.lower(), attr.lower())
        wanted = {ref[2] for ref in self.include if ref[:2] == key and ref[2]}
        dropped = {ref[2] for ref in self.exclude if ref[:2] == key and ref[2]}
        if any(ref[:2] == key and not ref[2] for ref in self.include):
            wanted = set()

        def keep(item: Any) -> Any:
            if not isinstance(item, dict):
                return item
            return {
                k: v
                for k, v in item.items()
                if (not wanted or k.lower() in wanted) and k.lower() not in dropped
            }

        if not wanted and not dropped:
            return value
        return [keep(v) for v in value] if isinstance(value, list) else keep(value)


def _refs(resource: schema.Resource, raw: Any) -> frozenset[tuple[str, str, str]]:
    if raw is None or raw == "":
        return frozenset()
    items = raw if isinstance(raw, list) else str(raw).split(",")
    refs = set()
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        urn = resource.schema
        lowered = text.lower()
        for candidate in resource.schemas:
            if lowered == candidate.lower():
                urn, text = candidate, ""
                break
            if lowered.startswith(candidate.lower() + ":"):
                urn, text = candidate, text[len(candidate) + 1 :]
                break
        attr, _, sub = text.partition(".")
        if (
            urn == resource.schema
            and attr
            and resource.attr(attr) is None
            and resource.extension
            and resource.attr(attr, resource.extension) is not None
        ):
            urn = resource.extension
        refs.add((urn.lower(), attr.lower(), sub.lower()))
    return frozenset(refs)


@dataclass(frozen=True)
class Query:
    """A list or search request, validated."""

    filter: Expr | None = None
    start: int = 1
    count: int = DEFAULT_PAGE
    sort_by: str | None = None
    descending: bool = False
    attributes: Any = None
    excluded: Any = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Query:
        """From query-string parameters or a SearchRequest body (names are case-insensitive)."""
        p = {str(k).lower(): v for k, v in params.items()}
        text = p.get("filter")
        order = str(p.get("sortorder") or "ascending").lower()
        if order not in ("ascending", "descending"):
            raise InvalidValue("sortOrder must be ascending or descending")
        return cls(
            filter=parse(str(text)) if text not in (None, "") else None,
            start=max(1, _int(p.get("startindex"), 1, "startIndex")),
            count=min(MAX_PAGE, max(0, _int(p.get("count"), DEFAULT_PAGE, "count"))),
            sort_by=str(p["sortby"]) if p.get("sortby") else None,
            descending=order == "descending",
            attributes=p.get("attributes"),
            excluded=p.get("excludedattributes"),
        )


MAX_INDEX = 2**31 - 1  # what an OFFSET/LIMIT may be on both databases
DIGITS = len(str(MAX_INDEX))  # more significant digits: out of range, whatever they are


def _int(value: Any, default: int, name: str) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON 10.0
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidValue(f"{name} must be an integer")
    if isinstance(value, str):  # digits past int()'s 4,300 are out of range, not malformed
        text = value.strip()
        digits = text[1:] if text.startswith(("+", "-")) else text
        if digits.isascii() and digits.isdigit() and len(digits.lstrip("0")) > DIGITS:
            raise InvalidValue(f"{name} must be between -{MAX_INDEX} and {MAX_INDEX}")
    try:
        number = int(value)
    except ValueError:
        raise InvalidValue(f"{name} must be an integer") from None
    if abs(number) > MAX_INDEX:
        raise InvalidValue(f"{name} must be between -{MAX_INDEX} and {MAX_INDEX}")
    return number


def page(
    db: Session,
    amap: AttributeMap,
    model: Any,
    account_id: int,
    query: Query,
    *,
    lenient: bool = False,
    columns: tuple[Any, ...] = (),
) -> tuple[int, list[Any]]:
    """totalResults and one page of rows, in a stable order, filtered by the database.

    One query in the usual case: the page's ids are chosen (with the count of every match, a
    window over the filtered rows) and their rows read by a join. A page past the end or of
    count 0 counts apart. `lenient` (searches across resource types): attributes a type lacks
    have no value. `columns`: what to read of each row (Core rows), instead of `model` objects.
    The statements are built once per filter shape (scim.sql.shape): values are parameters.
    """
    dialect = db.get_bind().dialect.name
    ids, found_stmt, params = _prepared(amap, model, dialect, query, lenient, columns, None)
    params["account_id"] = account_id
    if query.count == 0:
        return _count(db, ids, params), []
    # Core rows need no ORM session machinery: they are read on the session's connection
    found = (db.connection() if columns else db).execute(found_stmt, params).all()
    if not found:  # past the end (or nothing matches): how many there are, apart
        return (_count(db, ids, params) if query.start > 1 else 0), []
    return int(found[0].total), (list(found) if columns else [row[0] for row in found])


@dataclass(frozen=True, eq=False)  # a statement cache's key: the same object, not an equal one
class Token:
    """A request's token, to be read with its page (page_with_token): the statement of the
    token's row (its columns labelled apart from the page's) and the account it names (a scalar
    subquery over the same row)."""

    row: Any
    account: Any


def page_with_token(
    amap: AttributeMap,
    model: Any,
    dialect: str,
    query: Query,
    token: Token,
    columns: tuple[Any, ...],
) -> tuple[Any, dict[str, Any]]:
    """page's statement for the account of `token`, with the token's row in front and the page
    outer-joined to it: a request's token and its page in one statement. Every row answered
    carries the token's columns; a page with no rows is one row whose page columns are NULL.
    The caller checks the token before it uses anything else (accounts.token_use), then reads
    the page with page_rows. Not for `count` 0 (page counts apart)."""
    _ids, found, params = _prepared(amap, model, dialect, query, False, columns, token)
    return found, params


def page_rows(rows: list[Any], query: Query) -> tuple[int, list[Any]] | None:
    """totalResults and the page from page_with_token's rows (the token already checked); None
    when they cannot say (an empty page past the start: page counts it)."""
    if rows[0].total is not None:
        return int(rows[0].total), rows
    return (0, []) if query.start == 1 else None


def _prepared(
    amap: AttributeMap,
    model: Any,
    dialect: str,
    query: Query,
    lenient: bool,
    columns: tuple[Any, ...],
    token: Token | None,
) -> tuple[Any, Any, dict[str, Any]]:
    """The ids statement and the page's (built once per shape), and their parameters but the
    account's."""
    params: dict[str, Any] = {"offset": query.start - 1, "limit": query.count}
    key: tuple[Any, ...] | None = None
    values: list[str] = []
    slots: dict[int, int] = {}
    if query.filter is not None:
        key, values, slots = shape(query.filter)
    cache_key = (amap.resource.name, model, dialect, key, query.sort_by, query.descending)
    cache_key += (lenient, columns, token)
    built = _BUILT.get(cache_key)
    if built is None:
        compiler = Compiler(amap, dialect, lenient=lenient, slots=slots)
        built = _statements(amap, model, dialect, query, compiler, columns, token)
        if not compiler.value_dependent:
            with _BUILDING:
                if len(_BUILT) >= _BUILT_MAX:  # the oldest shape goes
                    _BUILT.pop(next(iter(_BUILT)))
                _BUILT[cache_key] = built
    ids, found_stmt, binds = built
    params.update({f"v{slot}": form(values[slot]) for slot, form in binds.items()})
    return ids, found_stmt, params


# Page statements by filter shape, sort and columns: a few hundred at most are kept
_BUILT: dict[tuple[Any, ...], tuple[Any, Any, dict[int, Any]]] = {}
_BUILT_MAX = 500
_BUILDING = threading.Lock()


def _statements(
    amap: AttributeMap,
    model: Any,
    dialect: str,
    query: Query,
    compiler: Compiler,
    columns: tuple[Any, ...],
    token: Token | None = None,
) -> tuple[Any, Any, dict[int, Any]]:
    """The ids a query selects, the statement of its page and the filter's bound values' forms
    (with `token`: page_with_token's statement)."""
    account = bindparam("account_id") if token is None else token.account
    ids = select(model.id).where(model.account_id == account)
    if query.filter is not None:
        ids = ids.where(compiler.where(query.filter))
    order: list[Any] = []
    if query.sort_by:
        try:
            key = sort_key(amap, query.sort_by, dialect)
        except UnknownAttribute:
            if not compiler.lenient:
                raise
            key = None
        if key is not None:
            order += [key.is_(None), key.desc() if query.descending else key.asc()]
    order += list(amap.tiebreak)
    chosen = (
        ids.add_columns(
            func.row_number().over(order_by=order).label("position"),
            func.count().over().label("total"),
        )
        .order_by(*order)
        .offset(bindparam("offset"))
        .limit(bindparam("limit"))
        .cte("chosen")
    )
    if dialect == "postgresql":
        # chosen once: joined as a subquery, a planner that thinks the account has one user (a
        # table filled since its last ANALYZE) re-ran the window for every row (45 ms a page at
        # 450 users)
        chosen = chosen.prefix_with("MATERIALIZED")
    if token is not None:  # the token's row, the page outer-joined to it
        row = token.row.subquery("token")
        rows = model.__table__.join(chosen, chosen.c.id == model.id)
        found = (
            select(*row.c, *columns, chosen.c.total)
            .select_from(row.outerjoin(rows, true()))
            .order_by(chosen.c.position)
        )
        return ids, found, compiler.binds
    found = (
        select(*(columns or [model]), chosen.c.total)
        .join(chosen, chosen.c.id == model.id)
        .order_by(chosen.c.position)
    )
    return ids, found, compiler.binds


def _count(db: Session, ids: Any, params: dict[str, Any]) -> int:
    return db.scalar(select(func.count()).select_from(ids.subquery()), params) or 0


def list_response(total: int, start: int, resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schemas": [schema.LIST_RESPONSE],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }
