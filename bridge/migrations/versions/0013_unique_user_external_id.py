"""externalId names one user of an account: a unique index on (account_id, external_id)

The write path checks it inside the transaction (RFC 7643 §3.1; a taken one is a 409), but two
concurrent creates with the same new externalId could both pass the check. The unique index
makes the database settle it: the loser's transaction is retried and then meets the first
one's row (409 uniqueness). NULLs stay allowed many times (no externalId), on both databases.
The index replaces the plain one on the same columns. A database already holding duplicates
is not changed: the upgrade stops and names them, to be fixed by hand (a PATCH of one user's
externalId), then upgraded again.

Revision ID: 0013_unique_user_external_id
Revises: 0012_force_authn
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_unique_user_external_id"
down_revision: str | None = "0012_force_authn"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    users = sa.table("users", sa.column("account_id"), sa.column("external_id"), sa.column("id"))
    accounts = sa.table("accounts", sa.column("id"), sa.column("slug"))
    duplicates = (
        op.get_bind()
        .execute(
            sa.select(accounts.c.slug, users.c.external_id, sa.func.count())
            .join(accounts, accounts.c.id == users.c.account_id)
            .where(users.c.external_id.is_not(None))
            .group_by(accounts.c.slug, users.c.external_id)
            .having(sa.func.count() > 1)
            .order_by(accounts.c.slug, users.c.external_id)
        )
        .all()
    )
    if duplicates:
        listed = "; ".join(
            f"account {s!r}: {n} users with externalId {e!r}" for s, e, n in duplicates
        )
        raise RuntimeError(
            f"users share an externalId ({listed}); give each its own (or none) with a SCIM "
            "PATCH, then upgrade again"
        )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index("ix_users_account_external_id")
        batch_op.create_index(
            "uq_users_account_external_id", ["account_id", "external_id"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index("uq_users_account_external_id")
        batch_op.create_index(
            "ix_users_account_external_id", ["account_id", "external_id"], unique=False
        )
