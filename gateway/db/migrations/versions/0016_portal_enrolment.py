"""Portal enrolment codes; sealed notification addresses, verified before use.

Revision ID: 0016_portal_enrolment
Revises: 0015_notifications

``portal_enrolments`` holds the one-time codes (as MACs) a partner user reads over SFTP to
register their first portal passkey. ``notification_subscriptions`` and
``notification_outbox`` gain a seal: the rows that decide where a message goes, and what
it says, are the gateway's own. Rows from before carry none and cannot be sealed here (the
state key is not the migration's), so they go: opt-ins were never verified and are made
again through the address check (``notification_verifications``); queued messages are
planned again in the next round.
"""

import sqlalchemy as sa
from alembic import op

revision = '0016_portal_enrolment'
down_revision = '0015_notifications'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "portal_enrolments",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=100), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("issued_at", sa.DateTime(), nullable=False),
        sa.Column("seal", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_portal_enrolments_account_id_accounts")),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_portal_enrolments")),
    )
    op.create_table(
        "notification_verifications",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("code_hash", sa.String(length=100), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_notification_verifications_account_id_accounts"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_notification_verifications")),
    )
    op.execute("DELETE FROM notification_subscriptions")
    op.execute("DELETE FROM notification_outbox WHERE sent_at IS NULL AND gave_up_at IS NULL")
    with op.batch_alter_table("notification_subscriptions") as batch:
        batch.add_column(sa.Column("seal", sa.String(length=100), nullable=True))
    with op.batch_alter_table("notification_outbox") as batch:
        batch.add_column(sa.Column("seal", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notification_outbox") as batch:
        batch.drop_column("seal")
    with op.batch_alter_table("notification_subscriptions") as batch:
        batch.drop_column("seal")
    op.drop_table("notification_verifications")
    op.drop_table("portal_enrolments")
