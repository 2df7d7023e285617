"""Pending store objects (the orphan sweep without listing the store) and setting values.

Revision ID: 0003_pending_objects
Revises: 0002_audit
"""

import sqlalchemy as sa
from alembic import op

revision = '0003_pending_objects'
down_revision = '0002_audit'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_objects",
        sa.Column("object_id", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("touched_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("object_id", name=op.f("pk_pending_objects")),
    )
    op.create_index(op.f("ix_pending_objects_touched_at"), "pending_objects", ["touched_at"])
    op.create_table(
        "setting_values",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_setting_values")),
    )


def downgrade() -> None:
    op.drop_table("setting_values")
    op.drop_index(op.f("ix_pending_objects_touched_at"), table_name="pending_objects")
    op.drop_table("pending_objects")
