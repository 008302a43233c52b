"""The HTTP floor of bench/saml/run.py: python3-saml alone behind the bridge's own gunicorn set-up.

    gunicorn --config gunicorn.conf.py --pythonpath bench/saml floor_app:app

A WSGI application with nothing else in it (no Flask, no database, no session or cookie): a POST
to the ACS has its form parsed and its SAMLResponse validated exactly as run.py's in-process
floor does (`Response` + `is_valid` + `get_nameid` + `get_attributes`, the app's security
settings, python3-saml patched by importing saml.sso as the app is), then answered 302 to
/session as the bridge answers a login; any other request gets 200 (the readiness probe). Served
by gunicorn with the repository's gunicorn.conf.py (bridge.serving's asyncio worker, the same
threads), so its logins/s per worker are the most any application could reach through this
server on this machine: the floor of the "per worker" target with HTTP, gunicorn and a new
connection per login included, and its 2-worker scaling and tails are the machine's own.
BENCH_FLOOR_SPEC names run.py's JSON spec (the SP's base URL and key, the test IdP's).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from onelogin.saml2.response import OneLogin_Saml2_Response
from run import ACS_PATH, saml_settings

import saml.sso  # noqa: F401  (python3-saml's schema loading patched, as in the app)

SPEC = json.loads(Path(os.environ["BENCH_FLOOR_SPEC"]).read_text())
SETTINGS = saml_settings(SPEC["sp"], SPEC["idp"])
HOST = SPEC["sp"]["base"].split("://", 1)[1]


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ["REQUEST_METHOD"] != "POST":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    form = dict(parse_qsl(environ["wsgi.input"].read(length).decode("latin-1")))
    request = {
        "https": "off",
        "http_host": HOST,
        "script_name": ACS_PATH,
        "get_data": {},
        "post_data": form,
    }
    try:
        response = OneLogin_Saml2_Response(SETTINGS, form["SAMLResponse"])
        response.is_valid(request, raise_exceptions=True)
        if not response.get_nameid():
            raise ValueError("no NameID")
        response.get_attributes()
    except Exception as exc:  # the bench counts anything but the 302 as an error, with its text
        body = f"refused: {exc}".encode()
        start_response("403 Forbidden", [("Content-Type", "text/plain")])
        return [body]
    start_response("302 Found", [("Location", "/session"), ("Content-Length", "0")])
    return [b""]
