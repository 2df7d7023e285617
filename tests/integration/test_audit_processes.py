"""Two processes appending to one SQLite audit log at once: gap-free, and it verifies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.audit import AuditTag, generate_signing_key_file, load_signer, verify_database
from gateway.audit.events import decode_leaf
from gateway.db import make_engine, make_sessionmaker, upgrade

pytestmark = pytest.mark.integration

ORIGIN = "registry.example/blindpost"
PER_PROCESS = 150

WRITER = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from gateway.actors import Actor, ActorKind
from gateway.audit import AuditLog, AuditTag, load_signer
from gateway.db import make_engine, make_sessionmaker

database, key, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
sessions = make_sessionmaker(make_engine(database))
log = AuditLog(signer=load_signer(key, name=ORIGIN), clock=lambda: datetime.now(UTC),
               checkpoint_every=7)
for number in range(PER_PROCESS):
    with sessions.begin() as session:
        log.record(session, tag=AuditTag.UPLOAD_COMPLETE, actor=Actor(ActorKind.ACCOUNT, name),
                   subject=f"file:{number}")
""".replace("ORIGIN", repr(ORIGIN)).replace("PER_PROCESS", str(PER_PROCESS))


def test_two_processes_append_without_gaps(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'blindpost.db'}"
    key = tmp_path / "audit_ed25519"
    generate_signing_key_file(key)
    engine = make_engine(database)
    upgrade(engine)
    root = Path(__file__).resolve().parents[2]
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, database, str(key), name],
                                cwd=root, stderr=subprocess.PIPE, text=True)
               for name in ("writer-a", "writer-b")]
    for writer in writers:
        _, errors = writer.communicate(timeout=120)
        assert writer.returncode == 0, errors
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        report = verify_database(session, verifier=load_signer(key, name=ORIGIN).verifier)
        rows = session.execute(text("SELECT leaf FROM audit_entries ORDER BY idx")).scalars().all()
    events = [decode_leaf(leaf.encode()) for leaf in rows]
    assert report.size == len(events)
    uploads = [event for event in events if event.tag == AuditTag.UPLOAD_COMPLETE]
    for name in ("writer-a", "writer-b"):
        assert [e.subject for e in uploads if e.actor == name] == [
            f"file:{number}" for number in range(PER_PROCESS)]
    engine.dispose()
