"""Overview, Logins and Audit: pages that show what the bridge did."""

from __future__ import annotations

from flask import g, render_template, request
from flask.typing import ResponseReturnValue

from bridge import audit, logins, overview
from bridge.web import get_store
from console.base import bp, page_args


@bp.get("/<slug>/", endpoint="overview")
def overview_page(slug: str) -> ResponseReturnValue:
    """IdP certificates, SCIM use, refused logins, policy and audit health."""
    return render_template("console/overview.html", o=overview.of(get_store(), slug))


@bp.get("/<slug>/logins", endpoint="logins")
def logins_page(slug: str) -> ResponseReturnValue:
    """The sign-in log, newest first, with typed reasons; filter by outcome and reason."""
    before, size = page_args()
    failed = request.args.get("failed") == "1"
    reason = request.args.get("reason") or None
    with get_store().read() as db:
        rows = logins.recent(
            db, g.admin.account_id, failed=failed, reason=reason, before=before, limit=size + 1
        )
    return render_template(
        "console/logins.html",
        rows=rows[:size],
        older=rows[size - 1]["id"] if len(rows) > size else None,
        failed=failed,
        reason=reason or "",
    )


@bp.get("/<slug>/audit", endpoint="audit")
def audit_page(slug: str) -> ResponseReturnValue:
    """The audit log, newest first; filter by action prefix, actor, target."""
    before, size = page_args()
    filters = {k: request.args.get(k, "").strip() for k in ("action", "actor", "target")}
    with get_store().read() as db:
        events = audit.page(
            db,
            g.admin.account_id,
            before=before,
            limit=size + 1,
            **{k: v or None for k, v in filters.items()},
        )
    return render_template(
        "console/audit.html",
        events=[audit.describe(e) for e in events[:size]],
        older=events[size - 1].seq if len(events) > size else None,
        filters=filters,
        verified=None,
    )


@bp.post("/<slug>/audit/verify")
def verify_audit(slug: str) -> ResponseReturnValue:
    """Walk the whole chain now and say whether it holds, and where it first breaks."""
    with get_store().read() as db:
        count, broken = audit.verify(db, g.admin.account_id)
        events = audit.page(db, g.admin.account_id, limit=PAGE_AFTER_VERIFY + 1)
    return render_template(
        "console/audit.html",
        events=[audit.describe(e) for e in events[:PAGE_AFTER_VERIFY]],
        older=events[PAGE_AFTER_VERIFY - 1].seq if len(events) > PAGE_AFTER_VERIFY else None,
        filters={"action": "", "actor": "", "target": ""},
        verified={"count": count, "broken": broken},
    )


PAGE_AFTER_VERIFY = 50
