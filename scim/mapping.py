"""SCIM resources <-> the store: canonical JSON in, Profiles out; stored rows back to JSON.

Attribute names are case-insensitive (RFC 7643 §2.1): incoming keys are first put in canonical
form, unknown attributes dropped. Values are taken as the IdPs really send them: Entra's
"True"/"False" strings, a bare-string manager, flattened `urn:...:User:department` keys.
"""

from __future__ import annotations

import functools
import json
import operator
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import and_, bindparam, func, literal_column, select
from sqlalchemy.orm import Session

import policies
from bridge import accounts
from bridge.models import (
    Group,
    Membership,
    ScimToken,
    User,
    UserAddress,
    UserEmail,
    UserPhoneNumber,
)
from bridge.provisioning import NewUser
from scim import listing, schema
from scim.errors import InvalidValue

NAME_FIELDS = {
    "formatted": "formatted_name",
    "familyName": "family_name",
    "givenName": "given_name",
    "middleName": "middle_name",
    "honorificPrefix": "honorific_prefix",
    "honorificSuffix": "honorific_suffix",
}
CORE_FIELDS = {
    "displayName": "display_name",
    "nickName": "nick_name",
    "profileUrl": "profile_url",
    "title": "title",
    "userType": "user_type",
    "preferredLanguage": "preferred_language",
    "locale": "locale",
    "timezone": "timezone",
}
ENTERPRISE_FIELDS = {
    "employeeNumber": "employee_number",
    "costCenter": "cost_center",
    "organization": "organization",
    "division": "division",
    "department": "department",
}
MULTI_FIELDS = {"emails": "emails", "phoneNumbers": "phone_numbers", "addresses": "addresses"}
ADDRESS_FIELDS = {
    "formatted": "formatted",
    "streetAddress": "street_address",
    "locality": "locality",
    "region": "region",
    "postalCode": "postal_code",
    "country": "country",
}


def canonical(doc: Mapping[str, Any], resource: schema.Resource) -> dict[str, Any]:
    """`doc` with canonical attribute names, extension attributes under their URN, unknowns gone."""
    out: dict[str, Any] = {}
    ext_urn = resource.extension
    for key, value in doc.items():
        if not isinstance(key, str):
            continue
        if ext_urn and key.lower() == ext_urn.lower():
            if not isinstance(value, Mapping):
                raise InvalidValue(f"{ext_urn} must be an object")
            ext = out.setdefault(ext_urn, {})
            ext.update(_canonical_attrs(value, resource, ext_urn))
            continue
        urn, _, name = key.rpartition(":")
        if urn and ext_urn and urn.lower() == ext_urn.lower():
            out.setdefault(ext_urn, {}).update(_canonical_attrs({name: value}, resource, ext_urn))
        elif urn and urn.lower() == resource.schema.lower():
            out.update(_canonical_attrs({name: value}, resource, None))
        elif not urn:
            out.update(_canonical_attrs({key: value}, resource, None))
    return out


def _canonical_attrs(
    doc: Mapping[str, Any], resource: schema.Resource, urn: str | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        attr = resource.attr(key, urn)
        if attr is None:
            continue
        out[attr.name] = canonical_value(attr, value)
    return out


def canonical_value(attr: schema.Attr, value: Any) -> Any:
    """A value with canonical sub-attribute names (complex and multi-valued attributes)."""
    if attr.type != "complex" or value is None:
        return value
    if attr.multi:
        if isinstance(value, Mapping):
            value = [value]
        if not isinstance(value, list):
            raise InvalidValue(f"{attr.name} must be a list")
        return [_canonical_sub(attr, v) for v in value]
    if attr.name == "manager" and isinstance(value, str | int):  # Entra: a bare string id
        return {"value": str(value)}
    return _canonical_sub(attr, value)


def _canonical_sub(attr: schema.Attr, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidValue(f"each value of {attr.name} must be an object")
    out: dict[str, Any] = {}
    for key, sub_value in value.items():
        sub = attr.child(str(key))
        if sub is not None:
            out[sub.name] = sub_value
    return out


def _string(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidValue(f"{name} must be a string")
    return str(value)


def external_id(value: Any) -> str | None:
    """An externalId as a user's or a group's is kept: "" is none, a number its text."""
    return _string("externalId", value)


def flag(name: str, value: Any) -> bool:
    """A boolean; Entra sends "True"/"False" strings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InvalidValue(f"{name} must be true or false")


def user_profile(doc: Mapping[str, Any], *, active: bool | None = None) -> policies.Profile:
    """The Profile a canonical User document describes: every stored field set (PUT semantics).

    `active` is what an absent `active` means: true on create, unset after a PATCH removes it.
    """
    user_name = _string("userName", doc.get("userName"))
    if not user_name or not user_name.strip():
        raise InvalidValue("userName is required")
    fields: dict[str, Any] = {"external_id": external_id(doc.get("externalId"))}
    fields["active"] = active if doc.get("active") is None else flag("active", doc["active"])
    name = doc.get("name") or {}
    if not isinstance(name, Mapping):
        raise InvalidValue("name must be an object")
    for key, column in NAME_FIELDS.items():
        fields[column] = _string(f"name.{key}", name.get(key))
    for key, column in CORE_FIELDS.items():
        fields[column] = _string(key, doc.get(key))
    ext = doc.get(schema.ENTERPRISE) or {}
    for key, column in ENTERPRISE_FIELDS.items():
        fields[column] = _string(key, ext.get(key))
    fields["manager_id"] = _manager(ext.get("manager"))
    for key, column in MULTI_FIELDS.items():
        fields[column] = [_entry(key, e) for e in doc.get(key) or []]
    return policies.Profile(
        source=policies.Source.SCIM,
        user_name=user_name.strip(),
        external_id=fields["external_id"],
        fields=fields,
    )


def _manager(value: Any) -> str | None:
    raw = value.get("value") if isinstance(value, Mapping) else value
    return _string("manager.value", raw)


def _entry(attr: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": _string(f"{attr}.type", entry.get("type")),
        "primary": False
        if entry.get("primary") is None
        else flag(f"{attr}.primary", entry["primary"]),
    }
    if attr == "addresses":
        for key, column in ADDRESS_FIELDS.items():
            out[column] = _string(f"addresses.{key}", entry.get(key))
    else:
        out["value"] = _string(f"{attr}.value", entry.get("value"))
        out["display"] = _string(f"{attr}.display", entry.get("display"))
        if out["value"] is None:
            raise InvalidValue(f"every entry of {attr} needs a value")
    return out


def etag(version: int) -> str:
    return f'W/"{version}"'


def _meta(kind: str, row: Any, location: str) -> dict[str, Any]:
    return {
        "resourceType": kind,
        "created": _time(row.created),
        "lastModified": _time(row.last_modified),
        "location": location,
        "version": etag(row.version),
    }


def _time(at: Any) -> str:
    # Stored to the microsecond: shown to the microsecond, so that `meta.lastModified eq` (or
    # `gt`) the value a client read selects (or skips) that very resource.
    return str(at.isoformat(timespec="microseconds").replace("+00:00", "Z"))


def _drop_empty(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if v not in (None, [], {})}


# A User document is read as one row (bridge.models.User's columns, no ORM object): its e-mails,
# phone numbers, addresses and groups come in the same row as JSON arrays, aggregated by the
# database (json_agg on PostgreSQL, json_group_array on SQLite). Managers are one more query,
# when there are any.
_SKIPPED = ("saml_attributes", "user_name_key")
USER_COLUMNS = tuple(c for c in User.__table__.c if c.name not in _SKIPPED)
_MULTI_KEYS = ("value", "type", "primary", "display")
_ADDRESS_COLUMNS = tuple(ADDRESS_FIELDS.values())


def _json_array(dialect: str, where: Any, source: Any, pairs: Iterable[tuple[str, Any]]) -> Any:
    """`source`'s rows where `where`, as a JSON array of objects (NULL or [] when none)."""
    args = [a for key, column in pairs for a in (literal_column(f"'{key}'"), column)]
    if dialect == "postgresql":
        agg = func.json_agg(func.json_build_object(*args))
    else:
        agg = func.json_group_array(func.json_object(*args))
    return select(agg).select_from(source).where(where).scalar_subquery()


@functools.cache
def user_columns(dialect: str) -> tuple[Any, ...]:
    """What a User document is built from, one row per user (see user_documents)."""

    def multi(model: Any, keys: Iterable[str]) -> Any:
        pairs = [("position", model.position), *((k, getattr(model, k)) for k in keys)]
        return _json_array(dialect, model.user_id == User.id, model.__table__, pairs)

    groups = _json_array(
        dialect,
        Membership.user_id == User.id,
        Membership.__table__.join(Group.__table__, Group.id == Membership.group_id),
        [("id", Group.id), ("display", Group.display_name)],
    )
    return (
        *USER_COLUMNS,
        multi(UserEmail, _MULTI_KEYS).label("emails_json"),
        multi(UserPhoneNumber, _MULTI_KEYS).label("phone_numbers_json"),
        multi(UserAddress, ("type", "primary", *_ADDRESS_COLUMNS)).label("addresses_json"),
        groups.label("groups_json"),
    )


@functools.cache
def user_by_id(dialect: str) -> Any:
    """One user's document row by `account_id` and `user_id` (bound parameters), built once."""
    return select(*user_columns(dialect)).where(
        User.account_id == bindparam("account_id"), User.id == bindparam("user_id")
    )


# the SCIM token for scim.listing.page_with_token: its row, and the account it names
TOKEN = listing.Token(
    accounts.BY_HASH,
    accounts.BY_HASH.with_only_columns(ScimToken.account_id).scalar_subquery(),
)


@functools.cache
def user_with_token(dialect: str) -> Any:
    """The token's row (accounts.BY_HASH) with the document row of the user `user_id` of the
    token's account outer-joined: a GET by id's two reads in one statement (accounts.token_use).
    The user's columns are NULL when the account has no such user; the join binds the user to
    the token's account, so no other account's user is ever read."""
    return accounts.BY_HASH.add_columns(*user_columns(dialect)).outerjoin(
        User, and_(User.account_id == ScimToken.account_id, User.id == bindparam("user_id"))
    )


def user_row(db: Session, account_id: int, user_id: uuid.UUID) -> Any:
    """The document row of one user of the account, or None."""
    stmt = user_by_id(db.get_bind().dialect.name)
    params = {"account_id": account_id, "user_id": user_id}
    return db.connection().execute(stmt, params).first()  # Core rows: no ORM machinery


def _array(raw: Any) -> list[dict[str, Any]]:
    # SQLite answers JSON text; psycopg parses PostgreSQL's json itself
    if raw is None:
        return []
    return json.loads(raw) if isinstance(raw, str) else list(raw)


def user_documents(db: Session | None, rows: Sequence[Any], base: str) -> list[dict[str, Any]]:
    """SCIM User documents from rows of user_columns: managers in one query when there are any
    (`db` may be None when none of the rows has one)."""
    manager_ids = {m for r in rows if (m := _uuid(r.manager_id)) is not None}
    managers: dict[str, str | None] = {}
    if manager_ids:
        if db is None:
            raise ValueError("rows with a manager need a session to read the managers")
        for mid, display, user_name in db.execute(
            select(User.id, User.display_name, User.user_name).where(
                User.account_id == rows[0].account_id, User.id.in_(manager_ids)
            )
        ):
            managers[str(mid)] = display or user_name
    docs = []
    for r in rows:
        kids = {
            "emails": _array(r.emails_json),
            "phone_numbers": _array(r.phone_numbers_json),
            "addresses": _array(r.addresses_json),
        }
        for entries in kids.values():
            entries.sort(key=lambda e: e["position"])
        docs.append(_user_doc(r, _groups(_array(r.groups_json), base), managers, base, kids))
    return docs


def _groups(entries: list[dict[str, Any]], base: str) -> list[dict[str, Any]]:
    """A user's groups, once each (a member by SCIM and by policy), by display name then id."""
    found = {uuid.UUID(str(e["id"])): e["display"] for e in entries}
    return [
        {
            "value": str(group_id),
            "$ref": f"{base}/Groups/{group_id}",
            **({"display": display} if display is not None else {}),  # absent, not null
            "type": "direct",
        }
        for group_id, display in sorted(found.items(), key=lambda kv: (kv[1], kv[0]))
    ]


def stored_user(user: User, base: str) -> dict[str, Any]:
    """The document of a stored user from their ORM row and its loaded collections, without
    their groups or their manager's name (read-only: what a PATCH is applied to)."""
    kids = {
        "emails": [_fields(e, _MULTI_KEYS) for e in user.emails],
        "phone_numbers": [_fields(p, _MULTI_KEYS) for p in user.phone_numbers],
        "addresses": [_fields(a, ("type", "primary", *_ADDRESS_COLUMNS)) for a in user.addresses],
    }
    return _user_doc(user, [], {}, base, kids)


def _fields(row: Any, keys: Iterable[str]) -> dict[str, Any]:
    return {k: getattr(row, k) for k in keys}


def created_user(user: NewUser, base: str) -> dict[str, Any]:
    """The document of a user as their create wrote them (in no group)."""
    kids = {"emails": user.emails, "phone_numbers": user.phone_numbers, "addresses": user.addresses}
    return _user_doc(user, [], {}, base, kids)


def _uuid(value: str | None) -> uuid.UUID | None:
    try:
        return None if value is None else uuid.UUID(value)
    except ValueError:
        return None


def _user_doc(
    user: Any,
    groups: list[dict[str, Any]],
    managers: Mapping[str, str | None],
    base: str,
    kids: Mapping[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """A User document from a user (an ORM object or a row of user_columns) and its children.
    Attributes without a value (None, an empty list or object) are left out; an empty string
    is a value. Each group of columns is read with one attrgetter (one call, not one getattr
    per column: a page of users builds a hundred of these)."""
    user_id = str(user.id)
    doc: dict[str, Any] = {"schemas": [schema.CORE_USER], "id": user_id}
    external_id, user_name, active = _HEAD_OF(user)
    if external_id is not None:
        doc["externalId"] = external_id
    if user_name is not None:
        doc["userName"] = user_name
    name = _present(_NAME_OF, user)
    if name:
        doc["name"] = name
    doc.update(_present(_CORE_OF, user))
    if active is not None:
        doc["active"] = active
    for key, entries in (("emails", kids["emails"]), ("phoneNumbers", kids["phone_numbers"])):
        if entries:
            doc[key] = [_multi_doc(e) for e in entries]
    if kids["addresses"]:
        doc["addresses"] = [
            {k: v for k, col in _ADDRESS_KEYS if (v := a[col]) is not None}
            | {"primary": bool(a["primary"])}
            for a in kids["addresses"]
        ]
    if groups:
        doc["groups"] = groups
    ext = _present(_ENTERPRISE_OF, user)
    manager_id = user.manager_id
    if manager_id is not None:
        ext["manager"] = {"value": manager_id}
        if manager_id in managers:
            ext["manager"]["$ref"] = f"{base}/Users/{manager_id}"
            if managers[manager_id] is not None:
                ext["manager"]["displayName"] = managers[manager_id]
    if ext:
        doc["schemas"].append(schema.ENTERPRISE)
        doc[schema.ENTERPRISE] = ext
    doc["meta"] = _meta("User", user, f"{base}/Users/{user_id}")
    return doc


def _getter(fields: Mapping[str, str]) -> tuple[tuple[str, ...], Any]:
    return tuple(fields), operator.attrgetter(*fields.values())


def _present(fields: tuple[tuple[str, ...], Any], user: Any) -> dict[str, Any]:
    keys, get = fields
    return {key: value for key, value in zip(keys, get(user), strict=True) if value is not None}


_HEAD_OF = operator.attrgetter("external_id", "user_name", "active")
_NAME_OF = _getter(NAME_FIELDS)
_CORE_OF = _getter(CORE_FIELDS)
_ENTERPRISE_OF = _getter(ENTERPRISE_FIELDS)
# an address's keys in its document's order: its fields, then type (primary last, always there)
_ADDRESS_KEYS = (*ADDRESS_FIELDS.items(), ("type", "type"))


def _multi_doc(entry: Mapping[str, Any]) -> dict[str, Any]:
    doc = {k: entry[k] for k in _MULTI_KEYS}
    return _drop_empty(doc) | {"primary": bool(doc["primary"])}


# what group_head reads of a group: a page of groups is read as these columns, not ORM objects
GROUP_COLUMNS = (
    Group.id,
    Group.external_id,
    Group.display_name,
    Group.created,
    Group.last_modified,
    Group.version,
)


def group_head(group: Any, base: str) -> dict[str, Any]:
    """A SCIM Group document without its members (from a Group or a row of GROUP_COLUMNS)."""
    return _drop_empty(
        {
            "schemas": [schema.CORE_GROUP],
            "id": str(group.id),
            "externalId": group.external_id,
            "displayName": group.display_name,
            "meta": _meta("Group", group, f"{base}/Groups/{group.id}"),
        }
    )


def group_members(db: Session, group_id: uuid.UUID, base: str) -> Iterator[dict[str, Any]]:
    """A group's members, streamed from the database in batches (memory stays flat)."""
    stmt = (
        select(User.id, User.display_name)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.group_id == group_id)
        .distinct()
        .order_by(User.id)
        .execution_options(yield_per=1000)
    )
    with db.execute(stmt) as rows:
        for user_id, display in rows:
            yield {
                "value": str(user_id),
                "$ref": f"{base}/Users/{user_id}",
                # RFC 7643 §2.5: an unassigned attribute is omitted, never sent as null
                **({"display": display} if display is not None else {}),
                "type": "User",
            }


def member_ids(values: Any) -> list[uuid.UUID]:
    """Member references from a Group document or PATCH value: [{"value": id}, ...]."""
    if values is None:
        return []
    if isinstance(values, Mapping):
        values = [values]
    if not isinstance(values, list):
        raise InvalidValue('members must be a list of {"value": id}')
    out = []
    for entry in values:
        raw = entry.get("value") if isinstance(entry, Mapping) else entry
        kind = entry.get("type") if isinstance(entry, Mapping) else None
        if kind is not None and str(kind).lower() != "user":
            raise InvalidValue("only users can be members (nested groups are not supported)")
        try:
            out.append(uuid.UUID(str(raw)))
        except ValueError:
            raise InvalidValue(f"member {raw!r} is not the id of a user") from None
    return out
