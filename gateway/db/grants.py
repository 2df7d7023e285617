"""Least privilege on PostgreSQL: what the application role may do to the schema.

The schema belongs to an owner role, which runs ``blindpost db upgrade``. The gateway
runs as an application role that may read and write the ordinary tables, only read and
append to the audit tables (no UPDATE, DELETE or TRUNCATE: the triggers already refuse
them, and without the privilege a stolen application password cannot even try), and
cannot create, alter or drop anything: it owns nothing, so it cannot drop the
append-only triggers either. ``blindpost db grant`` prints or applies these statements;
they are idempotent, and are re-run after an upgrade that adds tables.
"""

from __future__ import annotations

import re

from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from gateway.audit.models import AuditCheckpoint, AuditCosignature, AuditEntry, AuditNode
from gateway.errors import DatabaseError, UsageError

APPEND_ONLY_TABLES = tuple(sorted(str(model.__tablename__)
                                  for model in (AuditEntry, AuditNode, AuditCheckpoint,
                                                AuditCosignature)))
READ_ONLY_TABLES = ("alembic_version",)
_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def grant_statements(engine: Engine, role: str) -> list[str]:
    """The statements that give ``role`` exactly the application's privileges."""
    if engine.dialect.name != "postgresql":
        raise UsageError("`db grant` is for PostgreSQL; SQLite has no roles")
    if not _ROLE.fullmatch(role):
        raise UsageError(f"invalid role name {role!r}: lower-case letters, digits and "
                         "underscores, starting with a letter or underscore")
    quote = engine.dialect.identifier_preparer.quote
    try:
        inspector = inspect(engine)
        schema = str(inspector.default_schema_name)
        tables = sorted(inspector.get_table_names())
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot read the schema: {exc}") from exc
    missing = set(APPEND_ONLY_TABLES) - set(tables)
    if missing:
        raise DatabaseError("the schema is not set up yet: run `blindpost db upgrade` "
                            "as the owner role first")
    writable = [t for t in tables if t not in APPEND_ONLY_TABLES + READ_ONLY_TABLES]
    grantee, database = quote(role), quote(str(engine.url.database))

    def listed(names: list[str] | tuple[str, ...]) -> str:
        return ", ".join(f"{quote(schema)}.{quote(name)}" for name in names)

    return [
        # PostgreSQL before 15 lets every role create objects in the public schema.
        f"REVOKE CREATE ON SCHEMA {quote(schema)} FROM PUBLIC",
        f"GRANT CONNECT ON DATABASE {database} TO {grantee}",
        f"GRANT USAGE ON SCHEMA {quote(schema)} TO {grantee}",
        # Start from nothing, so that re-running also takes back anything granted by hand.
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {quote(schema)} FROM {grantee}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {listed(writable)} TO {grantee}",
        f"GRANT SELECT, INSERT ON {listed(APPEND_ONLY_TABLES)} TO {grantee}",
        f"GRANT SELECT ON {listed([t for t in READ_ONLY_TABLES if t in tables])} TO {grantee}",
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {quote(schema)} TO {grantee}",
    ]


def apply_grants(engine: Engine, role: str) -> list[str]:
    """Apply :func:`grant_statements` in one transaction; refuse an owner or superuser."""
    statements = grant_statements(engine, role)
    try:
        with engine.begin() as connection:
            superuser = connection.execute(text(
                "SELECT rolsuper FROM pg_roles WHERE rolname = :role"), {"role": role}).first()
            if superuser is None:
                raise UsageError(f"role {role!r} does not exist; create it first "
                                 f"(CREATE ROLE {role} LOGIN PASSWORD '…')")
            owner = connection.execute(text(
                "SELECT pg_has_role(:role, tableowner, 'MEMBER') FROM pg_tables "
                "WHERE schemaname = current_schema() AND tablename = :table"),
                {"role": role, "table": APPEND_ONLY_TABLES[0]}).scalar()
            if superuser.rolsuper or owner:
                raise UsageError(f"role {role!r} is a superuser or owns the schema; the "
                                 "application role must be a separate, ordinary role")
            for statement in statements:
                connection.execute(text(statement))
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot apply the grants: {exc}") from exc
    return statements
