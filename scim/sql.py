"""Filters and sorting compiled to SQLAlchemy expressions through one explicit attribute map.

The database does all filtering, on SQLite and PostgreSQL alike. Every comparison is two-valued
(an absent attribute makes it false, never NULL), so `not (...)` means what it says. Strings that
are not caseExact compare lower-cased (userName, group displayName and e-mail values use their
case-folded key columns, so `eq` uses an index); ordering comparisons use code-point order
(COLLATE "C" on PostgreSQL, SQLite's default) so both databases agree.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    and_,
    bindparam,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)

from bridge.models import (
    Group,
    Membership,
    User,
    UserAddress,
    UserEmail,
    UserPhoneNumber,
    fold,
)
from scim import schema
from scim.errors import InvalidFilter
from scim.filters import And, Compare, Expr, Not, Or, Path, ValuePath

STRING, BOOLEAN, DATETIME, ID, CONSTANT = "string", "boolean", "dateTime", "id", "constant"
ABSENT = "absent"  # an attribute the resource type lacks, in a search across types


class UnknownAttribute(InvalidFilter):
    """The filter names an attribute this resource type does not have."""


@dataclass(frozen=True)
class Field:
    """A filterable attribute: its column, kind, case rule and optional case-folded key column."""

    column: Any
    kind: str = STRING
    case_exact: bool = False
    key: Any = None
    constant: tuple[str, ...] = ()


@dataclass(frozen=True)
class Child:
    """A multi-valued attribute kept in its own table, correlated to the resource row."""

    source: Callable[[], FromClause]
    correlate: Callable[[], ColumnElement[bool]]
    fields: Mapping[str, Field]
    order: Callable[[], tuple[Any, ...]]  # the order the resource shows its values in
    default: str = "value"


@dataclass(frozen=True)
class AttributeMap:
    """Everything a resource type's filters may name, by lower-case path."""

    resource: schema.Resource
    fields: Mapping[str, Field | Child]
    tiebreak: tuple[Any, ...] = field(default=())

    def key(self, path: Path) -> str:
        attr = path.attr.lower()
        if (
            path.urn
            and self.resource.extension
            and path.urn.lower() == self.resource.extension.lower()
        ):
            attr = f"ext:{attr}"
        elif path.urn and path.urn.lower() != self.resource.schema.lower():
            raise UnknownAttribute(f"unknown schema {path.urn!r}")
        return attr

    def lookup(self, path: Path) -> tuple[Field | Child, str | None]:
        """The field (or child table and sub-attribute) `path` names, or InvalidFilter."""
        attr = self.key(path)
        if path.sub is not None and f"{attr}.{path.sub.lower()}" in self.fields:
            return self.fields[f"{attr}.{path.sub.lower()}"], None
        if attr in self.fields:
            return self.fields[attr], path.sub
        raise UnknownAttribute(f"attribute {str(path)!r} cannot be filtered on")


def _multi(model: Any, fk: Any, parent: Any, **extra: Field) -> Child:
    fields: dict[str, Field] = {
        "type": Field(model.type),
        "primary": Field(model.primary, BOOLEAN),
        "display": Field(model.display),
        **extra,
    }
    return Child(lambda: model.__table__, lambda: fk == parent, fields, lambda: (model.position,))


USER_MAP = AttributeMap(
    schema.USERS,
    {
        "id": Field(User.id, ID, True),
        "externalid": Field(User.external_id, case_exact=True),
        "username": Field(User.user_name, key=User.user_name_key),
        "name.formatted": Field(User.formatted_name),
        "name.familyname": Field(User.family_name),
        "name.givenname": Field(User.given_name),
        "name.middlename": Field(User.middle_name),
        "name.honorificprefix": Field(User.honorific_prefix),
        "name.honorificsuffix": Field(User.honorific_suffix),
        "displayname": Field(User.display_name),
        "nickname": Field(User.nick_name),
        "profileurl": Field(User.profile_url),
        "title": Field(User.title),
        "usertype": Field(User.user_type),
        "preferredlanguage": Field(User.preferred_language),
        "locale": Field(User.locale),
        "timezone": Field(User.timezone),
        "active": Field(User.active, BOOLEAN),
        "meta.created": Field(User.created, DATETIME),
        "meta.lastmodified": Field(User.last_modified, DATETIME),
        "meta.resourcetype": Field(None, CONSTANT, constant=("User",)),
        "schemas": Field(None, CONSTANT, True, constant=tuple(schema.USERS.schemas)),
        "emails": _multi(
            UserEmail,
            UserEmail.user_id,
            User.id,
            value=Field(UserEmail.value, key=UserEmail.value_key),
        ),
        "phonenumbers": _multi(
            UserPhoneNumber, UserPhoneNumber.user_id, User.id, value=Field(UserPhoneNumber.value)
        ),
        "addresses": Child(
            lambda: UserAddress.__table__,
            lambda: UserAddress.user_id == User.id,
            {
                "type": Field(UserAddress.type),
                "primary": Field(UserAddress.primary, BOOLEAN),
                "formatted": Field(UserAddress.formatted),
                "streetaddress": Field(UserAddress.street_address),
                "locality": Field(UserAddress.locality),
                "region": Field(UserAddress.region),
                "postalcode": Field(UserAddress.postal_code),
                "country": Field(UserAddress.country),
            },
            lambda: (UserAddress.position,),
            default="formatted",
        ),
        "groups": Child(
            lambda: Membership.__table__.join(Group.__table__, Group.id == Membership.group_id),
            lambda: Membership.user_id == User.id,
            {"value": Field(Membership.group_id, ID, True), "display": Field(Group.display_name)},
            lambda: (Group.display_name, Group.id),  # scim.mapping.user_documents
        ),
        "ext:employeenumber": Field(User.employee_number),
        "ext:costcenter": Field(User.cost_center),
        "ext:organization": Field(User.organization),
        "ext:division": Field(User.division),
        "ext:department": Field(User.department),
        "ext:manager": Field(User.manager_id, case_exact=True),
        "ext:manager.value": Field(User.manager_id, case_exact=True),
    },
    tiebreak=(User.created, User.id),
)

GROUP_MAP = AttributeMap(
    schema.GROUPS,
    {
        "id": Field(Group.id, ID, True),
        "externalid": Field(Group.external_id, case_exact=True),
        "displayname": Field(Group.display_name, key=Group.display_name_key),
        "meta.created": Field(Group.created, DATETIME),
        "meta.lastmodified": Field(Group.last_modified, DATETIME),
        "meta.resourcetype": Field(None, CONSTANT, constant=("Group",)),
        "schemas": Field(None, CONSTANT, True, constant=(schema.CORE_GROUP,)),
        "members": Child(
            lambda: Membership.__table__.join(User.__table__, User.id == Membership.user_id),
            lambda: Membership.group_id == Group.id,
            {
                "value": Field(Membership.user_id, ID, True),
                "display": Field(User.display_name),
                "type": Field(None, CONSTANT, constant=("User",)),
            },
            lambda: (User.id,),  # scim.mapping.group_members
        ),
    },
    tiebreak=(Group.created, Group.id),
)


ORDERED = ("eq", "ne", "gt", "ge", "lt", "le")


def shape(expr: Expr) -> tuple[Any, list[str], dict[int, int]]:
    """A filter with its string values taken out: (a hashable key, the values, slot by node).

    Filters of one shape compile to one statement whose string comparisons are bound parameters
    (Compiler(slots=...)), so a lookup by userName is built once, not per request. Other values
    stay in the key with their type (1 and true are different filters)."""
    values: list[str] = []
    slots: dict[int, int] = {}

    def walk(e: Expr) -> Any:
        if isinstance(e, And | Or):
            return (type(e).__name__, walk(e.left), walk(e.right))
        if isinstance(e, Not):
            return ("not", walk(e.expr))
        if isinstance(e, ValuePath):
            return ("[]", e.path, walk(e.filter))
        if isinstance(e.value, str):
            slots[id(e)] = len(values)
            values.append(e.value)
            return (e.path, e.op, "?")
        return (e.path, e.op, type(e.value).__name__, e.value)

    return walk(expr), values, slots


class Compiler:
    """Compiles one filter for one attribute map and dialect.

    With `slots` (from shape), a string compared to a string attribute by eq, ne, gt, ge, lt or
    le becomes the bound parameter `v<slot>`, and `binds[slot]` says how its value is put in
    key form; `value_dependent` says a string value was used otherwise (the statement holds it).
    """

    def __init__(
        self,
        amap: AttributeMap,
        dialect: str,
        *,
        lenient: bool = False,
        slots: Mapping[int, int] | None = None,
    ) -> None:
        self.amap, self.dialect, self.lenient = amap, dialect, lenient
        self.slots = slots or {}
        self.binds: dict[int, Callable[[str], str]] = {}
        self.value_dependent = False

    def where(self, expr: Expr) -> ColumnElement[bool]:
        return self._expr(expr, self._lookup)

    def _lookup(self, path: Path) -> tuple[Field | Child, str | None]:
        try:
            return self.amap.lookup(path)
        except UnknownAttribute:
            if not self.lenient:
                raise
            # RFC 7644 §3.4.2.2: across resource types, an attribute a type lacks has no value.
            return Field(None, ABSENT), None

    def _expr(self, expr: Expr, lookup: Callable[[Path], tuple[Field | Child, str | None]]) -> Any:
        if isinstance(expr, And):
            return and_(self._expr(expr.left, lookup), self._expr(expr.right, lookup))
        if isinstance(expr, Or):
            return or_(self._expr(expr.left, lookup), self._expr(expr.right, lookup))
        if isinstance(expr, Not):
            return not_(self._expr(expr.expr, lookup))
        if isinstance(expr, ValuePath):
            target, sub = lookup(expr.path)
            if not isinstance(target, Child) or sub is not None:
                raise InvalidFilter(f"{expr.path} is not a multi-valued attribute")
            inner = self._expr(expr.filter, _child_lookup(target, expr.path))
            return self._exists(target, inner)
        target, sub = lookup(expr.path)
        if isinstance(target, Child):
            name = (sub or target.default).lower()
            if name not in target.fields:
                raise InvalidFilter(f"{expr.path} has no sub-attribute {name!r}")
            if expr.op == "pr" or (expr.value is None and expr.op in ("eq", "ne")):
                # RFC 7644 §3.4.2.2 `pr`: a complex attribute is present if it holds any entry
                # (an address with only a locality counts); with a sub-attribute, that one's value
                some = Compare(expr.path, "pr")
                cond = true() if sub is None else self._compare(target.fields[name], some)
                present = self._exists(target, cond)
                return not_(present) if expr.op == "eq" else present
            return self._exists(target, self._compare(target.fields[name], expr))
        if sub is not None:
            raise InvalidFilter(f"{expr.path} has no sub-attribute {sub!r}")
        return self._compare(target, expr)

    def _exists(self, child: Child, cond: Any) -> Any:
        return exists(select(literal(1)).select_from(child.source()).where(child.correlate(), cond))

    def _compare(self, f: Field, expr: Compare) -> Any:
        op, value = expr.op, expr.value
        if f.kind != STRING and id(expr) in self.slots:
            self.value_dependent = True
        if f.kind == ABSENT:
            return false()
        if f.kind == CONSTANT:
            return _constant(f, op, value, expr.path)
        col = f.column
        present = col.is_not(None)
        if f.kind == STRING:
            present = and_(present, col != "")
        if op == "pr":
            return present
        if value is None:  # `eq null` asks for absence, `ne null` for presence
            if op in ("eq", "ne"):
                return not_(present) if op == "eq" else present
            raise InvalidFilter(f"{expr.path} {op} null compares nothing")
        if f.kind == BOOLEAN:
            if op not in ("eq", "ne"):
                raise InvalidFilter(f"{expr.path} is a boolean: only eq, ne and pr apply")
            flag = boolean(value, expr.path)
            return and_(present, col == flag if op == "eq" else col != flag)
        if f.kind == DATETIME:
            if op in ("co", "sw", "ew"):
                raise InvalidFilter(f"{expr.path} is a dateTime: {op} does not apply")
            return and_(present, _ordered(col, op, timestamp(value, expr.path)))
        if f.kind == ID:
            if op not in ("eq", "ne"):
                raise InvalidFilter(f"{expr.path} is an identifier: only eq, ne and pr apply")
            wanted = identifier(value)
            if wanted is None:
                return false() if op == "eq" else present
            return and_(present, col == wanted if op == "eq" else col != wanted)
        text = value if isinstance(value, str) else _text(value)
        key_form: Callable[[str], str]
        if f.key is not None:
            target, key_form = f.key, fold
        elif f.case_exact:
            target, key_form = col, _same
        else:
            target, key_form = func.lower(col), str.lower
        text = key_form(text)
        slot = self.slots.get(id(expr))
        if slot is not None and op in ORDERED:
            self.binds[slot] = key_form
            text = bindparam(f"v{slot}", text, type_=target.type)
        elif slot is not None:
            self.value_dependent = True
        if op == "co":
            cond = target.contains(text, autoescape=True)
        elif op == "sw":
            cond = target.startswith(text, autoescape=True)
        elif op == "ew":
            cond = target.endswith(text, autoescape=True)
        else:
            if op not in ("eq", "ne") and self.dialect == "postgresql":
                target = target.collate("C")
            cond = _ordered(target, op, text)
        return and_(present, cond)


def _child_lookup(child: Child, parent: Path) -> Callable[[Path], tuple[Field | Child, str | None]]:
    def lookup(path: Path) -> tuple[Field | Child, str | None]:
        name = path.attr.lower()
        if path.sub is not None or path.urn is not None or name not in child.fields:
            raise InvalidFilter(f"{parent}[...] has no sub-attribute {str(path)!r}")
        return child.fields[name], None

    return lookup


def _ordered(target: Any, op: str, value: Any) -> Any:
    ops = {
        "eq": target.__eq__,
        "ne": target.__ne__,
        "gt": target.__gt__,
        "ge": target.__ge__,
        "lt": target.__lt__,
        "le": target.__le__,
    }
    if op not in ops:
        raise InvalidFilter(f"the operator {op!r} does not apply here")
    return ops[op](value)


def _constant(f: Field, op: str, value: Any, path: Path) -> Any:
    if op == "pr":
        return true()
    if op not in ("eq", "ne") or not isinstance(value, str):
        raise InvalidFilter(f"{path} can only be compared with eq or ne and a string")
    hit = any((c == value) if f.case_exact else (c.lower() == value.lower()) for c in f.constant)
    return true() if hit == (op == "eq") else false()


def _same(value: str) -> str:
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def boolean(value: Any, path: Path | str) -> bool:
    """A boolean compValue; Entra sends "True"/"False" strings, which we take too."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidFilter(f"{path} is a boolean; compare it with true or false")


def timestamp(value: Any, path: Path | str) -> datetime:
    """A dateTime compValue (xsd:dateTime, RFC 7643 §2.3.5), as aware UTC."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)  # Python 3.11+ reads "Z"
        except ValueError:
            parsed = None
        try:
            if parsed is not None:
                aware = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
                return aware.astimezone(UTC)
        except OverflowError:  # "9999-12-31T23:59:59-14:00" is past year 9999 in UTC
            raise InvalidFilter(
                f"{path}: {value!r} is outside the years 1 to 9999 in UTC"
            ) from None
    raise InvalidFilter(f"{path} is a dateTime; compare it with a quoted xsd:dateTime")


def identifier(value: Any) -> uuid.UUID | None:
    """An id compValue as a UUID; anything else matches no resource."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def sort_key(amap: AttributeMap, sort_by: str, dialect: str) -> Any:
    """The expression to order by for `sortBy`. RFC 7644 §3.4.2.3: a multi-valued attribute sorts
    by its primary value if any, "or else the first value in the array"."""
    from scim.filters import parse_path

    target = parse_path(sort_by, tuple(amap.resource.schemas))
    if target.filter is not None:
        raise InvalidFilter(f"cannot sort by {sort_by!r}")
    try:
        found, sub = amap.lookup(target.path)
    except UnknownAttribute:  # its message speaks of filtering
        raise UnknownAttribute(f"cannot sort by {sort_by!r}: no such attribute") from None
    if isinstance(found, Child):
        name = (sub or found.default).lower()
        if name not in found.fields or found.fields[name].kind == CONSTANT:
            raise InvalidFilter(f"cannot sort by {sort_by!r}")
        col = found.fields[name].column
        order = [found.fields["primary"].column.desc()] if "primary" in found.fields else []
        expr: Any = (
            select(col)
            .select_from(found.source())
            .where(found.correlate())
            .order_by(*order, *found.order())
            .limit(1)
            .scalar_subquery()
        )
        case_exact = found.fields[name].case_exact
        kind = found.fields[name].kind
    else:
        if sub is not None or found.kind == CONSTANT:
            raise InvalidFilter(f"cannot sort by {sort_by!r}")
        expr = found.key if found.key is not None else found.column
        case_exact = found.key is not None or found.case_exact
        kind = found.kind
    if kind == STRING and not case_exact:
        expr = func.lower(expr)
    if kind == STRING and dialect == "postgresql":
        expr = expr.collate("C")
    return expr
