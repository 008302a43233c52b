"""Which policy applies to an account: the seam where the policy engine plugs into the service."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

import policies
from bridge.models import Account, Environment


def policy_for(db: Session, account: Account) -> policies.Policy:
    """The account's policy. Until policy files land: its default role and default environments."""
    defaults = db.scalars(
        select(Environment.name)
        .where(Environment.account_id == account.id, Environment.is_default)
        .order_by(Environment.name)
    ).all()
    return policies.Policy(
        account=account.slug,
        defaults=policies.Defaults(role=account.default_role, environments=tuple(defaults)),
    )
