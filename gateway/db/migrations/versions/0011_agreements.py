"""Data-sharing agreements, and the data elements of every stored file.

Revision ID: 0011_agreements
Revises: 0010_authority_changes

A new sealed table (``gateway.integrity.SEALED_FIELDS``), and four nullable columns of
``transfers`` that are sealed as added fields: at NULL (every older file: "not recorded")
they are left out of the sealed message, so older seals stay valid.
"""

import sqlalchemy as sa
from alembic import op

revision = '0011_agreements'
down_revision = '0010_authority_changes'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agreements",
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("columns", sa.Text(), nullable=False),
        sa.Column("aliases", sa.Text(), nullable=False),
        sa.Column("max_records", sa.BigInteger(), nullable=True),
        sa.Column("allow_opaque", sa.Boolean(), nullable=False),
        sa.Column("change_id", sa.Integer(), nullable=False),
        sa.Column("approved_at", sa.DateTime(), nullable=False),
        sa.Column("seal", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"],
                                name=op.f("fk_agreements_partner_id_partners")),
        sa.ForeignKeyConstraint(["change_id"], ["authority_changes.id"],
                                name=op.f("fk_agreements_change_id_authority_changes")),
        sa.PrimaryKeyConstraint("partner_id", name=op.f("pk_agreements")),
    )
    with op.batch_alter_table("transfers") as batch:
        batch.add_column(sa.Column("data_format", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("data_elements", sa.Text(), nullable=True))
        batch.add_column(sa.Column("record_count", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("elements_source", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("transfers") as batch:
        batch.drop_column("elements_source")
        batch.drop_column("record_count")
        batch.drop_column("data_elements")
        batch.drop_column("data_format")
    op.drop_table("agreements")
