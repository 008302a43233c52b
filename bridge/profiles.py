"""The Profile a policy sees for a stored user: the same whichever entry point asks.

SCIM create, SCIM PATCH, a group membership change and `idbridge policy apply` all evaluate the
policy on this, so they reach the same Decision. Stored attributes are named by their SCIM paths
(DESIGN §4: policy inputs name SCIM paths); groups are the user's SCIM-pushed group names; raw
attributes of the triggering profile (a SAML assertion's) are added on top.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
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
MANAGER = f"{ENTERPRISE}:manager.value"  # from the manager_id column
STORED_FIELDS = (*SCIM_PATHS, "active", "manager_id", "saml_attributes")  # what `build` reads


def saml_state(profile: policies.Profile) -> dict[str, Any]:
    """What to keep of a SAML login for later re-evaluation: the IdP and the attributes."""
    return {
        "idp": profile.idp.entity_id if profile.idp is not None else None,
        "attributes": {name: list(values) for name, values in profile.attributes.items()},
    }


def stored(
    db: Session,
    user: User,
    trigger: policies.Profile | None = None,
    *,
    groups: tuple[str, ...] | None = None,
) -> policies.Profile:
    """The policy's view of `user` as stored, plus the raw attributes of `trigger`.

    Without a trigger, a user who has signed in with SAML is seen as at their last login.
    `groups` (the user's SCIM group names) may be given when the caller loaded them in bulk.
    """
    if groups is None:
        groups = scim_groups(db, [user.id]).get(user.id, ())
    emails = sorted(user.emails, key=lambda e: (not e.primary, e.position))
    return build(
        {field: getattr(user, field) for field in STORED_FIELDS},
        emails=tuple(e.value for e in emails),
        phones=tuple(p.value for p in user.phone_numbers),
        groups=groups,
        trigger=trigger,
    )


def scim_groups(db: Session, user_ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[str, ...]]:
    """The names of the groups each user is in through SCIM, in one query."""
    found: dict[uuid.UUID, list[str]] = {}
    rows = db.execute(
        select(Membership.user_id, Group.display_name)
        .join(Group, Group.id == Membership.group_id)
        .where(Membership.user_id.in_(user_ids), Membership.provenance == "scim")
        .order_by(Group.display_name)
    )
    for user_id, name in rows:
        found.setdefault(user_id, []).append(name)
    return {k: tuple(v) for k, v in found.items()}


def build(
    values: Mapping[str, Any],
    *,
    emails: tuple[str, ...],
    phones: tuple[str, ...],
    groups: tuple[str, ...],
    trigger: policies.Profile | None = None,
) -> policies.Profile:
    """A Profile from a user's stored values (emails primary first) and SCIM group names."""
    attributes: dict[str, tuple[str, ...]] = {}
    for field, path in SCIM_PATHS.items():
        value = values.get(field)
        if value not in (None, ""):
            attributes[path] = (str(value),)
    attributes["active"] = ("false" if values.get("active") is False else "true",)
    if emails:
        attributes["emails.value"] = emails
    if phones:
        attributes["phoneNumbers.value"] = phones
    if values.get("manager_id") is not None:
        attributes[MANAGER] = (values["manager_id"],)
    source, idp = policies.Source.POLICY, None
    saved = values.get("saml_attributes")
    if trigger is not None:
        attributes.update(trigger.attributes)
        source, idp = trigger.source, trigger.idp
    elif saved:
        attributes.update({k: tuple(v) for k, v in (saved.get("attributes") or {}).items()})
        source = policies.Source.SAML
        if saved.get("idp"):
            idp = policies.IdpLink(saved["idp"], values["user_name"])
    return policies.Profile(
        source=source,
        user_name=values["user_name"],
        external_id=values.get("external_id"),
        idp=idp,
        attributes=attributes,
        groups=groups,
    )


class Reader:
    """What `build` gives for the attributes a policy reads, straight from rows of `keys`
    (user columns, `saml_attributes` and `user_name` among them), without the rest: `policy
    plan` resolves the policy's inputs from these parts for every stored user, and builds a
    Profile only to evaluate a combination of input values not seen before."""

    def __init__(self, keys: Sequence[str], attributes: frozenset[str]) -> None:
        keys = list(keys)
        self.user_name = keys.index("user_name")
        self.saml = keys.index("saml_attributes")
        self.read = attributes
        self.scalars = tuple(
            (path, keys.index(field))
            for field, path in SCIM_PATHS.items()
            if path in attributes and field in keys
        )
        self.active = keys.index("active") if "active" in attributes else None
        self.manager = (
            keys.index("manager_id") if MANAGER in attributes and "manager_id" in keys else None
        )
        self.emails = "emails.value" in attributes
        self.phones = "phoneNumbers.value" in attributes

    def parts(
        self,
        row: Sequence[Any],
        emails: tuple[str, ...],
        phones: tuple[str, ...],
    ) -> tuple[policies.Source, policies.IdpLink | None, dict[str, tuple[Any, ...]]]:
        """The profile's source, IdP link and attributes (only those read) for one row."""
        attributes: dict[str, tuple[Any, ...]] = {}
        for path, i in self.scalars:
            value = row[i]
            if value not in (None, ""):
                attributes[path] = (str(value),)
        if self.active is not None:
            attributes["active"] = ("false" if row[self.active] is False else "true",)
        if emails and self.emails:
            attributes["emails.value"] = emails
        if phones and self.phones:
            attributes["phoneNumbers.value"] = phones
        if self.manager is not None and row[self.manager] is not None:
            attributes[MANAGER] = (row[self.manager],)
        saved = row[self.saml]
        if not saved:
            return policies.Source.POLICY, None, attributes
        read = self.read
        for name, values in (saved.get("attributes") or {}).items():
            if name in read:
                attributes[name] = tuple(values)
        idp = saved.get("idp")
        link = policies.IdpLink(idp, row[self.user_name]) if idp else None
        return policies.Source.SAML, link, attributes
