"""AuthnRequests remember whether ForceAuthn was asked (the answer's AuthnInstant must be new)

Revision ID: 0012_force_authn
Revises: 0011_login_digest
Create Date: 2026-12-01 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_force_authn"
down_revision: str | None = "0011_login_digest"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("authn_requests", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("force_authn", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("authn_requests", schema=None) as batch_op:
        batch_op.drop_column("force_authn")
