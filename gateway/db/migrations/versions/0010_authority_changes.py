"""Authority changes: creating admins, resetting their credentials, adding their keys,
enabling them and making admin tokens wait for a second admin's approval.

Revision ID: 0010_authority_changes
Revises: 0009_audit_cosignatures

A new table, sealed like every granting row (``gateway.integrity.SEALED_FIELDS``).
"""

import sqlalchemy as sa
from alembic import op

revision = '0010_authority_changes'
down_revision = '0009_audit_cosignatures'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "authority_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("state", sa.Enum("proposed", "approved", "withdrawn", "superseded",
                                   name="change_state", native_enum=False,
                                   create_constraint=True, length=16),
                  nullable=False),
        sa.Column("proposed_by", sa.Integer(), nullable=False),
        sa.Column("proposed_at", sa.DateTime(), nullable=False),
        sa.Column("approved_by", sa.Integer(), nullable=True),
        sa.Column("approved_at", sa.DateTime(), nullable=True),
        sa.Column("withdrawn_by", sa.String(length=200), nullable=True),
        sa.Column("withdrawn_at", sa.DateTime(), nullable=True),
        sa.Column("seal", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(["proposed_by"], ["accounts.id"],
                                name=op.f("fk_authority_changes_proposed_by_accounts")),
        sa.ForeignKeyConstraint(["approved_by"], ["accounts.id"],
                                name=op.f("fk_authority_changes_approved_by_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_authority_changes")),
    )
    op.create_index(op.f("ix_authority_changes_target"), "authority_changes", ["target"])


def downgrade() -> None:
    op.drop_index(op.f("ix_authority_changes_target"), table_name="authority_changes")
    op.drop_table("authority_changes")
