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

from collections.abc import Mapping
from types import MappingProxyType

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
        for key in where.names:
            if memberships and key == "groups":
                raw: object = self._profile.groups
            else:
                raw = attributes.get(key, _ABSENT)
                if raw is _ABSENT:
                    continue
            values = _clean(key, raw, where.split)
            if values:
                return values
        return ()


_ABSENT = object()


def _clean(key: str, raw: object, split: str | None = None) -> tuple[str, ...]:
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
