"""Alembic environment: migrations run on the engine the gateway hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from gateway.db.base import Base
from gateway.db.models import declare_partial_indexes

engine = context.config.attributes.get("engine")
if not isinstance(engine, Engine):  # pragma: no cover - only when run outside the gateway.
    raise RuntimeError("run migrations through `blindpost db upgrade`")

# Compared with what autogenerate reflects, so a revision written from it keeps them.
declare_partial_indexes()
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
