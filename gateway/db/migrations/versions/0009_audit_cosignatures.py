"""Witness cosignatures of audit checkpoints, append-only like the rest of the log.

Revision ID: 0009_audit_cosignatures
Revises: 0008_operations

Each row is one witness's cosignature (c2sp.org/tlog-cosignature) on one stored
checkpoint, verified before it was stored. The triggers are those of ``0002_audit``:
the database refuses UPDATE and DELETE (and TRUNCATE on PostgreSQL).
"""

import sqlalchemy as sa
from alembic import op

revision = '0009_audit_cosignatures'
down_revision = '0008_operations'
branch_labels = None
depends_on = None

TABLE = "audit_cosignatures"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("checkpoint_id", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("witness", sa.String(length=200), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_cosignatures")),
    )
    op.create_index("ix_audit_cosignatures_checkpoint_id", TABLE, ["checkpoint_id"])
    op.create_index("ix_audit_cosignatures_witness_size", TABLE, ["witness", "size"])
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER {TABLE}_no_{action.lower()} BEFORE {action} ON "
                       f"{TABLE} BEGIN SELECT RAISE(ABORT, '{action} on {TABLE} refused: "
                       "the audit log is append-only'); END")
    elif dialect == "postgresql":
        # audit_append_only() comes from 0002_audit.
        op.execute(f"CREATE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE} "
                   "FOR EACH ROW EXECUTE FUNCTION audit_append_only()")
        op.execute(f"CREATE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()")
    else:
        raise RuntimeError(f"no append-only triggers for database {dialect!r}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"DROP TRIGGER IF EXISTS {TABLE}_no_update")
        op.execute(f"DROP TRIGGER IF EXISTS {TABLE}_no_delete")
    else:
        op.execute(f"DROP TRIGGER IF EXISTS {TABLE}_append_only ON {TABLE}")
        op.execute(f"DROP TRIGGER IF EXISTS {TABLE}_no_truncate ON {TABLE}")
    op.drop_index("ix_audit_cosignatures_witness_size", table_name=TABLE)
    op.drop_index("ix_audit_cosignatures_checkpoint_id", table_name=TABLE)
    op.drop_table(TABLE)
