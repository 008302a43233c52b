"""SAML interop: the whole NameID and the pending LogoutRequest with each session, login requests
bound to the browser that started them, per-IdP response-signature and disabled switches

Revision ID: 0007_saml_interop
Revises: 0006_harden_identifier_keys
Create Date: 2026-12-01 15:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_saml_interop"
down_revision: str | None = "0006_harden_identifier_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("login_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name_id_format", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("name_qualifier", sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column("sp_name_qualifier", sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column("sp_provided_id", sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column("logout_request_id", sa.String(length=128), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_login_sessions_logout_request_id"), ["logout_request_id"], unique=False
        )
    with op.batch_alter_table("authn_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("browser_hash", sa.String(length=64), nullable=True))
    with op.batch_alter_table("identity_providers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "accept_response_signature", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
        batch_op.add_column(
            sa.Column("disabled", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("identity_providers", schema=None) as batch_op:
        batch_op.drop_column("disabled")
        batch_op.drop_column("accept_response_signature")
    with op.batch_alter_table("authn_requests", schema=None) as batch_op:
        batch_op.drop_column("browser_hash")
    with op.batch_alter_table("login_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_sessions_logout_request_id"))
        batch_op.drop_column("logout_request_id")
        batch_op.drop_column("sp_provided_id")
        batch_op.drop_column("sp_name_qualifier")
        batch_op.drop_column("name_qualifier")
        batch_op.drop_column("name_id_format")
