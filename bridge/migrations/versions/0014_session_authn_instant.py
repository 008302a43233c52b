"""Login sessions keep when the person authenticated at the IdP (the assertion's AuthnInstant):
the OIDC ID token's auth_time and max_age are judged on it, not on the session's start

Revision ID: 0014_session_authn_instant
Revises: 0013_unique_user_external_id
Create Date: 2026-12-01 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_session_authn_instant"
down_revision: str | None = "0013_unique_user_external_id"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("login_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("authenticated", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("login_sessions", schema=None) as batch_op:
        batch_op.drop_column("authenticated")
