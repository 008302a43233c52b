"""A SAML identity keeps what its last provisioned login depended on (issue 14)

Revision ID: 0011_login_digest
Revises: 0010_idp_domains
Create Date: 2026-12-01 18:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_login_digest"
down_revision: str | None = "0010_idp_domains"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("saml_identities") as batch:
        batch.add_column(sa.Column("login_digest", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("saml_identities") as batch:
        batch.drop_column("login_digest")
