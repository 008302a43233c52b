"""PATCH (RFC 7644 §3.5.2): operations applied to a User document, or turned into a group change.

Users: every operation applies, in order, to a copy of the canonical document; the result then
replaces the user in one write, so all operations land or none do. Groups: operations become one
membership delta (never loading a large group's members), plus attribute changes.
Vendor shapes taken: capitalised ops (Entra), path-less values with dotted and URN keys (Entra),
a path-less rename that echoes `id` (Okta), `Remove path=members` with a value list meaning
"remove these" (Entra), `Replace emails[type eq "work"].value` creating the entry when absent.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.groups import KEEP, GroupChange
from bridge.provisioning import MAX_ENTRIES
from scim import schema
from scim.errors import (
    InvalidFilter,
    InvalidPath,
    InvalidSyntax,
    InvalidValue,
    Mutability,
    NoTarget,
    PayloadTooLarge,
)
from scim.filters import And, Compare, Expr, Not, Or, PatchPath, Path, matches, parse_path
from scim.mapping import canonical, canonical_value, external_id, member_ids
from scim.sql import boolean

OPS = ("add", "replace", "remove")
MAX_OPERATIONS = 1000
ECHOED = {"id", "meta", "schemas", "groups"}  # read-only keys IdPs echo in path-less values


@dataclass(frozen=True)
class Operation:
    op: str
    path: str | None
    value: Any


def operations(body: Any) -> list[Operation]:
    """The operations of a PatchOp request, validated (§3.5.2)."""
    if not isinstance(body, Mapping):
        raise InvalidSyntax("the body must be a PatchOp object")
    schemas = body.get("schemas")
    if schemas is not None and (not isinstance(schemas, list) or schema.PATCH_OP not in schemas):
        raise InvalidSyntax(f"schemas must be a list containing {schema.PATCH_OP}")
    raw = body.get("Operations", body.get("operations"))
    if not isinstance(raw, list) or not raw:
        raise InvalidSyntax("Operations must be a non-empty list")
    if len(raw) > MAX_OPERATIONS:  # refused before any is applied (README: limits)
        raise PayloadTooLarge(f"{len(raw)} operations is more than {MAX_OPERATIONS} in one PATCH")
    out = []
    for item in raw:
        if not isinstance(item, Mapping):
            raise InvalidSyntax("each operation must be an object")
        op = str(item.get("op", "")).lower()  # Entra sends Add / Replace / Remove
        if op not in OPS:
            raise InvalidSyntax(f"op must be add, replace or remove, not {item.get('op')!r}")
        path = item.get("path")
        if path is not None and not isinstance(path, str):
            raise InvalidPath("path must be a string")
        if op == "remove" and not path:
            raise NoTarget("remove needs a path")
        if op != "remove" and "value" not in item:
            raise InvalidValue(f"{op} needs a value")
        out.append(Operation(op, path or None, item.get("value")))
    return out


# ---------------------------------------------------------------- users


def apply_to_user(doc: Mapping[str, Any], ops: list[Operation]) -> dict[str, Any]:
    """The canonical User document after `ops`; raises before anything is written."""
    resource = schema.USERS
    result = copy.deepcopy(dict(doc))
    for op in ops:
        if op.path is None:
            if not isinstance(op.value, Mapping):
                raise InvalidValue(f"a path-less {op.op} needs an object value")
            for key, value in op.value.items():
                if str(key).lower() in ECHOED:
                    continue
                if resource.extension and str(key).lower() == resource.extension.lower():
                    _merge_extension(result, value)
                else:
                    _apply_path(result, op.op, str(key), value)
        else:
            _apply_path(result, op.op, op.path, op.value)
    return result


def _merge_extension(doc: dict[str, Any], value: Any) -> None:
    if not isinstance(value, Mapping):
        raise InvalidValue(f"{schema.ENTERPRISE} must be an object")
    ext = doc.setdefault(schema.ENTERPRISE, {})
    ext.update(canonical({schema.ENTERPRISE: value}, schema.USERS).get(schema.ENTERPRISE, {}))


def _resolve(text: str) -> tuple[PatchPath, schema.Attr, str | None]:
    """The attribute a path targets and the URN it lives under (None: core)."""
    resource = schema.USERS
    target = parse_path(text, tuple(resource.schemas))
    path = target.path
    if path.attr == "":
        raise InvalidPath(f"{text!r} names a schema, not an attribute")
    attr = resource.attr(path.attr, path.urn)
    urn = path.urn if path.urn and path.urn.lower() != resource.schema.lower() else None
    if attr is None and urn is None:  # Entra: `manager` without its extension URN
        attr = resource.attr(path.attr, resource.extension)
        urn = resource.extension
    if attr is None:
        raise InvalidPath(f"no attribute {str(path)!r}")
    if urn is not None:
        urn = resource.extension
    return target, attr, urn


def _apply_path(doc: dict[str, Any], op: str, text: str, value: Any) -> None:
    if text.strip().lower() == (schema.USERS.extension or "").lower():  # the extension as a whole
        if op == "remove":
            doc.pop(schema.ENTERPRISE, None)
        else:
            _merge_extension(doc, value)
        return
    target, attr, urn = _resolve(text)
    holder = doc.setdefault(urn, {}) if urn else doc
    sub_name = target.path.sub
    sub = attr.child(sub_name) if sub_name else None
    if sub_name and sub is None:
        raise InvalidPath(f"{attr.name} has no sub-attribute {sub_name!r}")
    if attr.mutability == "readOnly" or (sub is not None and sub.mutability == "readOnly"):
        raise Mutability(f"{text} is read-only")
    if attr.name == "password":
        return  # accepted, never stored (people sign in by SSO)
    if attr.multi:
        _apply_multi(holder, op, attr, target.filter, sub, value)
    elif sub is not None:
        current = holder.get(attr.name) or {}
        if op == "remove":
            current.pop(sub.name, None)
        else:
            current[sub.name] = value
        holder[attr.name] = current
    elif op == "remove":
        holder.pop(attr.name, None)
    elif attr.type == "complex":
        if isinstance(value, list) and len(value) == 1:
            value = value[0]  # Entra: `Add path=manager` with a one-item list
        if value is None:
            holder.pop(attr.name, None)
        else:  # §3.5.2.1/3: sub-attributes given replace theirs, the others stay
            holder[attr.name] = {**(holder.get(attr.name) or {}), **canonical_value(attr, value)}
    else:
        holder[attr.name] = canonical_value(attr, value)


def _apply_multi(
    holder: dict[str, Any],
    op: str,
    attr: schema.Attr,
    flt: Expr | None,
    sub: schema.Attr | None,
    value: Any,
) -> None:
    entries: list[dict[str, Any]] = list(holder.get(attr.name) or [])
    if flt is not None:
        _check_filter(flt, attr)
    _apply_entries(entries, holder, op, attr, flt, sub, value)
    if len(holder.get(attr.name) or ()) > MAX_ENTRIES:  # checked after every operation
        raise InvalidValue(f"{attr.name} may hold at most {MAX_ENTRIES} values")


def _apply_entries(
    entries: list[dict[str, Any]],
    holder: dict[str, Any],
    op: str,
    attr: schema.Attr,
    flt: Expr | None,
    sub: schema.Attr | None,
    value: Any,
) -> None:
    if flt is None and sub is None:
        if op == "remove":
            if value is None:
                entries = []
            else:
                gone = {str(v.get("value")) for v in canonical_value(attr, value)}
                entries = [e for e in entries if str(e.get("value")) not in gone]
        else:
            new = canonical_value(attr, value) or []
            if value is None and op == "add":
                raise InvalidValue(f"add to {attr.name} needs a value")
            if op == "replace":
                entries = new
            else:
                known = {str(e.get("value")) for e in entries}
                entries += [e for e in new if str(e.get("value")) not in known]
        holder[attr.name] = _one_primary(entries, attr)
        return
    hits = [e for e in entries if flt is None or _entry_matches(flt, e, attr)]
    if op == "remove":
        if sub is None:
            entries = [e for e in entries if e not in hits]
        else:
            for e in hits:
                e.pop(sub.name, None)
        holder[attr.name] = entries
        return
    if not hits:
        # RFC 7644 §3.5.2.3 says noTarget; Entra's `Replace emails[type eq "work"].value` on a
        # user without a work e-mail means "set it", so a sub-attribute target creates the entry.
        seed = _seed(flt) if flt is not None and sub is not None else ({} if flt is None else None)
        if seed is None:
            raise NoTarget(f"no value of {attr.name} matches the filter")
        entries.append(seed)
        hits = [seed]
    for e in hits:
        if sub is not None:
            e[sub.name] = value
        elif isinstance(value, Mapping):
            e.update(canonical_value(attr, [value])[0])
        else:
            raise InvalidValue(f"{attr.name}[...] needs an object value")
    holder[attr.name] = _one_primary(entries, attr)


def _check_filter(flt: Expr, attr: schema.Attr) -> None:
    """Refuse what a query's filter refuses (scim.sql): RFC 7644 §3.4.2.2, ordering a boolean
    fails with invalidFilter; a boolean compares only with eq/ne against true or false; only
    eq/ne compare with null."""
    if isinstance(flt, And | Or):
        _check_filter(flt.left, attr)
        _check_filter(flt.right, attr)
    elif isinstance(flt, Not):
        _check_filter(flt.expr, attr)
    elif isinstance(flt, Compare):
        if flt.value is None and flt.op not in ("eq", "ne", "pr"):
            raise InvalidFilter(f"{attr.name}[{flt.path} {flt.op} null] compares nothing")
        sub = attr.child(flt.path.attr)
        if sub is None or sub.type != "boolean" or flt.op == "pr":
            return
        if flt.op not in ("eq", "ne"):
            raise InvalidFilter(f"{attr.name}.{sub.name} is a boolean: only eq, ne and pr apply")
        if flt.value is not None:
            boolean(flt.value, f"{attr.name}.{sub.name}")


def _entry_matches(flt: Expr, entry: Mapping[str, Any], attr: schema.Attr) -> bool:
    def get(item: Any, path: Path) -> list[Any]:
        found = next((v for k, v in item.items() if k.lower() == path.attr.lower()), None)
        return [] if found is None else [found]

    def describe(path: Path) -> tuple[str, bool]:
        sub = attr.child(path.attr)
        return (sub.type, sub.case_exact) if sub is not None else ("string", False)

    return matches(flt, entry, get, describe)


def _seed(flt: Expr) -> dict[str, Any] | None:
    """For `attr[type eq "work"].value`, the entry to create when none matches (Entra)."""
    if isinstance(flt, Compare) and flt.op == "eq" and flt.path.sub is None:
        return {flt.path.attr: flt.value}
    if isinstance(flt, And):
        left, right = _seed(flt.left), _seed(flt.right)
        return None if left is None or right is None else {**left, **right}
    return None


def _one_primary(entries: list[dict[str, Any]], attr: schema.Attr) -> list[dict[str, Any]]:
    """A newly primary value takes primary from the others (RFC 7643 §2.4)."""
    primaries = [i for i, e in enumerate(entries) if e.get("primary") in (True, "true", "True")]
    for i in primaries[:-1]:
        entries[i] = {**entries[i], "primary": False}
    return entries


# ---------------------------------------------------------------- groups


@dataclass
class _Members:
    base: set[Any] | None = None
    add: set[Any] = field(default_factory=set)
    remove: set[Any] = field(default_factory=set)

    def added(self, ids: list[Any]) -> None:
        self.add |= set(ids)
        self.remove -= set(ids)

    def removed(self, ids: list[Any]) -> None:
        self.remove |= set(ids)
        self.add -= set(ids)
        if self.base is not None:
            self.base -= set(ids)

    def replaced(self, ids: list[Any]) -> None:
        self.base, self.add, self.remove = set(ids), set(), set()


def group_change(ops: list[Operation]) -> GroupChange:
    """One group change from a PATCH's operations, membership as a delta."""
    members = _Members()
    attrs: dict[str, Any] = {"display_name": KEEP, "external_id": KEEP}
    for op in ops:
        if op.path is None:
            if not isinstance(op.value, Mapping):
                raise InvalidValue(f"a path-less {op.op} needs an object value")
            for key, value in op.value.items():
                if str(key).lower() not in ECHOED:  # Okta's rename echoes the group's id
                    _group_path(op.op, str(key), value, members, attrs)
        else:
            _group_path(op.op, op.path, op.value, members, attrs)
    if members.base is not None:
        final = (members.base | members.add) - members.remove
        return GroupChange(attrs["display_name"], attrs["external_id"], replace=frozenset(final))
    return GroupChange(
        attrs["display_name"],
        attrs["external_id"],
        add=frozenset(members.add),
        remove=frozenset(members.remove),
    )


def _group_path(op: str, text: str, value: Any, members: _Members, attrs: dict[str, Any]) -> None:
    target = parse_path(text, (schema.CORE_GROUP,))
    path = target.path
    attr = schema.GROUPS.attr(path.attr, path.urn)
    if attr is None:
        raise InvalidPath(f"no attribute {text!r} on groups")
    if attr.mutability == "readOnly":
        raise Mutability(f"{text} is read-only")
    if attr.name == "members":
        if path.sub is not None and op != "remove":
            raise InvalidPath("members' sub-attributes cannot be changed; add or remove members")
        if target.filter is not None:
            ids = member_ids([{"value": v} for v in _filtered_ids(target.filter)])
            if op != "remove":
                raise InvalidPath("use add or replace on members, remove on members[...]")
            members.removed(ids)
        elif op == "add":
            members.added(member_ids(value))
        elif op == "replace":
            members.replaced(member_ids(value))
        elif value is None:
            members.replaced([])  # RFC 7644 §3.5.2.2: remove all members
        else:
            members.removed(member_ids(value))  # Entra: Remove path=members with values
        return
    if path.sub is not None or target.filter is not None:
        raise InvalidPath(f"{text!r} names no sub-attribute of {attr.name}")
    if attr.name == "displayName":
        if op == "remove":
            raise Mutability("displayName is required and cannot be removed")
        attrs["display_name"] = value
    elif attr.name == "externalId":
        attrs["external_id"] = None if op == "remove" else external_id(value)


def _filtered_ids(flt: Expr) -> list[str]:
    """Ids named by `value eq "..."` terms joined with `or` (how IdPs address members)."""
    if isinstance(flt, Or):
        return _filtered_ids(flt.left) + _filtered_ids(flt.right)
    if isinstance(flt, Compare) and flt.op == "eq" and flt.path.attr.lower() == "value":
        return [str(flt.value)]
    raise InvalidPath('members can be addressed only as members[value eq "id"]')
