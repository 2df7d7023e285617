"""The audit log on a real PostgreSQL: it verifies, and triggers refuse every rewrite.

Uses the suite's private PostgreSQL server (``postgres_url`` in ``tests/conftest.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from gateway.audit import AuditLog, verify_database
from gateway.db import make_engine, make_sessionmaker, upgrade
from gateway.db.engine import snapshot
from tests.conftest import FakeClock
from tests.unit.audit.audit_support import fill, make_signer

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("statement", [
    "UPDATE audit_entries SET tag = 'x'", "DELETE FROM audit_entries", "TRUNCATE audit_entries",
    "UPDATE audit_nodes SET hash = ''", "DELETE FROM audit_nodes", "TRUNCATE audit_nodes",
    "UPDATE audit_checkpoints SET size = 0", "DELETE FROM audit_checkpoints",
    "TRUNCATE audit_checkpoints",
])
def test_postgres_refuses_rewrites(pg_engine: Engine, tmp_path: Path, clock: FakeClock,
                                   statement: str) -> None:
    sessions = make_sessionmaker(pg_engine)
    log = AuditLog(signer=make_signer(tmp_path), clock=clock, checkpoint_every=4)
    fill(log, sessions, 3)
    with pytest.raises(Exception, match="append-only"), sessions.begin() as session:
        session.execute(text(statement))
    with snapshot(pg_engine) as session:
        assert verify_database(session, verifier=log.verifier).size == 4
