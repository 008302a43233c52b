"""Server-side login sessions: what the product trusts after a SAML login."""

from __future__ import annotations

import uuid

from sqlalchemy import update
from sqlalchemy.orm import Session

from bridge.models import LoginSession, utcnow


def end_for_user(db: Session, user_id: uuid.UUID) -> int:
    """End every live session of a user (deactivation, deletion); return how many."""
    result = db.execute(
        update(LoginSession)
        .where(LoginSession.user_id == user_id, LoginSession.ended.is_(None))
        .values(ended=utcnow())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
