"""The audit log on a real PostgreSQL: it verifies, and triggers refuse every rewrite.

Uses the suite's private PostgreSQL server (``postgres_url`` in ``tests/conftest.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from gateway.audit import AuditLog, VerificationError, reading, verify_database, verify_from
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


def test_postgres_verifies_in_batches_and_from_a_verified_state(
        pg_engine: Engine, tmp_path: Path, clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver-level reading (paged by key, the time column rendered by PostgreSQL)
    and incremental verification, on the real server."""
    sessions = make_sessionmaker(pg_engine)
    log = AuditLog(signer=make_signer(tmp_path), clock=clock, checkpoint_every=4)
    fill(log, sessions, 9)
    monkeypatch.setattr(reading, "BATCH", 4)
    times: list[datetime] = []
    with snapshot(pg_engine) as session:
        first = verify_database(session, verifier=log.verifier,
                                reader=lambda _i, moment, _t, _l: times.append(moment))
    assert times == sorted(times) and len(times) == first.size
    fill(log, sessions, 5)
    with snapshot(pg_engine) as session:
        report = verify_from(session, trusted=first.state, verifier=log.verifier)
        assert (report.start, report.root) == (
            first.size, verify_database(session, verifier=log.verifier).root)
    with pg_engine.begin() as connection:
        connection.execute(text("ALTER TABLE audit_entries DISABLE TRIGGER USER"))
        connection.execute(text("UPDATE audit_entries SET recorded_at = recorded_at "
                                "+ interval '1 microsecond' WHERE idx = 2"))
    with snapshot(pg_engine) as session, pytest.raises(
            VerificationError, match="entry 2: its tag or time column differs"):
        verify_database(session, verifier=log.verifier)
