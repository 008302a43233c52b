"""Users, groups and audit events lose their single-column account_id index: each of those
tables has a key or index that leads with account_id, which serves every lookup by account
(and the delete cascade's) as well; the single-column one was one more index page to write
for every user, group and audit event (a SCIM create wrote ~23 pages on SQLite).

Revision ID: 0015_account_prefix_indexes
Revises: 0014_session_authn_instant
Create Date: 2026-12-05 00:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015_account_prefix_indexes"
down_revision: str | None = "0014_session_authn_instant"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("users", "groups", "audit_events")


def upgrade() -> None:
    for table in TABLES:
        op.drop_index(f"ix_{table}_account_id", table_name=table)


def downgrade() -> None:
    for table in TABLES:
        op.create_index(f"ix_{table}_account_id", table, ["account_id"], unique=False)
