"""A valid assertion as the neutral Profile the policy engine and provisioning read."""

from __future__ import annotations

from typing import Any

import policies
from saml.errors import SamlRejected
from saml.sso import Assertion


def profile(assertion: Assertion) -> policies.Profile:
    """The neutral Profile of a login (source saml)."""
    idp = assertion.idp
    if idp.match_by == "name_id":
        user_name = assertion.name_id
    else:
        values = assertion.attributes.get(idp.match_by) or []
        if not values:
            raise SamlRejected(
                "missing_attribute", f"the assertion has no {idp.match_by!r} attribute"
            )
        user_name = values[0]
    fields: dict[str, Any] = {}
    if idp.allow_jit:  # a JIT account's users are described by their logins; SCIM owns the rest
        email = _first(assertion.attributes, EMAIL_ATTRS) or (
            user_name if "@" in user_name else None
        )
        if email:
            fields["emails"] = [{"value": email, "type": "work", "primary": True}]
        for field_name, names in NAME_ATTRS.items():
            value = _first(assertion.attributes, names)
            if value:
                fields[field_name] = value
    return policies.Profile(
        source=policies.Source.SAML,
        user_name=user_name,
        idp=policies.IdpLink(idp.entity_id, assertion.name_id),
        attributes={k: tuple(v) for k, v in assertion.attributes.items()},
        fields=fields,
    )


EMAIL_ATTRS = (
    "email",
    "mail",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
)
NAME_ATTRS = {
    "given_name": (
        "givenName",
        "firstName",
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
    ),
    "family_name": (
        "surname",
        "sn",
        "lastName",
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname",
    ),
    "display_name": ("displayName", "http://schemas.microsoft.com/identity/claims/displayname"),
}


def _first(attributes: dict[str, list[str]], names: tuple[str, ...]) -> str | None:
    for name in names:
        values = [v.strip() for v in attributes.get(name, []) if v.strip()]
        if values:
            return values[0]
    return None
