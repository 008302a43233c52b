"""IdP e-mail domains (login_hint routing at /oidc/authorize) and the certificate expiry
thresholds already announced per IdP

Revision ID: 0010_idp_domains
Revises: 0009_scim_request_log
Create Date: 2026-12-01 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_idp_domains"
down_revision: str | None = "0009_scim_request_log"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idp_domains",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("idp_id", sa.Integer(), nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_idp_domains_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["idp_id"],
            ["identity_providers.id"],
            name=op.f("fk_idp_domains_idp_id_identity_providers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idp_domains")),
        sa.UniqueConstraint("account_id", "domain", name=op.f("uq_idp_domains_account_id_domain")),
    )
    with op.batch_alter_table("idp_domains", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_idp_domains_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_idp_domains_idp_id"), ["idp_id"], unique=False)
    with op.batch_alter_table("identity_providers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("expiry_notices", sa.JSON(), server_default="{}", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("identity_providers", schema=None) as batch_op:
        batch_op.drop_column("expiry_notices")
    with op.batch_alter_table("idp_domains", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idp_domains_idp_id"))
        batch_op.drop_index(batch_op.f("ix_idp_domains_account_id"))
    op.drop_table("idp_domains")
