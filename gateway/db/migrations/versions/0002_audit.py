"""Audit log: entries, tree nodes and checkpoints, append-only by trigger.

Revision ID: 0002_audit
Revises: 0001_core

The triggers make the database itself refuse UPDATE and DELETE on the three audit
tables (and TRUNCATE on PostgreSQL, where it bypasses row triggers). Someone who can drop
a trigger can still rewrite rows; verification against signed and witnessed
checkpoints is what detects that.
"""

import sqlalchemy as sa
from alembic import op

revision = '0002_audit'
down_revision = '0001_core'
branch_labels = None
depends_on = None

AUDIT_TABLES = ("audit_entries", "audit_nodes", "audit_checkpoints")

# SQLite: INTEGER PRIMARY KEY is the rowid; PostgreSQL: 64-bit.
BigKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

PG_FUNCTION = """
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % refused: the audit log is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""


def _create_tables() -> None:
    op.create_table(
        "audit_entries",
        sa.Column("idx", BigKey, autoincrement=False, nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("leaf", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("idx", name=op.f("pk_audit_entries")),
    )
    op.create_index(op.f("ix_audit_entries_recorded_at"), "audit_entries", ["recorded_at"])
    op.create_table(
        "audit_nodes",
        sa.Column("pos", BigKey, autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("pos", name=op.f("pk_audit_nodes")),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints")),
    )


def _sqlite_triggers() -> None:
    for table in AUDIT_TABLES:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{action} on {table} refused: "
                "the audit log is append-only'); END")


def _postgresql_triggers() -> None:
    op.execute(PG_FUNCTION)
    for table in AUDIT_TABLES:
        op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                   "FOR EACH ROW EXECUTE FUNCTION audit_append_only()")
        op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()")


def upgrade() -> None:
    _create_tables()
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _sqlite_triggers()
    elif dialect == "postgresql":
        _postgresql_triggers()
    else:
        raise RuntimeError(f"no append-only triggers for database {dialect!r}")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in AUDIT_TABLES:
        if dialect == "sqlite":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_append_only()")
    op.drop_index(op.f("ix_audit_entries_recorded_at"), table_name="audit_entries")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_nodes")
    op.drop_table("audit_entries")
