"""SCIM routes: parse, call the provisioning service, serialise. The bearer token is the account."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from flask import Blueprint, Response, current_app, g, request, stream_with_context
from flask.typing import ResponseReturnValue
from flask.wrappers import Request
from sqlalchemy import select

from bridge import accounts, groups, provisioning, scim_log
from bridge.errors import BridgeError, PreconditionFailed, Unauthorized
from bridge.here import current
from bridge.models import Group, User
from bridge.web import get_store, standalone_reads
from scim import bulk, errors, inputs, listing, mapping, patch, schema
from scim.errors import SCIM_JSON
from scim.sql import GROUP_MAP, USER_MAP

bp = Blueprint("scim", __name__, url_prefix="/scim/v2")


def base_url() -> str:
    return f"{current_app.config['BRIDGE_SETTINGS'].base_url}/scim/v2"


def actor() -> str:
    return f"scim:token:{g.scim_token_id}"


@bp.before_request
def start_clock() -> None:
    g.scim_started = time.perf_counter()


@bp.before_request
def authenticate() -> None:
    req, here = current()
    header = req.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send the account's SCIM token as `Authorization: Bearer <token>`")
    store = get_store()
    asked = _asked_with_token(req, store.dialect)
    if asked is None:
        use, _rows = accounts.token_use(store, token.strip())
    else:  # what the request reads, read with its token in one statement
        key, statement, params = asked
        use, rows = accounts.token_use(store, token.strip(), statement, params)
        req.environ[READ_ALONG] = (key, rows)
    here.account_id, here.scim_token_id = use.account_id, use.token_id


READ_ALONG = "bridge.scim_read_along"  # in the request's environ, not `g` (SCIM Bulk)


# the views whose write reads the account and its policy (on PostgreSQL with the token: AccountRead)
_WRITES = (
    "scim.create_user",
    "scim.replace_user",
    "scim.patch_user",
    "scim.replace_group",
    "scim.patch_group",
)
ACCOUNT = "account"  # what a write's token statement asks: _account_read


def _asked_with_token(req: Request, dialect: str) -> tuple[Any, Any, dict[str, Any]] | None:
    """What a GET /Users/<id> (the user), GET /Users or GET /Groups (the page) reads, to be
    read with the request's token in one statement: (what is asked, the statement, its
    parameters). None for any other request, and for one its view refuses (an id that is no
    id, a filter that is no filter: answered by the view, after the token), or counts apart
    (`count` 0). (A page of groups is their heads: members stream apart, as ever.) On
    PostgreSQL a write of a user or group reads its account with the token (AccountRead)."""
    endpoint = req.endpoint
    if dialect == "postgresql" and endpoint in _WRITES:
        return ACCOUNT, provisioning.ACCOUNT_WITH_TOKEN, {}
    if endpoint == "scim.get_user" and req.view_args:
        try:
            user_id = uuid.UUID(req.view_args["raw_id"])
        except ValueError:
            return None
        return user_id, mapping.user_with_token(dialect), {"user_id": user_id}
    if endpoint in ("scim.query_users", "scim.query_groups"):
        users = endpoint == "scim.query_users"
        amap, model = (USER_MAP, User) if users else (GROUP_MAP, Group)
        try:
            query = listing.Query.from_params(req.args)
            if query.count == 0:
                return None
            columns = mapping.user_columns(dialect) if users else mapping.GROUP_COLUMNS
            statement, params = listing.page_with_token(
                amap, model, dialect, query, mapping.TOKEN, columns
            )
        except (errors.ScimError, BridgeError):
            return None
        return query, statement, params
    return None


def _read_with_token() -> tuple[Any, list[Any]] | None:
    """(what was asked, the rows) when the request's reads came with its token."""
    read: tuple[Any, list[Any]] | None = current()[0].environ.pop(READ_ALONG, None)
    return read


def _account_read() -> provisioning.AccountRead | None:
    """The account as a write's token statement read it (PostgreSQL), for its first attempt."""
    read = _read_with_token()
    return provisioning.AccountRead(read[1]) if read is not None and read[0] == ACCOUNT else None


@bp.after_request
def log_request(response: Response) -> Response:
    """Every authenticated SCIM request goes to the account's SCIM request log."""
    req, here = current()
    account_id = here.get("account_id")
    if account_id is None:  # unauthenticated: no account to attribute it to
        return response
    scim_type = detail = None
    if response.status_code >= 400 and not response.is_streamed:
        try:
            doc = json.loads(response.get_data())
            scim_type, detail = doc.get("scimType"), doc.get("detail")
        except (ValueError, AttributeError):
            pass
    query = req.query_string.decode("utf-8", errors="replace")
    scim_log.record(
        get_store(),
        account_id,
        token_id=here.scim_token_id,
        method=req.method,
        path=req.path + (f"?{query}" if query else ""),
        status=response.status_code,
        scim_type=scim_type,
        duration_ms=round((time.perf_counter() - here.scim_started) * 1000),
        detail=detail,
        body=req.get_data() if response.status_code >= 400 else b"",
        retention_days=current_app.config["BRIDGE_SETTINGS"].scim_log_days,
    )
    return response


@bp.errorhandler(errors.ScimError)
@bp.errorhandler(BridgeError)
def scim_error(exc: Exception) -> ResponseReturnValue:
    status, detail, scim_type = errors.from_exception(exc)
    return errors.response(status, detail, scim_type)


def scim_response(doc: Any, status: int = 200, *, version: int | None = None) -> Response:
    resp = Response(json.dumps(doc), status=status, mimetype=SCIM_JSON)
    if version is not None:
        resp.headers["ETag"] = mapping.etag(version)
    return resp


def body() -> Any:
    """The request's JSON (application/scim+json or application/json), or invalidSyntax."""
    # kept (cache): a failure's body goes, redacted, to the SCIM request log
    return inputs.parse_json(request.get_data())


def resource_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise errors.NotFound(f"no resource {raw!r}") from None


def if_match() -> int | None:
    """The version an If-Match header expects (None: any)."""
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return None
    for tag in header.split(","):
        tag = tag.strip().removeprefix("W/").strip('"')
        if tag.isdigit():
            return int(tag)
    raise PreconditionFailed("If-Match names no version of this resource")


def not_modified(version: int) -> bool:
    header = request.headers.get("If-None-Match", "")
    tags = {t.strip().removeprefix("W/").strip('"') for t in header.split(",")}
    return str(version) in tags or "*" in tags


# ---------------------------------------------------------------- discovery


@bp.get("/ServiceProviderConfig")
@standalone_reads
def get_service_provider_config() -> ResponseReturnValue:
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    return scim_response(
        {
            "schemas": [schema.SP_CONFIG],
            "documentationUri": "https://github.com/identity-bridge#scim",
            "patch": {"supported": True},
            "bulk": {
                "supported": True,
                "maxOperations": bulk.MAX_OPERATIONS,
                "maxPayloadSize": limit,
            },
            "filter": {"supported": True, "maxResults": listing.MAX_PAGE},
            "changePassword": {"supported": False},
            "sort": {"supported": True},
            "etag": {"supported": True},
            "authenticationSchemes": [
                {
                    "type": "oauthbearertoken",
                    "name": "Bearer token",
                    "description": "A token from `idbridge tokens issue`, sent as Bearer",
                    "primary": True,
                }
            ],
            "meta": {
                "resourceType": "ServiceProviderConfig",
                "location": f"{base_url()}/ServiceProviderConfig",
            },
        }
    )


@bp.get("/ResourceTypes")
@standalone_reads
def query_resource_types() -> ResponseReturnValue:
    docs = [schema.resource_type_document(r, base_url()) for r in schema.RESOURCES.values()]
    return scim_response(listing.list_response(len(docs), 1, docs))


@bp.get("/ResourceTypes/<name>")
@standalone_reads
def get_resource_type(name: str) -> ResponseReturnValue:
    resource = schema.RESOURCES.get(name)
    if resource is None:
        raise errors.NotFound(f"no resource type {name!r}")
    return scim_response(schema.resource_type_document(resource, base_url()))


@bp.get("/Schemas")
@standalone_reads
def query_schemas() -> ResponseReturnValue:
    docs = [schema.schema_document(urn, base_url()) for urn in schema.SCHEMA_IDS]
    return scim_response(listing.list_response(len(docs), 1, docs))


@bp.get("/Schemas/<path:urn>")
@standalone_reads
def get_schema(urn: str) -> ResponseReturnValue:
    doc = schema.schema_document(urn, base_url())
    if doc is None:
        raise errors.NotFound(f"no schema {urn!r}")
    return scim_response(doc)


@bp.route("/Me", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def me() -> ResponseReturnValue:
    raise errors.NotImplementedYet("/Me is not supported: tokens belong to the IdP, not to a user")


# ---------------------------------------------------------------- users


def _user_docs(db: Any, rows: list[Any], projection: listing.Projection) -> list[dict[str, Any]]:
    docs = mapping.user_documents(db, rows, base_url())
    return [projection.apply(d, schema.USERS) for d in docs]


def _user_reply(user_id: uuid.UUID, status: int = 200) -> Response:
    req, here = current()
    projection = listing.Projection.parse(
        schema.USERS, req.args.get("attributes"), req.args.get("excludedAttributes")
    )
    read = _read_with_token()
    if read is not None and read[0] == user_id:  # a join's row: NULL columns for no user
        row = read[1][0] if read[1][0].id is not None else None
    else:
        with get_store().read() as db:
            row = mapping.user_row(db, here.account_id, user_id)
    if row is None:
        raise errors.NotFound(f"no user {user_id}")
    if status == 200 and req.method == "GET" and not_modified(row.version):
        return Response(status=304, headers={"ETag": mapping.etag(row.version)})
    if row.manager_id is None:  # nothing more to read: no session made (a GET read with its token)
        doc = _user_docs(None, [row], projection)[0]
    else:
        with get_store().read() as db:
            doc = _user_docs(db, [row], projection)[0]
    resp = scim_response(doc, status, version=row.version)
    if status == 201:
        resp.headers["Location"] = f"{base_url()}/Users/{user_id}"
    return resp


@bp.post("/Users")
@standalone_reads
def create_user() -> ResponseReturnValue:
    doc = mapping.canonical(_object(body()), schema.USERS)
    profile = mapping.user_profile(doc, active=True)
    out = provisioning.provision(
        get_store(),
        g.account_id,
        profile,
        actor=actor(),
        must_create=True,
        account_read=_account_read(),
    )
    made = out.created_as_written
    if made is None:
        return _user_reply(out.user_id, 201)
    # RFC 7644 §3.3: the resource as created, answered from what was written, not read back
    projection = listing.Projection.parse(
        schema.USERS, request.args.get("attributes"), request.args.get("excludedAttributes")
    )
    doc = projection.apply(mapping.created_user(made, base_url()), schema.USERS)
    resp = scim_response(doc, 201, version=out.version)
    resp.headers["Location"] = f"{base_url()}/Users/{out.user_id}"
    return resp


@bp.get("/Users/<raw_id>")
@standalone_reads
def get_user(raw_id: str) -> ResponseReturnValue:
    return _user_reply(resource_id(raw_id))


@bp.put("/Users/<raw_id>")
@standalone_reads
def replace_user(raw_id: str) -> ResponseReturnValue:
    user_id = resource_id(raw_id)
    doc = mapping.canonical(_object(body()), schema.USERS)
    profile = mapping.user_profile(doc)
    if doc.get("active") is None:
        # Not asserted (RFC 7644 §3.5.1 lets a service provider read an omitted readWrite
        # attribute so): the user keeps their state. Cleared, a suspended user would be active
        # again (an unset `active` means active everywhere) without the IdP having said so.
        fields = {k: v for k, v in profile.fields.items() if k != "active"}
        profile = replace(profile, fields=fields)
    provisioning.update_user(
        get_store(),
        g.account_id,
        user_id,
        lambda db, user: profile,
        actor=actor(),
        if_version=if_match(),
        account_read=_account_read(),
    )
    return _user_reply(user_id)


@bp.patch("/Users/<raw_id>")
@standalone_reads
def patch_user(raw_id: str) -> ResponseReturnValue:
    user_id = resource_id(raw_id)
    ops = patch.operations(body())

    def build(db: Any, user: User) -> Any:
        # from the user as locked and loaded: their groups and manager's name are read-only
        current = mapping.canonical(mapping.stored_user(user, base_url()), schema.USERS)
        return mapping.user_profile(patch.apply_to_user(current, ops))

    provisioning.update_user(
        get_store(),
        g.account_id,
        user_id,
        build,
        actor=actor(),
        if_version=if_match(),
        account_read=_account_read(),
    )
    return _user_reply(user_id)


@bp.delete("/Users/<raw_id>")
@standalone_reads
def delete_user(raw_id: str) -> ResponseReturnValue:
    provisioning.delete_user(
        get_store(), g.account_id, resource_id(raw_id), actor=actor(), if_version=if_match()
    )
    return Response(status=204)


@bp.get("/Users")
@standalone_reads
def query_users() -> ResponseReturnValue:
    read = _read_with_token()
    if read is not None:  # the query as parsed, its page read with the token
        return _query_users(read[0], read[1])
    return _query_users(listing.Query.from_params(request.args))


@bp.post("/Users/.search")
@standalone_reads
def search_users() -> ResponseReturnValue:
    return _query_users(listing.Query.from_params(_search_body()))


def _columns(db: Any) -> tuple[Any, ...]:
    return mapping.user_columns(db.get_bind().dialect.name)


def _query_users(query: listing.Query, read: list[Any] | None = None) -> Response:
    """A page of users; `read`: its rows as read with the token (listing.page_with_token)."""
    projection = listing.Projection.parse(schema.USERS, query.attributes, query.excluded)
    with get_store().read() as db:
        found = None if read is None else listing.page_rows(read, query)
        if found is None:
            found = listing.page(db, USER_MAP, User, g.account_id, query, columns=_columns(db))
        total, rows = found
        docs = _user_docs(db, rows, projection)
    return scim_response(listing.list_response(total, query.start, docs))


# ---------------------------------------------------------------- groups


def _group_stream(db: Any, group: Any, projection: listing.Projection) -> Iterator[str]:
    """A Group document as JSON text (from a Group or a row of mapping.GROUP_COLUMNS), members
    streamed in batches when they are wanted."""
    head = projection.apply(mapping.group_head(group, base_url()), schema.GROUPS)
    if not projection.wants(schema.CORE_GROUP, "members"):
        yield json.dumps(head)
        return
    yield json.dumps(head)[:-1] + ', "members": ['
    for i, member in enumerate(mapping.group_members(db, group.id, base_url())):
        yield (", " if i else "") + json.dumps(projection.member(member))
    yield "]}"


def _group_reply(group_id: uuid.UUID, status: int = 200) -> Response:
    projection = listing.Projection.parse(
        schema.GROUPS, request.args.get("attributes"), request.args.get("excludedAttributes")
    )
    store = get_store()
    db = store.sessions()
    group = db.scalar(select(Group).where(Group.account_id == g.account_id, Group.id == group_id))
    if group is None:
        db.close()
        raise errors.NotFound(f"no group {group_id}")
    version = group.version
    if status == 200 and request.method == "GET" and not_modified(version):
        db.close()
        return Response(status=304, headers={"ETag": mapping.etag(version)})

    def generate() -> Iterator[str]:
        try:
            yield from _group_stream(db, group, projection)
        finally:
            db.close()

    resp = Response(stream_with_context(generate()), status=status, mimetype=SCIM_JSON)
    resp.headers["ETag"] = mapping.etag(version)
    if status == 201:
        resp.headers["Location"] = f"{base_url()}/Groups/{group_id}"
    return resp


@bp.post("/Groups")
@standalone_reads
def create_group() -> ResponseReturnValue:
    doc = mapping.canonical(_object(body()), schema.GROUPS)
    out = groups.create_group(
        get_store(),
        g.account_id,
        doc.get("displayName"),
        external_id=mapping.external_id(doc.get("externalId")),
        members=mapping.member_ids(doc.get("members")),
        actor=actor(),
    )
    return _group_reply(out.group_id, 201)


@bp.get("/Groups/<raw_id>")
@standalone_reads
def get_group(raw_id: str) -> ResponseReturnValue:
    return _group_reply(resource_id(raw_id))


@bp.put("/Groups/<raw_id>")
@standalone_reads
def replace_group(raw_id: str) -> ResponseReturnValue:
    group_id = resource_id(raw_id)
    doc = mapping.canonical(_object(body()), schema.GROUPS)
    change = groups.GroupChange(
        display_name=doc.get("displayName"),
        external_id=mapping.external_id(doc.get("externalId")),
        replace=frozenset(mapping.member_ids(doc.get("members"))),
    )
    groups.update_group(
        get_store(),
        g.account_id,
        group_id,
        lambda db, grp: change,
        actor=actor(),
        if_version=if_match(),
        account_read=_account_read(),
    )
    return _group_reply(group_id)


@bp.patch("/Groups/<raw_id>")
@standalone_reads
def patch_group(raw_id: str) -> ResponseReturnValue:
    group_id = resource_id(raw_id)
    change = patch.group_change(patch.operations(body()))
    out = groups.update_group(
        get_store(),
        g.account_id,
        group_id,
        lambda db, grp: change,
        actor=actor(),
        if_version=if_match(),
        account_read=_account_read(),
    )
    if "attributes" in request.args or "excludedAttributes" in request.args:
        return _group_reply(group_id)
    # RFC 7644 §3.5.2 allows 204; Entra asks for it on groups, Okta takes it, and it keeps a
    # one-member change to a 50,000-member group from answering with all 50,000.
    return Response(status=204, headers={"ETag": mapping.etag(out.version)})


@bp.delete("/Groups/<raw_id>")
@standalone_reads
def delete_group(raw_id: str) -> ResponseReturnValue:
    groups.delete_group(
        get_store(), g.account_id, resource_id(raw_id), actor=actor(), if_version=if_match()
    )
    return Response(status=204)


@bp.get("/Groups")
@standalone_reads
def query_groups() -> ResponseReturnValue:
    read = _read_with_token()
    if read is not None:  # the query as parsed, its page read with the token
        return _query_groups(read[0], read[1])
    return _query_groups(listing.Query.from_params(request.args))


@bp.post("/Groups/.search")
@standalone_reads
def search_groups() -> ResponseReturnValue:
    return _query_groups(listing.Query.from_params(_search_body()))


def _query_groups(query: listing.Query, read: list[Any] | None = None) -> Response:
    """A page of groups, their members streamed; `read`: its rows as read with the token
    (listing.page_with_token)."""
    projection = listing.Projection.parse(schema.GROUPS, query.attributes, query.excluded)
    store = get_store()
    db = store.sessions()  # the members' (a session of their own: they stream)
    try:
        found = None if read is None else listing.page_rows(read, query)
        if found is None:
            found = listing.page(
                db, GROUP_MAP, Group, g.account_id, query, columns=mapping.GROUP_COLUMNS
            )
        total, rows = found
    except Exception:
        db.close()
        raise

    def generate() -> Iterator[str]:
        try:
            head = listing.list_response(total, query.start, [])
            head["itemsPerPage"] = len(rows)
            yield json.dumps(head)[: -len("[]}")] + "["
            for i, group in enumerate(rows):
                yield ", " if i else ""
                yield from _group_stream(db, group, projection)
            yield "]}"
        finally:
            db.close()

    return Response(stream_with_context(generate()), mimetype=SCIM_JSON)


@bp.post("/.search")
def search_all() -> ResponseReturnValue:
    """A search across Users and Groups (RFC 7644 §3.4.3): users first, then groups. Not
    standalone_reads: its groups' members stream through a server-side cursor, which lives
    only in a transaction (bridge.store)."""
    query = listing.Query.from_params(_search_body())
    users_view = listing.Projection.parse(schema.USERS, query.attributes, query.excluded)
    groups_view = listing.Projection.parse(schema.GROUPS, query.attributes, query.excluded)
    with get_store().read() as db:
        user_total, users = listing.page(
            db,
            USER_MAP,
            User,
            g.account_id,
            query,
            lenient=True,
            columns=_columns(db),
        )
        rest = replace(
            query,
            start=max(1, query.start - user_total),
            count=query.count - len(users) if query.start <= user_total else query.count,
        )
        group_total, found = listing.page(db, GROUP_MAP, Group, g.account_id, rest, lenient=True)
        docs = _user_docs(db, users, users_view)
        for group in found:
            docs.append(json.loads("".join(_group_stream(db, group, groups_view))))
    return scim_response(listing.list_response(user_total + group_total, query.start, docs))


@bp.post("/Bulk")
def post_bulk() -> ResponseReturnValue:
    doc = _object(body())
    _require_schema(doc, schema.BULK_REQUEST)
    return scim_response(bulk.run(doc))


def _search_body() -> dict[str, Any]:
    doc = _object(body())
    _require_schema(doc, schema.SEARCH_REQUEST)
    return {k: v for k, v in doc.items() if k != "schemas"}


def _require_schema(doc: dict[str, Any], urn: str) -> None:
    """`schemas`, when sent, is a list of URNs naming `urn` (RFC 7644 §3.7, §3.4.3)."""
    schemas = doc.get("schemas")
    if schemas is None:
        return
    if not isinstance(schemas, list) or not all(isinstance(s, str) for s in schemas):
        raise errors.InvalidSyntax("schemas must be a list of schema URNs")
    if urn not in schemas:
        raise errors.InvalidSyntax(f"schemas must contain {urn}")


def _object(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise errors.InvalidSyntax("the body must be a JSON object")
    return doc
