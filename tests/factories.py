"""Small builders of test data."""

from __future__ import annotations

import secrets
from typing import Any

from policies import IdpLink, Profile, Source


def profile(user_name: str | None = None, **kw: Any) -> Profile:
    """A SCIM-sourced profile; any Profile field may be given."""
    kw.setdefault("source", Source.SCIM)
    return Profile(user_name=user_name or f"user-{secrets.token_hex(4)}@example.com", **kw)


def saml_profile(user_name: str, entity_id: str, name_id: str, **kw: Any) -> Profile:
    return Profile(source=Source.SAML, user_name=user_name, idp=IdpLink(entity_id, name_id), **kw)
