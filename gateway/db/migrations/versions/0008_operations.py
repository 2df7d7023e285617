"""Everyday operations: machine accounts, source allow-lists, self-enrolment, shared keys,
the source back-off's last failure, and the refused second factors of a console sign-in.

Revision ID: 0008_operations
Revises: 0007_console

The new granting columns start at the value every existing row implicitly had (not a
machine, any source, enrolled, not shared); seals leave a field at that value out of
what they cover (``gateway.integrity.ADDED_FIELDS``), so existing seals stay valid.
"""

import sqlalchemy as sa
from alembic import op

revision = '0008_operations'
down_revision = '0007_console'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("machine", sa.Boolean(), nullable=False,
                                        server_default=sa.false()))
    op.add_column("accounts", sa.Column("allow_from", sa.Text(), nullable=True))
    op.add_column("ssh_keys", sa.Column("shared", sa.Boolean(), nullable=False,
                                        server_default=sa.false()))
    op.add_column("totp_secrets", sa.Column("enrol_until", sa.DateTime(), nullable=True))
    op.add_column("auth_throttle", sa.Column("last_failure", sa.DateTime(), nullable=True))
    op.add_column("console_sessions", sa.Column("factor_failures", sa.Integer(),
                                                nullable=False, server_default="0"))
    op.add_column("console_sessions", sa.Column("counted", sa.Boolean(), nullable=False,
                                                server_default=sa.false()))
    op.create_table(
        "machine_grants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("allow_from", sa.Text(), nullable=False),
        sa.Column("state", sa.Enum("proposed", "approved", "superseded", name="grant_state",
                                   native_enum=False, create_constraint=True, length=16),
                  nullable=False),
        sa.Column("proposed_by", sa.Integer(), nullable=False),
        sa.Column("proposed_at", sa.DateTime(), nullable=False),
        sa.Column("approved_by", sa.Integer(), nullable=True),
        sa.Column("approved_at", sa.DateTime(), nullable=True),
        sa.Column("seal", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_machine_grants_account_id_accounts")),
        sa.ForeignKeyConstraint(["proposed_by"], ["accounts.id"],
                                name=op.f("fk_machine_grants_proposed_by_accounts")),
        sa.ForeignKeyConstraint(["approved_by"], ["accounts.id"],
                                name=op.f("fk_machine_grants_approved_by_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machine_grants")),
    )
    op.create_index(op.f("ix_machine_grants_account_id"), "machine_grants", ["account_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_machine_grants_account_id"), table_name="machine_grants")
    op.drop_table("machine_grants")
    with op.batch_alter_table("console_sessions") as batch:
        batch.drop_column("counted")
        batch.drop_column("factor_failures")
    op.drop_column("auth_throttle", "last_failure")
    op.drop_column("totp_secrets", "enrol_until")
    with op.batch_alter_table("ssh_keys") as batch:
        batch.drop_column("shared")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("allow_from")
        batch.drop_column("machine")
