"""Signed state: a seal on every granting row, encrypted TOTP secrets, audit entry MACs.

Revision ID: 0005_signed_state
Revises: 0004_retention_seconds

Rows that exist before this revision have no seal; ``blindpost init --force`` creates the
state key and seals them (trusting the database once), see docs/security.md.
"""

import sqlalchemy as sa
from alembic import op

revision = '0005_signed_state'
down_revision = '0004_retention_seconds'
branch_labels = None
depends_on = None

SEALED = ("partners", "accounts", "ssh_keys", "totp_secrets", "partner_keys", "transfers")


def upgrade() -> None:
    for table in SEALED:
        op.add_column(table, sa.Column("seal", sa.String(length=100), nullable=True))
    with op.batch_alter_table("totp_secrets") as batch:
        batch.alter_column("secret", type_=sa.Text(), existing_type=sa.String(length=64),
                           existing_nullable=False)
    # Adding a column is not an UPDATE: the append-only triggers do not fire.
    op.add_column("audit_entries", sa.Column("mac", sa.String(length=100), nullable=True))


def downgrade() -> None:
    raise NotImplementedError("signed state cannot be removed: restore a backup instead")
