"""Served ranges: what of each stored file was served to each account (download limits).

Revision ID: 0006_served_ranges
Revises: 0005_signed_state
"""

import sqlalchemy as sa
from alembic import op

revision = '0006_served_ranges'
down_revision = '0005_signed_state'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "served_ranges",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("transfer_id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("start_byte", sa.BigInteger(), nullable=False),
        sa.Column("end_byte", sa.BigInteger(), nullable=False),
        sa.Column("served_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("start_byte >= 0 AND end_byte > start_byte",
                           name=op.f("ck_served_ranges_range")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_served_ranges_account_id_accounts")),
        sa.ForeignKeyConstraint(["transfer_id"], ["transfers.id"],
                                name=op.f("fk_served_ranges_transfer_id_transfers")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_served_ranges")),
    )
    op.create_index("ix_served_ranges_transfer_account", "served_ranges",
                    ["transfer_id", "account_id"])


def downgrade() -> None:
    op.drop_index("ix_served_ranges_transfer_account", table_name="served_ranges")
    op.drop_table("served_ranges")
