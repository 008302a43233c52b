"""What happened: the login log (typed reasons, filterable) and the audit log (a cursor either
way, filters, chain verification)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from flask import request
from flask.typing import ResponseReturnValue
from pydantic import AwareDatetime, BaseModel, Field

from api.base import account_id, bp, requires, responses, spec
from api.models import INT_MAX, Page, Problem, Strict
from bridge import audit, logins, scim_log
from bridge.web import get_store


class LoginDoc(BaseModel):
    id: int
    at: datetime
    ok: bool
    reason: str = Field(description="ok, or why it was refused (bad_signature, expired, ...)")
    idp: str | None
    name_id: str | None
    user_id: str | None
    detail: str | None


class LoginList(Page):
    logins: list[LoginDoc]


class LoginQuery(Strict):
    failed: bool = False
    idp: str | None = Field(None, max_length=64)
    user_id: uuid.UUID | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    cursor: int | None = Field(None, ge=1, le=INT_MAX, description="`next` of the previous page")
    limit: int = Field(50, ge=1, le=200)


class AuditDoc(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    hash: str


class AuditList(BaseModel):
    events: list[AuditDoc]
    next: int | None = Field(description="Pass as `before` (newest first) or `after` (following).")


class AuditQuery(Strict):
    before: int | None = Field(None, ge=1, le=INT_MAX, description="Events older than this seq.")
    after: int | None = Field(
        None, ge=0, le=INT_MAX, description="Events after this seq, oldest first."
    )
    user_id: uuid.UUID | None = None
    action: str | None = Field(
        None, max_length=64, description="An action, or a prefix like `user.`"
    )
    limit: int = Field(50, ge=1, le=500)


class Verified(BaseModel):
    ok: bool
    events: int
    broken_at: int | None
    reason: str | None


@bp.get("/logins")
@requires("read")
@spec.validate(
    query=LoginQuery, resp=responses(HTTP_200=LoginList, HTTP_400=Problem), tags=["logs"]
)
def list_logins() -> ResponseReturnValue:
    """SAML logins, newest first: refused ones with their typed reason; filter by outcome, IdP,
    user and time."""
    q: LoginQuery = request.context.query  # type: ignore[attr-defined]
    with get_store().read() as db:
        rows = logins.search(
            db,
            account_id(),
            failed=q.failed,
            idp=q.idp,
            user_id=q.user_id,
            since=q.since,
            until=q.until,
            before_id=q.cursor,
            limit=q.limit,
        )
    nxt = str(rows[-1]["id"]) if len(rows) == q.limit else None
    return LoginList(logins=[LoginDoc(**r) for r in rows], next=nxt)


@bp.get("/audit")
@requires("read")
@spec.validate(
    query=AuditQuery, resp=responses(HTTP_200=AuditList, HTTP_400=Problem), tags=["logs"]
)
def list_audit() -> ResponseReturnValue:
    """Audit events: newest first (page back with `before`), or after a sequence number
    (follow the log with `after`); filter by user and action."""
    q: AuditQuery = request.context.query  # type: ignore[attr-defined]
    target = ("user", str(q.user_id)) if q.user_id else None
    with get_store().read() as db:
        events = audit.events(
            db,
            account_id(),
            before=q.before,
            after=q.after,
            target=target,
            action=q.action,
            limit=q.limit,
        )
        docs = [AuditDoc(**{**audit.describe(e), "at": e.at}) for e in events]
    nxt = docs[-1].seq if len(docs) == q.limit else None
    return AuditList(events=docs, next=nxt)


@bp.post("/audit/verify")
@requires("read")
@spec.validate(resp=responses(HTTP_200=Verified), tags=["logs"])
def verify_audit() -> ResponseReturnValue:
    """Walk the account's hash chain; name the first event where it does not hold."""
    with get_store().read() as db:
        count, broken = audit.verify(db, account_id())
    return Verified(
        ok=broken is None,
        events=count,
        broken_at=broken.seq if broken else None,
        reason=broken.reason if broken else None,
    )


class ScimRequestDoc(BaseModel):
    id: int
    at: datetime
    token: str | None = Field(description="The SCIM token: id, prefix, label.")
    method: str
    path: str
    status: int
    scim_type: str | None
    duration_ms: int
    detail: str | None
    body: str | None = Field(description="Failures only, secrets redacted, at most 4 KB.")


class ScimRequestList(Page):
    requests: list[ScimRequestDoc]


class ScimRequestQuery(Strict):
    failed: bool = False
    status: int | None = Field(None, ge=100, le=599)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    cursor: int | None = Field(None, ge=1, le=INT_MAX, description="`next` of the previous page")
    limit: int = Field(50, ge=1, le=200)


@bp.get("/scim-requests")
@requires("read")
@spec.validate(
    query=ScimRequestQuery,
    resp=responses(HTTP_200=ScimRequestList, HTTP_400=Problem),
    tags=["logs"],
)
def list_scim_requests() -> ResponseReturnValue:
    """The SCIM requests the IdP made, newest first: when a sync fails, what it sent and what it
    got back (failures keep the body, secrets redacted). Kept BRIDGE_SCIM_LOG_DAYS days."""
    q: ScimRequestQuery = request.context.query  # type: ignore[attr-defined]
    rows = scim_log.search(
        get_store(),
        account_id(),
        failed=q.failed,
        status=q.status,
        method=q.method,
        since=q.since,
        until=q.until,
        before_id=q.cursor,
        limit=q.limit,
    )
    nxt = str(rows[-1]["id"]) if len(rows) == q.limit else None
    return ScimRequestList(requests=[ScimRequestDoc(**r) for r in rows], next=nxt)
