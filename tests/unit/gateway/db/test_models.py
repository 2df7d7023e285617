"""The partial unique index on transfers: declared apart from its table, still in every DDL.

The models declare it in declare_partial_indexes() so that loading them imports no
dialect package (tests/unit/gateway/cli/test_startup.py holds that); these tests hold
that what turns the models into DDL still has it, as the migrations create it.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex

from gateway.db import make_engine, upgrade
from gateway.db.base import Base
from gateway.db.models import AVAILABLE_NAME_INDEX, Transfer, declare_partial_indexes


def _index_sql(engine: Engine) -> str:
    with engine.connect() as connection:
        sql = connection.execute(text("SELECT sql FROM sqlite_master WHERE name = :name"),
                                 {"name": AVAILABLE_NAME_INDEX}).scalar_one()
    assert isinstance(sql, str)
    return " ".join(sql.split())


def test_create_all_makes_the_partial_index_the_migrations_make(tmp_path: Path) -> None:
    created = create_engine(f"sqlite:///{tmp_path / 'created.db'}")
    migrated = make_engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    try:
        Base.metadata.create_all(created)
        upgrade(migrated)
        made = _index_sql(created)
        assert made.endswith("WHERE state = 'available'"), made
        assert made.replace('"', "") == _index_sql(migrated).replace('"', "")
    finally:
        created.dispose()
        migrated.dispose()


def test_the_index_is_declared_once_for_both_databases() -> None:
    declare_partial_indexes()
    declare_partial_indexes()
    [index] = [i for i in Transfer.__table__.indexes  # type: ignore[attr-defined]
               if i.name == AVAILABLE_NAME_INDEX]
    assert index.unique
    sql = str(CreateIndex(index).compile(dialect=postgresql.dialect()))
    assert sql.endswith("WHERE state = 'available'"), sql
