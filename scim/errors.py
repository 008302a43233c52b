"""SCIM errors (RFC 7644 §3.12): protocol errors keyed by scimType, and the one table that maps
domain errors onto them. Every error leaves as SCIM error JSON, never HTML or a traceback."""

from __future__ import annotations

from typing import Any

from flask import Response, json

from bridge import errors
from scim.schema import ERROR

SCIM_JSON = "application/scim+json"


class ScimError(Exception):
    """A protocol-level error with its HTTP status and, for 400s, 409s and 413s, a scimType."""

    status = 400
    scim_type: str | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidFilter(ScimError):
    scim_type = "invalidFilter"


class InvalidSyntax(ScimError):
    scim_type = "invalidSyntax"


class InvalidPath(ScimError):
    scim_type = "invalidPath"


class NoTarget(ScimError):
    scim_type = "noTarget"


class InvalidValue(ScimError):
    scim_type = "invalidValue"


class Mutability(ScimError):
    scim_type = "mutability"


class PayloadTooLarge(ScimError):
    status = 413


class NotImplementedYet(ScimError):
    status = 501


class NotFound(ScimError):
    status = 404


# Domain errors as SCIM: (status, scimType).
DOMAIN: dict[type[errors.BridgeError], tuple[int, str | None]] = {
    errors.InvalidInput: (400, "invalidValue"),
    errors.Unauthorized: (401, None),
    errors.Forbidden: (403, None),
    errors.NotFound: (404, None),
    # RFC 7644 §3.12 defines no scimType for a refusal by a business rule (uniqueness means a
    # duplicate; mutability is a 400): a guard's 409 carries none, its detail names the guard.
    errors.GuardRefused: (409, None),
    errors.Conflict: (409, "uniqueness"),
    errors.PreconditionFailed: (412, None),
    errors.Unavailable: (503, None),
}


def body(status: int, detail: str, scim_type: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"schemas": [ERROR], "status": str(status), "detail": detail}
    if scim_type:
        doc["scimType"] = scim_type
    return doc


def response(status: int, detail: str, scim_type: str | None = None) -> Response:
    resp = Response(json.dumps(body(status, detail, scim_type)), status=status, mimetype=SCIM_JSON)
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="scim"'
    return resp


def from_exception(exc: Exception) -> tuple[int, str, str | None]:
    """(status, detail, scimType) for a protocol or domain error."""
    if isinstance(exc, ScimError):
        return exc.status, exc.detail, exc.scim_type
    if isinstance(exc, errors.BridgeError):
        for kind in type(exc).__mro__:
            if kind in DOMAIN:
                status, scim_type = DOMAIN[kind]  # type: ignore[index]
                return status, exc.detail, scim_type
    raise TypeError(f"not a SCIM-mappable error: {exc!r}")
