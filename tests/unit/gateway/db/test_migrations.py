"""Migrations that move data: partner retention from whole days to seconds, and back."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import Engine, text

from gateway.db import make_engine
from gateway.db.engine import _alembic_config

PARTNER = ("INSERT INTO partners (slug, name, retention_days, max_downloads, disabled, "
           "created_at) VALUES (:slug, :slug, :days, NULL, false, '2026-11-02 09:00:00')")


def check_retention_migration(engine: Engine) -> None:
    """Upgrade a database holding day retentions, check the seconds, and go back."""
    config = _alembic_config(engine)
    command.upgrade(config, "0003_pending_objects")
    with engine.begin() as connection:
        for slug, days in (("uni", 7), ("lab", 30)):
            connection.execute(text(PARTNER), {"slug": slug, "days": days})
    command.upgrade(config, "0004_retention_seconds")
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT slug, retention_seconds FROM partners "
                                       "ORDER BY slug")).all()
    assert [tuple(row) for row in rows] == [("lab", 30 * 86400), ("uni", 7 * 86400)]
    with engine.begin() as connection:
        connection.execute(text("UPDATE partners SET retention_seconds = 900 "
                                "WHERE slug = 'uni'"))
    command.downgrade(config, "0003_pending_objects")
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT slug, retention_days FROM partners "
                                       "ORDER BY slug")).all()
    # Fifteen minutes become a whole day: never less than the partner asked for.
    assert [tuple(row) for row in rows] == [("lab", 30), ("uni", 1)]


def test_retention_days_become_seconds(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        check_retention_migration(engine)
    finally:
        engine.dispose()
