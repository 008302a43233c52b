"""The Profile a policy sees for a stored user: the same whichever entry point asks.

SCIM create, SCIM PATCH, a group membership change and `bridge policy apply` all evaluate the
policy on this, so they reach the same Decision. Stored attributes are named by their SCIM paths
(DESIGN §4: policy inputs name SCIM paths); groups are the user's SCIM-pushed group names; raw
attributes of the triggering profile (a SAML assertion's) are added on top.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

import policies
from bridge.models import Group, Membership, User

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
SCIM_PATHS: dict[str, str] = {
    "user_name": "userName",
    "external_id": "externalId",
    "formatted_name": "name.formatted",
    "family_name": "name.familyName",
    "given_name": "name.givenName",
    "middle_name": "name.middleName",
    "honorific_prefix": "name.honorificPrefix",
    "honorific_suffix": "name.honorificSuffix",
    "display_name": "displayName",
    "nick_name": "nickName",
    "profile_url": "profileUrl",
    "title": "title",
    "user_type": "userType",
    "preferred_language": "preferredLanguage",
    "locale": "locale",
    "timezone": "timezone",
    "employee_number": f"{ENTERPRISE}:employeeNumber",
    "cost_center": f"{ENTERPRISE}:costCenter",
    "organization": f"{ENTERPRISE}:organization",
    "division": f"{ENTERPRISE}:division",
    "department": f"{ENTERPRISE}:department",
}


def saml_state(profile: policies.Profile) -> dict[str, Any]:
    """What to keep of a SAML login for later re-evaluation: the IdP and the attributes."""
    return {
        "idp": profile.idp.entity_id if profile.idp is not None else None,
        "attributes": {name: list(values) for name, values in profile.attributes.items()},
    }


def stored(db: Session, user: User, trigger: policies.Profile | None = None) -> policies.Profile:
    """The policy's view of `user` as stored, plus the raw attributes of `trigger`.

    Without a trigger, a user who has signed in with SAML is seen as at their last login.
    """
    attributes: dict[str, tuple[str, ...]] = {}
    for field, path in SCIM_PATHS.items():
        value = getattr(user, field)
        if value not in (None, ""):
            attributes[path] = (str(value),)
    attributes["active"] = ("false" if user.active is False else "true",)
    emails = sorted(user.emails, key=lambda e: (not e.primary, e.position))
    if emails:
        attributes["emails.value"] = tuple(e.value for e in emails)
    if user.phone_numbers:
        attributes["phoneNumbers.value"] = tuple(p.value for p in user.phone_numbers)
    if user.manager_id is not None:
        attributes[f"{ENTERPRISE}:manager.value"] = (user.manager_id,)
    groups = tuple(
        db.scalars(
            select(Group.display_name)
            .join(Membership, Membership.group_id == Group.id)
            .where(Membership.user_id == user.id, Membership.provenance == "scim")
            .order_by(Group.display_name)
        )
    )
    source, idp = policies.Source.POLICY, None
    if trigger is not None:
        attributes.update(trigger.attributes)
        source, idp = trigger.source, trigger.idp
    elif user.saml_attributes:
        saved = user.saml_attributes
        attributes.update({k: tuple(v) for k, v in (saved.get("attributes") or {}).items()})
        source = policies.Source.SAML
        idp = policies.IdpLink(saved["idp"], user.user_name) if saved.get("idp") else None
    return policies.Profile(
        source=source,
        user_name=user.user_name,
        external_id=user.external_id,
        idp=idp,
        attributes=attributes,
        groups=groups,
    )
