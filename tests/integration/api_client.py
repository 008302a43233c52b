"""A management-API client for tests: paths under /api/v1, an API key sent as Bearer."""

from __future__ import annotations

import json as json_module
from typing import Any

from flask.testing import FlaskClient


class ApiClient:
    def __init__(self, client: FlaskClient, key: str, key_id: int) -> None:
        self.client, self.key, self.key_id = client, key, key_id

    def request(self, method: str, path: str, *, json: Any = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.key}", **kw.pop("headers", {})}
        if json is not None:
            kw["data"] = json_module.dumps(json)
            headers["Content-Type"] = "application/json"
        url = path if path.startswith("/") else f"/api/v1/{path}"
        return self.client.open(url, method=method, headers=headers, **kw)

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, json=json, **kw)

    def put(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.request("PUT", path, json=json, **kw)

    def patch(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.request("PATCH", path, json=json, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)


def problem_type(response: Any) -> str:
    """The slug of a problem response's type, after checking it is RFC 9457 problem JSON."""
    assert response.mimetype == "application/problem+json", response.data
    body = response.json
    assert body["status"] == response.status_code
    return str(body["type"]).rpartition("#problem-")[2]
