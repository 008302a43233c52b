"""The SCIM request log: every request an IdP made (time, token, method, path, status, SCIM
error type, duration), the first thing an IT admin reads when a sync fails.

Bodies are kept only for failures, with secrets redacted (any member whose name says password,
secret or token) and cut to 4 KB. Rows older than the retention (BRIDGE_SCIM_LOG_DAYS) are purged
by the writers themselves, at most once a minute per process; a log write never fails the
request it describes. The row is made after the response and queued (Store.append): a thread of
the process writes the rows of the last 50 ms in one transaction, and this process's readers of
the log (`search`'s callers: API, console, overview) write what is queued first. So another
process's request shows up within about 50 ms, and a worker killed outright (SIGKILL, the OOM
killer) loses what it had queued; a graceful stop writes it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, delete, select

from bridge import values
from bridge.models import ScimRequest, ScimToken, utcnow
from bridge.store import Store

log = logging.getLogger(__name__)
MAX_BODY = 4096
SECRET_WORDS = ("password", "secret", "token")
REDACTED = "[redacted]"
PURGE_EVERY = 60.0
_purged: dict[int, float] = {}
_lock = threading.Lock()
TABLE: Table = ScimRequest.__table__  # type: ignore[assignment]


def redact(raw: bytes) -> str | None:
    """The body as text with secret-looking members replaced; None when empty."""
    if not raw:
        return None
    try:
        return json.dumps(_scrub(json.loads(raw)), ensure_ascii=False)[:MAX_BODY]
    except (ValueError, UnicodeDecodeError, RecursionError):  # not JSON, or nested too deep
        text = values.storable(raw[:MAX_BODY].decode("utf-8", errors="replace"))
        return text if not any(w in text.lower() for w in SECRET_WORDS) else REDACTED


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: REDACTED if any(w in str(k).lower() for w in SECRET_WORDS) else _scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def record(
    store: Store,
    account_id: int,
    *,
    token_id: int | None,
    method: str,
    path: str,
    status: int,
    scim_type: str | None,
    duration_ms: int,
    detail: str | None,
    body: bytes,
    retention_days: int,
) -> None:
    """Log one SCIM request (the body only for a failure); purge what is past retention."""
    now = time.monotonic()
    with _lock:
        purge = now - _purged.get(account_id, 0.0) > PURGE_EVERY
        if purge:
            _purged[account_id] = now

    # one row, no ORM object nor SQLAlchemy execution (Store.append): either costs more than
    # the INSERT itself; the values are checked as a flush would check them (bridge.values)
    row = {
        "account_id": account_id,
        "token_id": token_id,
        "at": utcnow(),
        "method": method,
        "path": values.storable(path[:2048]),
        "status": status,
        "scim_type": scim_type,
        "duration_ms": duration_ms,
        "detail": values.storable((detail or "")[:1024]) or None,
        "body": redact(body) if status >= 400 else None,
    }
    try:
        values.check_values(TABLE, row)
        store.append(TABLE, row)
        if purge:
            store.write_one(
                delete(TABLE).where(
                    TABLE.c.account_id == account_id,
                    TABLE.c.at < utcnow() - timedelta(days=retention_days),
                )
            )
    except Exception:  # the request already has its answer; losing a log line must not change it
        log.exception("could not write the SCIM request log")


def search(
    store: Store,
    account_id: int,
    *,
    failed: bool = False,
    status: int | None = None,
    method: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Logged SCIM requests, newest first, filtered; `before_id` pages back. This process's
    rows still queued (Store.append) are written first; other processes' land within
    APPEND_DELAY. In a request, the request's read transaction ends before the read."""
    store.flush()
    stmt = (
        select(ScimRequest, ScimToken.label, ScimToken.prefix)
        .outerjoin(ScimToken, ScimToken.id == ScimRequest.token_id)
        .where(ScimRequest.account_id == account_id)
        .order_by(ScimRequest.id.desc())
        .limit(limit)
    )
    if failed:
        stmt = stmt.where(ScimRequest.status >= 400)
    if status is not None:
        stmt = stmt.where(ScimRequest.status == status)
    if method is not None:
        stmt = stmt.where(ScimRequest.method == method.upper())
    if since is not None:
        stmt = stmt.where(ScimRequest.at >= since)
    if until is not None:
        stmt = stmt.where(ScimRequest.at < until)
    if before_id is not None:
        stmt = stmt.where(ScimRequest.id < before_id)
    with store.read() as db:
        found = db.execute(stmt).all()
    return [
        {
            "id": r.id,
            "at": r.at,
            "token": None if r.token_id is None else f"{r.token_id} ({prefix}… {label or '-'})",
            "method": r.method,
            "path": r.path,
            "status": r.status,
            "scim_type": r.scim_type,
            "duration_ms": r.duration_ms,
            "detail": r.detail,
            "body": r.body,
        }
        for r, label, prefix in found
    ]
