"""The attributes we serve, declared once (RFC 7643 §4, §8.7): they drive discovery, attribute
projection, filter case-sensitivity, PATCH mutability checks and case-insensitive key lookup."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
SEARCH_REQUEST = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
SP_CONFIG = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
RESOURCE_TYPE = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"


@dataclass(frozen=True)
class Attr:
    """One attribute and its characteristics (RFC 7643 §2.2, §7)."""

    name: str
    type: str = "string"
    multi: bool = False
    required: bool = False
    case_exact: bool = False
    mutability: str = "readWrite"
    returned: str = "default"
    uniqueness: str = "none"
    description: str = ""
    sub: tuple[Attr, ...] = ()
    canonical: tuple[str, ...] = ()
    ref_types: tuple[str, ...] = ()
    by_key: Mapping[str, Attr] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_key", {a.name.lower(): a for a in self.sub})

    def child(self, name: str) -> Attr | None:
        """A sub-attribute by name, case-insensitively (RFC 7643 §2.1)."""
        return self.by_key.get(name.lower())

    def to_scim(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "multiValued": self.multi,
            "description": self.description or self.name,
            "required": self.required,
            "mutability": self.mutability,
            "returned": self.returned,
        }
        if self.type in ("string", "reference", "binary"):
            doc["caseExact"] = self.case_exact
            doc["uniqueness"] = self.uniqueness
        if self.canonical:
            doc["canonicalValues"] = list(self.canonical)
        if self.ref_types:
            doc["referenceTypes"] = list(self.ref_types)
        if self.sub:
            doc["subAttributes"] = [a.to_scim() for a in self.sub]
        return doc


def _s(name: str, **kw: Any) -> Attr:
    return Attr(name, **kw)


TYPE = _s("type", canonical=("work", "home", "other"))
PRIMARY = _s("primary", type="boolean")
DISPLAY = _s("display")


def _multi(name: str, *extra: Attr, value: bool = True, canonical: tuple[str, ...] = ()) -> Attr:
    subs = (_s("value"),) if value else ()
    type_attr = Attr("type", canonical=canonical) if canonical else TYPE
    return Attr(name, type="complex", multi=True, sub=(*subs, DISPLAY, type_attr, PRIMARY, *extra))


ID = _s("id", case_exact=True, mutability="readOnly", returned="always", uniqueness="server")
EXTERNAL_ID = _s("externalId", case_exact=True)
META = Attr(
    "meta",
    type="complex",
    mutability="readOnly",
    sub=(
        _s("resourceType", case_exact=True, mutability="readOnly"),
        _s("created", type="dateTime", mutability="readOnly"),
        _s("lastModified", type="dateTime", mutability="readOnly"),
        _s(
            "location", type="reference", case_exact=True, mutability="readOnly", ref_types=("uri",)
        ),
        _s("version", case_exact=True, mutability="readOnly"),
    ),
)
SCHEMAS = _s("schemas", type="reference", multi=True, case_exact=True, returned="always")
COMMON = (SCHEMAS, ID, EXTERNAL_ID, META)

USER = (
    _s("userName", required=True, uniqueness="server"),
    Attr(
        "name",
        type="complex",
        sub=(
            _s("formatted"),
            _s("familyName"),
            _s("givenName"),
            _s("middleName"),
            _s("honorificPrefix"),
            _s("honorificSuffix"),
        ),
    ),
    _s("displayName"),
    _s("nickName"),
    _s("profileUrl", type="reference", ref_types=("external",)),
    _s("title"),
    _s("userType"),
    _s("preferredLanguage"),
    _s("locale"),
    _s("timezone"),
    _s("active", type="boolean"),
    _s("password", mutability="writeOnly", returned="never"),
    _multi("emails"),
    _multi("phoneNumbers", canonical=("work", "home", "mobile", "fax", "pager", "other")),
    Attr(
        "addresses",
        type="complex",
        multi=True,
        sub=(
            _s("formatted"),
            _s("streetAddress"),
            _s("locality"),
            _s("region"),
            _s("postalCode"),
            _s("country"),
            TYPE,
            PRIMARY,
        ),
    ),
    Attr(
        "groups",
        type="complex",
        multi=True,
        mutability="readOnly",
        sub=(
            _s("value", mutability="readOnly"),
            _s("$ref", type="reference", mutability="readOnly", ref_types=("Group",)),
            _s("display", mutability="readOnly"),
            _s("type", mutability="readOnly", canonical=("direct", "indirect")),
        ),
    ),
)
ENTERPRISE_USER = (
    _s("employeeNumber"),
    _s("costCenter"),
    _s("organization"),
    _s("division"),
    _s("department"),
    Attr(
        "manager",
        type="complex",
        sub=(
            _s("value", case_exact=True),
            _s("$ref", type="reference", mutability="readOnly", ref_types=("User",)),
            _s("displayName", mutability="readOnly"),
        ),
    ),
)
GROUP = (
    _s("displayName", required=True, uniqueness="server"),
    Attr(
        "members",
        type="complex",
        multi=True,
        sub=(
            _s("value", case_exact=True, mutability="immutable"),
            _s("$ref", type="reference", mutability="immutable", ref_types=("User",)),
            _s("display", mutability="readOnly"),
            _s("type", mutability="immutable", canonical=("User",)),
        ),
    ),
)


@dataclass(frozen=True)
class Resource:
    """A resource type: its core schema, its extension, and every attribute by lower-case name."""

    name: str
    endpoint: str
    schema: str
    attrs: tuple[Attr, ...]
    extension: str | None = None
    extension_attrs: tuple[Attr, ...] = ()

    def attr(self, name: str, urn: str | None = None) -> Attr | None:
        """The attribute `name` (in `urn`, or core/common when None), case-insensitively."""
        key = name.lower()
        if urn is None or urn.lower() == self.schema.lower():
            pool: Iterable[Attr] = (*COMMON, *self.attrs)
        elif self.extension and urn.lower() == self.extension.lower():
            pool = self.extension_attrs
        else:
            return None
        return next((a for a in pool if a.name.lower() == key), None)

    @property
    def schemas(self) -> list[str]:
        return [self.schema, *([self.extension] if self.extension else [])]


USERS = Resource("User", "/Users", CORE_USER, USER, ENTERPRISE, ENTERPRISE_USER)
GROUPS = Resource("Group", "/Groups", CORE_GROUP, GROUP)
RESOURCES = {"User": USERS, "Group": GROUPS}


def schema_document(urn: str, base: str) -> dict[str, Any] | None:
    """The Schemas endpoint's entry for `urn` (RFC 7643 §7)."""
    for urn_, name, attrs in (
        (CORE_USER, "User", USER),
        (CORE_GROUP, "Group", GROUP),
        (ENTERPRISE, "EnterpriseUser", ENTERPRISE_USER),
    ):
        if urn_ == urn:
            return {
                "schemas": [SCHEMA],
                "id": urn_,
                "name": name,
                "description": f"{name} attributes served by Identity Bridge",
                "attributes": [a.to_scim() for a in attrs],
                "meta": {"resourceType": "Schema", "location": f"{base}/Schemas/{urn_}"},
            }
    return None


SCHEMA_IDS = (CORE_USER, CORE_GROUP, ENTERPRISE)


def resource_type_document(resource: Resource, base: str) -> dict[str, Any]:
    """The ResourceTypes endpoint's entry (RFC 7643 §6)."""
    doc: dict[str, Any] = {
        "schemas": [RESOURCE_TYPE],
        "id": resource.name,
        "name": resource.name,
        "endpoint": resource.endpoint,
        "description": f"{resource.name} resources",
        "schema": resource.schema,
        "meta": {
            "resourceType": "ResourceType",
            "location": f"{base}/ResourceTypes/{resource.name}",
        },
    }
    if resource.extension:
        doc["schemaExtensions"] = [{"schema": resource.extension, "required": False}]
    return doc
