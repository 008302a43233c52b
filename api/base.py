"""The API blueprint: authentication and scope in one before_request, validation through
spectree (pydantic models that also make the OpenAPI document), errors as RFC 9457 problems."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, current_app, g, request
from pydantic import ValidationError
from spectree import Response, SecurityScheme, SpecTree
from spectree.models import SecuritySchemeData

from api.models import Problem
from bridge import api_keys
from bridge.errors import Forbidden, InvalidInput, Unauthorized
from bridge.web import get_store

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__, url_prefix="/api/v1", template_folder="templates")
F = TypeVar("F", bound=Callable[..., Any])
SCOPE_ATTR = "_api_scope"
PUBLIC = {"api.openapi_document", "api.reference"}


def _before(req: Any, resp: Any, err: Any, instance: Any, adapter: Any = None) -> None:
    """A request that does not match its model is a 400 problem naming every bad field."""
    if err is not None:
        raise InvalidInput(_explain(err))


def _after(req: Any, resp: Any, err: Any, instance: Any, adapter: Any = None) -> None:
    """A response that does not match the document is our bug: say so loudly."""
    if err is not None:
        log.error("API response does not match its model at %s: %s", req.path, err)


def _explain(err: ValidationError) -> str:
    parts = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


spec = SpecTree(
    "flask",
    title="Identity Bridge management API",
    version="1",
    description=(
        "See and steer an account's access: users with the provenance of every row, manual "
        "access, groups, environments, API keys. Send `Authorization: Bearer ibk_...`; the key "
        "decides the account and its scope (read, write, admin) what it may do. Errors are "
        "RFC 9457 problem documents."
    ),
    mode="strict",
    # Model names are unique across api/ (one name, one meaning), so the document uses them bare.
    naming_strategy=lambda model: model.__name__,
    nested_naming_strategy=lambda _parent, child: child,
    annotations=False,
    validation_error_status=400,
    validation_error_model=Problem,
    before=_before,
    after=_after,
    security_schemes=[
        SecurityScheme(
            name="apiKey",
            data=SecuritySchemeData(type="http", scheme="bearer", description="An `ibk_` API key"),
        )
    ],
    security={"apiKey": []},
)

ERRORS = {"HTTP_401": Problem, "HTTP_403": Problem, "HTTP_404": Problem}


def responses(**models: Any) -> Response:
    """The documented responses of a route: its own plus the errors every route can give."""
    return Response(**{**ERRORS, **models})


def requires(scope: str) -> Callable[[F], F]:
    """Declare the scope a route needs (checked in `authenticate`, before the route runs)."""

    def mark(view: F) -> F:
        setattr(view, SCOPE_ATTR, scope)
        return view

    return mark


def authenticate() -> None:
    """Who calls (the API key's account and scope) and whether the route allows it, before any
    route runs."""
    if request.endpoint in PUBLIC:  # the document and the reference need no key
        return
    header = request.headers.get("Authorization", "")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise Unauthorized("send an API key as `Authorization: Bearer ibk_...`")
    account, key = api_keys.authenticate(get_store(), raw.strip())
    g.account_id, g.account_slug, g.api_key_id = account.id, account.slug, key.id
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None:  # an unknown URL: the 404 follows
        return
    needed = getattr(view, SCOPE_ATTR, "admin")  # a route that declares nothing needs the most
    if not api_keys.allows(key.scope, needed):
        raise Forbidden(f"this API key has scope {key.scope}; this request needs {needed}")
    body: Any = None
    if request.method in ("POST", "PUT", "PATCH") and request.content_length:
        try:
            body = json.loads(request.get_data(cache=True))
        except (ValueError, UnicodeDecodeError):
            raise InvalidInput("the request body is not valid JSON") from None
    # PostgreSQL text cannot hold NUL (psycopg refuses it): refuse it here as bad input.
    given = [*request.args.values(), *map(str, (request.view_args or {}).values())]
    if any("\x00" in v for v in given) or _has_nul(body):
        raise InvalidInput("NUL characters are not allowed")


# Registered by a call, not as a decorator: mutmut does not mutate decorated functions, and
# this one decides who may do what.
bp.before_request(authenticate)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def actor() -> str:
    """Who writes, in the audit log: the API key's id."""
    return f"api:key:{g.api_key_id}"


def account_id() -> int:
    return int(g.account_id)
