"""Canonical inputs and where each source carries them; resolving them from a Profile.

Every source reads SCIM attribute paths, where the path `groups` means the profile's group
memberships. SAML profiles first read their SAML attribute names and fall back to the SCIM
paths only when none is present: the service adds a stored user's SCIM attributes and groups to
a login's profile, so a login without a groups claim keeps the groups SCIM pushed.
Values are stripped of surrounding white space and empty values are dropped, so an attribute
sent empty is absent. `email` is the first value only (adapters put the primary address first)
and falls back to userName when no email attribute is present and userName contains an `@`;
`email_domain` is the lower-cased part of email after its last `@`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from policies.conditions import InputError
from policies.model import InputSpec, Profile, SourceSpec

MAX_VALUES = 10_000
ENTRA_GROUPS = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

# Okta names attributes as configured (usually `email`, `groups`); Entra uses claim URIs;
# urn:oid names are the LDAP ones Google, Keycloak and Shibboleth-style IdPs send.
BUILTIN_INPUTS: Mapping[str, InputSpec] = MappingProxyType(
    {
        "groups": InputSpec(
            "groups",
            saml=SourceSpec(("groups", ENTRA_GROUPS, "memberOf")),
            scim=SourceSpec(("groups",)),
            ignore_case=True,
        ),
        "department": InputSpec(
            "department",
            saml=SourceSpec(
                (
                    "department",
                    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/department",
                )
            ),
            scim=SourceSpec((f"{ENTERPRISE}:department",)),
        ),
        "title": InputSpec(
            "title",
            saml=SourceSpec(
                ("title", "jobTitle", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/title")
            ),
            scim=SourceSpec(("title",)),
        ),
        "email": InputSpec(
            "email",
            saml=SourceSpec(
                (
                    "email",
                    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
                    "mail",
                    "urn:oid:0.9.2342.19200300.100.1.3",
                )
            ),
            scim=SourceSpec(("emails.value",)),
            ignore_case=True,
            first_only=True,
        ),
    }
)
# Taken from the Profile itself; a policy file cannot re-map them.
DERIVED_INPUTS: Mapping[str, bool] = MappingProxyType(
    {"email_domain": True, "userName": True, "idp": False, "source": False}
)
CANONICAL_INPUTS: tuple[str, ...] = (*BUILTIN_INPUTS, *DERIVED_INPUTS)


def default_ignore_case(name: str, inputs: Mapping[str, InputSpec]) -> bool:
    """Whether checks on this input ignore case unless a check says otherwise."""
    if name in DERIVED_INPUTS:
        return DERIVED_INPUTS[name]
    spec = inputs.get(name) or BUILTIN_INPUTS.get(name)
    return spec.ignore_case if spec is not None else False


class Inputs:
    """The values of one profile's inputs, each resolved on first use."""

    __slots__ = ("_cache", "_profile", "_specs")

    def __init__(self, specs: Mapping[str, InputSpec], profile: Profile) -> None:
        self._specs = specs
        self._profile = profile
        self._cache: dict[str, tuple[str, ...] | InputError] = {}

    def __call__(self, name: str) -> tuple[str, ...]:
        """The input's values; raises InputError when the profile cannot give them."""
        found = self._cache.get(name)
        if found is None:
            try:
                found = self._resolve(name)
            except InputError as exc:
                found = exc
            self._cache[name] = found
        if isinstance(found, InputError):
            raise found
        return found

    def _resolve(self, name: str) -> tuple[str, ...]:
        profile = self._profile
        if name in DERIVED_INPUTS:
            if name == "userName":
                return _clean("userName", (profile.user_name,))
            if name == "source":
                return _clean("source", (getattr(profile.source, "value", profile.source),))
            if name == "idp":
                return () if profile.idp is None else _clean("idp", (profile.idp.entity_id,))
            return tuple(
                v.rpartition("@")[2].lower() for v in self("email") if v.rpartition("@")[2]
            )
        spec = self._specs.get(name) or BUILTIN_INPUTS.get(name)
        if spec is None:
            raise InputError(f"input {name} is not declared")
        attributes = profile.attributes
        if type(attributes) is not dict and not isinstance(attributes, Mapping):
            raise InputError(f"profile attributes are a {type(attributes).__name__}, not a mapping")
        values: tuple[str, ...] = ()
        if spec.saml is not None and profile.source == "saml":
            values = self._first(spec.saml, attributes, memberships=False)
        if not values and spec.scim is not None:
            values = self._first(spec.scim, attributes, memberships=True)
        if name == "email" and not values:
            values = tuple(v for v in self("userName") if "@" in v)
        return values[:1] if spec.first_only else values

    def _first(
        self, where: SourceSpec, attributes: Mapping[str, object], *, memberships: bool
    ) -> tuple[str, ...]:
        return _first(where, attributes, self._profile.groups, memberships=memberships)


_ABSENT = object()


def _first(
    where: SourceSpec,
    attributes: Mapping[str, object],
    groups: object,
    *,
    memberships: bool,
) -> tuple[str, ...]:
    """The cleaned values of the first of `where`'s names present with a value (`groups` is the
    profile's memberships when `memberships`)."""
    for key in where.names:
        if memberships and key == "groups":
            raw: object = groups
        else:
            raw = attributes.get(key, _ABSENT)
            if raw is _ABSENT:
                continue
        values = _clean(key, raw, where.split)
        if values:
            return values
    return ()


# A compiled input: its values from a profile's parts (source, userName, IdP link, attributes,
# groups); raises InputError where Inputs would.
Reader = Callable[[object, str, Any, Mapping[str, object], object], tuple[str, ...]]


def reader(specs: Mapping[str, InputSpec], name: str) -> Reader:
    """Input `name` resolved as `Inputs(specs, profile)(name)` resolves it, compiled once: the
    spec look-up and the derivations are settled here, not for every profile. The caller has
    checked that the attributes are a mapping."""
    if name == "userName":
        return lambda source, user_name, idp, attributes, groups: _clean("userName", (user_name,))
    if name == "source":
        return lambda source, user_name, idp, attributes, groups: _clean(
            "source", (getattr(source, "value", source),)
        )
    if name == "idp":
        return lambda source, user_name, idp, attributes, groups: (
            () if idp is None else _clean("idp", (idp.entity_id,))
        )
    if name == "email_domain":
        email = reader(specs, "email")

        def email_domain(
            source: object,
            user_name: str,
            idp: Any,
            attributes: Mapping[str, object],
            groups: object,
        ) -> tuple[str, ...]:
            found = email(source, user_name, idp, attributes, groups)
            if len(found) == 1:  # the common case, as the loop below does it
                domain = found[0].rpartition("@")[2]
                return (domain.lower(),) if domain else ()
            return tuple(v.rpartition("@")[2].lower() for v in found if v.rpartition("@")[2])

        return email_domain
    spec = specs.get(name) or BUILTIN_INPUTS.get(name)
    if spec is None:
        message = f"input {name} is not declared"

        def undeclared(
            source: object,
            user_name: str,
            idp: Any,
            attributes: Mapping[str, object],
            groups: object,
        ) -> tuple[str, ...]:
            raise InputError(message)

        return undeclared
    saml = None if spec.saml is None else _finder(spec.saml, memberships=False)
    scim = None if spec.scim is None else _finder(spec.scim, memberships=True)
    first_only, is_email = spec.first_only, name == "email"

    def read(
        source: object, user_name: str, idp: Any, attributes: Mapping[str, object], groups: object
    ) -> tuple[str, ...]:
        values: tuple[str, ...] = ()
        if saml is not None and source == "saml":
            values = saml(attributes, groups)
        if not values and scim is not None:
            values = scim(attributes, groups)
        if is_email and not values:
            values = tuple(v for v in _clean("userName", (user_name,)) if "@" in v)
        return values[:1] if first_only else values

    return read


def _finder(
    where: SourceSpec, *, memberships: bool
) -> Callable[[Mapping[str, object], object], tuple[str, ...]]:
    """`_first(where, attributes, groups, memberships=...)` as a function of the attributes and
    the groups, settled once: one name (most inputs) is looked up straight."""
    if len(where.names) == 1 and not (memberships and where.names[0] == "groups"):
        (key,), split = where.names, where.split

        def one(attributes: Mapping[str, object], groups: object) -> tuple[str, ...]:
            raw = attributes.get(key, _ABSENT)
            return () if raw is _ABSENT else _clean(key, raw, split)

        return one
    return lambda attributes, groups: _first(where, attributes, groups, memberships=memberships)


def _clean(key: str, raw: object, split: str | None = None) -> tuple[str, ...]:
    if type(raw) is tuple and len(raw) == 1 and split is None and type(raw[0]) is str:
        value = raw[0].strip()  # the common case (one stored value), as the loop below does it
        return (value,) if value else ()
    if not isinstance(raw, tuple | list):
        raise InputError(f"attribute {key!r} holds a {type(raw).__name__}, not a list of strings")
    if len(raw) > MAX_VALUES:
        raise InputError(f"attribute {key!r} has {len(raw)} values (at most {MAX_VALUES})")
    out: list[str] = []
    for value in raw:
        if not isinstance(value, str):
            raise InputError(f"attribute {key!r} holds a {type(value).__name__} value")
        if split:
            out.extend(p.strip() for p in value.split(split) if p.strip())
        else:
            value = value.strip()
            if value:
                out.append(value)
    if len(out) > MAX_VALUES:
        raise InputError(f"attribute {key!r} splits into {len(out)} values (at most {MAX_VALUES})")
    return tuple(out)
