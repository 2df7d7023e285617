"""Partner portal: each partner user's age identity, wrapped by their passkey.

Revision ID: 0012_portal_identities
Revises: 0011_agreements
"""

import sqlalchemy as sa
from alembic import op

revision = '0012_portal_identities'
down_revision = '0011_agreements'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('portal_identities',
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('credential', sa.String(length=2000), nullable=False),
    sa.Column('wrapped', sa.Text(), nullable=False),
    sa.Column('recipient', sa.Text(), nullable=False),
    sa.Column('fingerprint', sa.String(length=100), nullable=False),
    sa.Column('stored_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_portal_identities_account_id_accounts')),
    sa.PrimaryKeyConstraint('account_id', name=op.f('pk_portal_identities'))
    )


def downgrade() -> None:
    op.drop_table('portal_identities')
