"""Bulk (RFC 7644 §3.7): each operation runs through the same routes as a single request.

Operations run in order, each in its own transaction (as RFC 7644 allows), dispatched to the very
view that would serve it alone, so there is no second write path. `bulkId:x` references in paths
and data are replaced by the id the operation with bulkId x created. `failOnErrors` stops the run
after that many errors; more than `maxOperations` operations is a 413. An operation may only name
a User or Group (never `/Bulk` itself: nesting would escape maxOperations), and each one that
fails is reported in its own result (its own transaction rolled back), never as a 500 of the whole.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from flask import Response, current_app, g, request

from scim import errors, schema
from scim.errors import SCIM_JSON

log = logging.getLogger(__name__)
MAX_OPERATIONS = 1000
METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# RFC 7644 §3.7: a path is a resource endpoint, "/Users" or "/Users/<id>" (bulkId:x resolved).
RESOURCE_PATH = re.compile(r"/(?:Users|Groups)(?:/[^/?#\s]+)?")
# An ETag as sent in If-Match (RFC 9110 §8.8.3): printable ASCII, no control characters.
VERSION = re.compile(r'(?:W/)?"?[\x21\x23-\x7e]{1,64}"?')


def run(doc: Any) -> dict[str, Any]:
    """The BulkResponse for a BulkRequest document."""
    if not isinstance(doc, dict):
        raise errors.InvalidSyntax("the body must be a BulkRequest object")
    ops = doc.get("Operations")
    if not isinstance(ops, list):
        raise errors.InvalidSyntax("Operations must be a list")
    if len(ops) > MAX_OPERATIONS:
        raise errors.PayloadTooLarge(
            f"{len(ops)} operations is more than maxOperations ({MAX_OPERATIONS})"
        )
    fail_on = doc.get("failOnErrors")
    if fail_on is not None and (not isinstance(fail_on, int) or fail_on < 1):
        raise errors.InvalidValue("failOnErrors must be a positive integer")
    created: dict[str, str] = {}
    results: list[dict[str, Any]] = []
    failures = 0
    for op in ops:
        result = _one(op, created)
        results.append(result)
        if int(result["status"]) >= 400:
            failures += 1
            if fail_on is not None and failures >= fail_on:
                break
    return {"schemas": [schema.BULK_RESPONSE], "Operations": results}


def _one(op: Any, created: dict[str, str]) -> dict[str, Any]:
    if not isinstance(op, dict):
        return _failed({}, 400, "each operation must be an object", "invalidSyntax")
    method = str(op.get("method", "")).upper()
    bulk_id = op.get("bulkId")
    path = op.get("path")
    if method not in METHODS:
        return _failed(op, 400, "method must be POST, PUT, PATCH or DELETE", "invalidSyntax")
    if not isinstance(path, str) or not path.startswith("/"):
        return _failed(op, 400, "path must be a resource path such as /Users", "invalidPath")
    if method == "POST" and not isinstance(bulk_id, str):
        return _failed(op, 400, "a POST needs a bulkId", "invalidValue")
    version = op.get("version")
    if version not in (None, "") and not (isinstance(version, str) and VERSION.fullmatch(version)):
        return _failed(op, 400, 'version must be an ETag such as W/"3"', "invalidValue")
    try:
        path = _resolve(path, created)
        data = _resolve(op.get("data"), created)
    except KeyError as missing:
        return _failed(op, 409, f"bulkId {missing.args[0]!r} names no earlier POST", "invalidValue")
    if not RESOURCE_PATH.fullmatch(path) or (method == "POST") == (path.count("/") > 1):
        return _failed(
            op,
            400,
            f"{method} path must be /Users or /Groups (with an id unless POST)",
            "invalidPath",
        )
    headers = {
        "Authorization": request.headers.get("Authorization", ""),
        "X-Request-ID": g.get("request_id", ""),
        "Content-Type": SCIM_JSON,
    }
    if version:
        headers["If-Match"] = version
    body = None if data is None else json.dumps(data)
    with current_app.test_request_context(
        f"/scim/v2{path}", method=method, data=body, headers=headers
    ):
        response: Response = current_app.full_dispatch_request()
        payload = response.get_data(as_text=True)
    result: dict[str, Any] = {"method": method, "status": str(response.status_code)}
    if bulk_id is not None:
        result["bulkId"] = bulk_id
    if response.headers.get("ETag"):
        result["version"] = response.headers["ETag"]
    if response.status_code >= 400:
        result["response"] = json.loads(payload) if payload else None
        return result
    if payload:
        resource = json.loads(payload)
        result["location"] = resource.get("meta", {}).get("location")
        if method == "POST" and isinstance(bulk_id, str):
            created[bulk_id] = resource["id"]
    elif method == "DELETE":
        result["location"] = f"{current_app.config['BRIDGE_SETTINGS'].base_url}/scim/v2{path}"
    return result


def _resolve(value: Any, created: dict[str, str]) -> Any:
    """`value` with every "bulkId:x" (whole string or path segment) replaced by x's new id."""
    if isinstance(value, str):
        if value.startswith("bulkId:"):
            return created[value[len("bulkId:") :]]
        if "/bulkId:" in value:
            head, _, ref = value.partition("/bulkId:")
            return f"{head}/{created[ref]}"
        return value
    if isinstance(value, list):
        return [_resolve(v, created) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, created) for k, v in value.items()}
    return value


def _failed(op: dict[str, Any], status: int, detail: str, scim_type: str) -> dict[str, Any]:
    result: dict[str, Any] = {
        "method": str(op.get("method", "")).upper(),
        "status": str(status),
        "response": errors.body(status, detail, scim_type),
    }
    if op.get("bulkId") is not None:
        result["bulkId"] = op["bulkId"]
    return result
