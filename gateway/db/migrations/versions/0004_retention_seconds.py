"""Partner retention in seconds (durations down to the minute), from whole days.

Revision ID: 0004_retention_seconds
Revises: 0003_pending_objects
"""

import sqlalchemy as sa
from alembic import op

revision = '0004_retention_seconds'
down_revision = '0003_pending_objects'
branch_labels = None
depends_on = None

# Constant SQL: no value from outside reaches these statements.
UPGRADE = "UPDATE partners SET retention_seconds = retention_days * 86400"
# Whole days, rounded up: a partner never keeps files for less than it asked.
DOWNGRADE = "UPDATE partners SET retention_days = (retention_seconds + 86399) / 86400"


def upgrade() -> None:
    with op.batch_alter_table("partners") as batch:
        batch.add_column(sa.Column("retention_seconds", sa.Integer(), nullable=True))
    op.execute(sa.text(UPGRADE))
    with op.batch_alter_table("partners") as batch:
        batch.alter_column("retention_seconds", existing_type=sa.Integer(), nullable=False)
        batch.drop_column("retention_days")


def downgrade() -> None:
    with op.batch_alter_table("partners") as batch:
        batch.add_column(sa.Column("retention_days", sa.Integer(), nullable=True))
    op.execute(sa.text(DOWNGRADE))
    with op.batch_alter_table("partners") as batch:
        batch.alter_column("retention_days", existing_type=sa.Integer(), nullable=False)
        batch.drop_column("retention_seconds")
