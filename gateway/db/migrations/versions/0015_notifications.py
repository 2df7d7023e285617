"""Notifications: opt-in addresses, the outbox and the planner's cursor.

Revision ID: 0015_notifications
Revises: 0012_portal_identities

Three tables of gateway.notify.models; none grants anything, so none is sealed.
"""

import sqlalchemy as sa
from alembic import op

revision = '0015_notifications'
down_revision = '0012_portal_identities'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_subscriptions",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_notification_subscriptions_account_id_accounts"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_notification_subscriptions")),
    )
    op.create_table(
        "notification_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("topic", sa.String(length=100), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_until", sa.DateTime(), nullable=True),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("gave_up_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_notification_outbox_account_id_accounts"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_outbox")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_notification_outbox_due", "notification_outbox",
                    ["sent_at", "next_attempt_at"])
    op.create_index("ix_notification_outbox_recipient", "notification_outbox",
                    ["channel", "account_id"])
    op.create_table(
        "notification_cursor",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("planned_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_notification_cursor")),
    )


def downgrade() -> None:
    op.drop_table("notification_cursor")
    op.drop_index("ix_notification_outbox_recipient", table_name="notification_outbox")
    op.drop_index("ix_notification_outbox_due", table_name="notification_outbox")
    op.drop_table("notification_outbox")
    op.drop_table("notification_subscriptions")
