"""What every IdP replay asserts of a SCIM response: status, media type, SCIM shapes."""

from __future__ import annotations

import json
from typing import Any

LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def body_of(resp, status: int) -> dict[str, Any]:
    """The JSON body of a response that must have `status` and be application/scim+json."""
    text = resp.get_data(as_text=True)
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {text[:500]}"
    assert resp.mimetype == "application/scim+json", f"Content-Type was {resp.content_type!r}"
    body = json.loads(text)
    assert isinstance(body, dict)
    return body


def list_of(resp) -> dict[str, Any]:
    """A ListResponse; both IdPs page with these numbers and want them as integers."""
    body = body_of(resp, 200)
    assert body["schemas"] == [LIST]
    for key in ("totalResults", "itemsPerPage", "startIndex"):
        assert type(body[key]) is int, f"{key} must be an integer: {body.get(key)!r}"
    resources = body.get("Resources", [])  # RFC 7644 §3.4.2: required only when non-empty
    assert isinstance(resources, list)
    if body["totalResults"]:
        assert "Resources" in body
    return body


def error_of(resp, status: int, scim_type: str | None = None) -> dict[str, Any]:
    """A SCIM error body (RFC 7644 §3.12): the Error schema, `status` as a string."""
    body = body_of(resp, status)
    assert body["schemas"] == [ERROR]
    assert body["status"] == str(status)
    if scim_type is not None:
        assert body["scimType"] == scim_type
    return body


def patched(resp) -> dict[str, Any] | None:
    """Both IdPs take 200 with the resource or 204 with no body for a PATCH."""
    assert resp.status_code in (200, 204), resp.get_data(as_text=True)[:500]
    if resp.status_code == 204:
        assert not resp.get_data()
        return None
    return body_of(resp, 200)
