"""The HTTP floor of bench/scim/run.py's GET by id: one indexed SELECT behind the bridge's gunicorn.

    gunicorn --config gunicorn.conf.py floor_app:app     (PYTHONPATH: the repository, bench/scim)

A WSGI application with nothing else in it (no Flask, no SQLAlchemy, no policy, no request log):
GET /scim/v2/Users/<id> with the bench's bearer token reads that user's row of the bridge's own
database (BRIDGE_DATABASE_URL, the same file or PostgreSQL database the bridge serves) through the
bare driver, one statement on a connection of its thread (psycopg in autocommit, so no BEGIN or
COMMIT; or sqlite3), and answers it as a small SCIM document (id, userName, externalId, active,
displayName, meta). Any other GET answers 200 (the readiness probe). Served by gunicorn with the
repository's gunicorn.conf.py (bridge.serving's asyncio worker, the same threads and workers as
the bridge), its requests per second are the most a SCIM GET by id served this way from this
database reaches on this machine: the HTTP floor the bridge's GET is measured against.
BENCH_FLOOR_TOKEN is the bearer token it accepts.

`floor_app:stack_app` is the same request on the stack the bridge is built on: a Flask app with
one route, the row read through SQLAlchemy Core (a pooled engine, PostgreSQL in autocommit; the
bridge's `users` table as bridge.models declares it, so its column types convert the values as the
bridge's do), the same document answered with Flask's Response. Nothing of the bridge's own runs
(no hooks, no token read, no request log, no metrics). Its requests per second are the most a
GET by id served on Flask and SQLAlchemy (the chosen dependencies) reaches here: the stack floor.
"""

from __future__ import annotations

import hmac
import json
import os
import sqlite3
import threading
import uuid
from typing import Any

URL = os.environ["BRIDGE_DATABASE_URL"]
TOKEN = f"Bearer {os.environ['BENCH_FLOOR_TOKEN']}".encode()
PREFIX = "/scim/v2/Users/"
SELECT = (
    "SELECT id, user_name, external_id, active, display_name, created, last_modified, version "
    "FROM users WHERE id = "
)
_local = threading.local()


def _connection() -> Any:
    conn = getattr(_local, "conn", None)
    if conn is None:
        if URL.startswith("sqlite"):
            conn = sqlite3.connect(URL.split(":///", 1)[1], check_same_thread=False)
        else:
            import psycopg

            conn = psycopg.connect(URL.replace("postgresql+psycopg", "postgresql"), autocommit=True)
        _local.conn = conn
    return conn


def _row(user_id: uuid.UUID) -> Any:
    conn = _connection()
    if isinstance(conn, sqlite3.Connection):
        return conn.execute(SELECT + "?", (user_id.hex,)).fetchone()
    return conn.execute(SELECT + "%s", (user_id,)).fetchone()


def _document(found: Any) -> bytes:
    user_id, user_name, external_id, active, display, created, modified, version = found
    return json.dumps(
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": str(uuid.UUID(str(user_id))),
            "userName": user_name,
            "externalId": external_id,
            "active": bool(active),
            "displayName": display,
            "meta": {
                "resourceType": "User",
                "created": str(created),
                "lastModified": str(modified),
                "version": f'W/"{version}"',
                "location": f"{PREFIX}{user_id}",
            },
        }
    ).encode()


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    path = environ.get("PATH_INFO", "")
    if not path.startswith(PREFIX):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    given = environ.get("HTTP_AUTHORIZATION", "").encode()
    if not hmac.compare_digest(given, TOKEN):
        start_response("401 Unauthorized", [("Content-Length", "0")])
        return [b""]
    try:
        found = _row(uuid.UUID(path.removeprefix(PREFIX)))
    except ValueError:
        found = None
    if found is None:
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    body = _document(found)
    headers = [("Content-Type", "application/scim+json"), ("Content-Length", str(len(body)))]
    start_response("200 OK", headers)
    return [body]


def _stack_app() -> Any:
    from flask import Flask, Response, request
    from sqlalchemy import bindparam, create_engine, select

    from bridge.models import User

    pg = not URL.startswith("sqlite")
    options: dict[str, Any] = {"pool_size": 10, "isolation_level": "AUTOCOMMIT"} if pg else {}
    engine = create_engine(URL, **options)
    columns = (User.id, User.user_name, User.external_id, User.active, User.display_name)
    statement = select(*columns, User.created, User.last_modified, User.version).where(
        User.id == bindparam("user_id")
    )
    stack = Flask(__name__)

    @stack.get("/scim/v2/Users/<raw_id>")
    def get_user(raw_id: str) -> Response:
        if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), TOKEN):
            return Response(status=401)
        try:
            user_id = uuid.UUID(raw_id)
        except ValueError:
            return Response(status=404)
        with engine.connect() as conn:
            found = conn.execute(statement, {"user_id": user_id}).first()
        if found is None:
            return Response(status=404)
        return Response(_document(found), mimetype="application/scim+json")

    @stack.get("/<path:_any>")
    def ready(_any: str) -> str:
        return "ok"

    return stack


def __getattr__(name: str) -> Any:  # `floor_app:stack_app` (gunicorn), made when asked for
    if name == "stack_app":
        globals()[name] = made = _stack_app()
        return made
    raise AttributeError(name)
