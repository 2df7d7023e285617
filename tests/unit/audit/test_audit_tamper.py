"""Every form of tampering is detected, and named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit import AuditLog, VerificationError, verify_database, verify_export
from gateway.audit.note import Checkpoint
from tests.conftest import FakeClock
from tests.unit.audit.audit_support import fill, make_signer, named

TABLES = ("audit_entries", "audit_nodes", "audit_checkpoints")


def drop_triggers(session: Session) -> None:
    """What an attacker with the database file does first."""
    for table in TABLES:
        for action in ("update", "delete"):
            session.execute(text(f"DROP TRIGGER {table}_no_{action}"))


def findings(log: AuditLog, sessions: sessionmaker[Session],
             outside: list[tuple[str, str]] | None = None) -> str:
    with sessions.begin() as session, pytest.raises(VerificationError) as caught:
        verify_database(session, verifier=log.verifier, outside=outside or [])
    return caught.value.diagnostics()


def change_row(session: Session, index: int, old: str, new: str) -> None:
    session.execute(text("UPDATE audit_entries SET leaf = replace(leaf, :old, :new) "
                         "WHERE idx = :index"), {"old": old, "new": new, "index": index})


@pytest.fixture
def filled(log: AuditLog, sessions: sessionmaker[Session]) -> AuditLog:
    fill(log, sessions, 20)  # 20 events and 5 checkpoint entries: 25 entries.
    with sessions.begin() as session:
        verify_database(session, verifier=log.verifier)
        drop_triggers(session)
    return log


def test_a_changed_row(filled: AuditLog, sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        change_row(session, 9, '"bytes":1007', '"bytes":9999')
    report = findings(filled, sessions)
    assert "entry 9: its leaf hash differs from the one stored when it was appended" in report
    assert "stored checkpoint #3 (size 11): its root does not match" in report
    assert "entries in [6, 11)" in report


def test_a_changed_row_with_its_tree_nodes_rewritten(filled: AuditLog,
                                                     sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        change_row(session, 9, '"bytes":1007', '"bytes":9999')
        session.execute(text("DELETE FROM audit_nodes"))
        leaves = [row[0].encode() for row in
                  session.execute(text("SELECT leaf FROM audit_entries ORDER BY idx"))]
        _store_tree(session, leaves)
    report = findings(filled, sessions)
    assert "leaf hash differs" not in report
    assert "stored checkpoint #3 (size 11): its root does not match" in report


def _store_tree(session: Session, leaves: list[bytes]) -> None:
    from gateway.audit import merkle

    tree = merkle.MemoryTree(leaves)
    for (level, index), hashed in tree.nodes.items():
        session.execute(text("INSERT INTO audit_nodes (pos, hash) VALUES (:p, :h)"),
                        {"p": merkle.node_position(level, index), "h": hashed})


def test_a_deleted_row(filled: AuditLog, sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        session.execute(text("DELETE FROM audit_entries WHERE idx = 12"))
    report = findings(filled, sessions)
    assert "entries 12 to 12 are missing; they were deleted" in report
    assert "stored checkpoint #4 (size 16): its root does not match" in report


def test_a_row_inserted_in_the_middle(filled: AuditLog,
                                      sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        for index in range(24, 4, -1):
            session.execute(text("UPDATE audit_entries SET idx = idx + 1 WHERE idx = :i"),
                            {"i": index})
        session.execute(text(
            "INSERT INTO audit_entries (idx, recorded_at, tag, leaf) SELECT 5, recorded_at, "
            "tag, replace(leaf, :old, :new) FROM audit_entries WHERE idx = 4"),
            {"old": '"index":4', "new": '"index":5'})
    report = findings(filled, sessions)
    assert "entry 5: its leaf hash differs" in report
    assert "entry 6: its leaf declares index 5" in report


def test_a_leaf_declaring_an_enormous_index(filled: AuditLog,
                                            sessions: sessionmaker[Session]) -> None:
    """Python refuses to read an integer of over 4,300 digits: such an index is a finding,
    not a crash of the verifier."""
    huge = "9" * 5000
    with sessions.begin() as session:
        change_row(session, 7, '"index":7', f'"index":{huge}')
    report = findings(filled, sessions)
    assert "entry 7: its leaf hash differs" in report
    assert "entry 7: its leaf declares index 999999" in report
    assert huge not in report  # the finding names the index without repeating 5,000 digits


def test_two_rows_swapped(filled: AuditLog, sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        session.execute(text("UPDATE audit_entries SET idx = -1 WHERE idx = 3"))
        session.execute(text("UPDATE audit_entries SET idx = 3 WHERE idx = 4"))
        session.execute(text("UPDATE audit_entries SET idx = 4 WHERE idx = -1"))
    report = findings(filled, sessions)
    assert "entry 3: its leaf declares index 4" in report
    assert "entry 4: its leaf declares index 3" in report
    assert "stored checkpoint #2 (size 6): its root does not match" in report


def forge_history(sessions: sessionmaker[Session], log: AuditLog, clock: FakeClock,
                  *, keep_checkpoints: bool) -> None:
    """Empty the tables and write a consistent history with the real signing key."""
    with sessions.begin() as session:
        session.execute(text("DELETE FROM audit_entries"))
        session.execute(text("DELETE FROM audit_nodes"))
        if not keep_checkpoints:
            session.execute(text("DELETE FROM audit_checkpoints"))
    forger = AuditLog(signer=log._signer, clock=clock, checkpoint_every=4)
    for number in range(20):
        with sessions.begin() as session:
            forger.record(session, tag="file:download:complete",  # type: ignore[arg-type]
                          actor=named("partner-a" if number != 7 else "someone-else"),
                          subject=f"file:{number}", details={"bytes": 1000 + number,
                                                             "source": "192.0.2.7"})


def test_forged_history_against_stored_checkpoints(filled: AuditLog, clock: FakeClock,
                                                   sessions: sessionmaker[Session]) -> None:
    forge_history(sessions, filled, clock, keep_checkpoints=True)
    report = findings(filled, sessions)
    assert "stored checkpoint #2 (size 6): its root does not match" in report


def test_forged_history_resigned_is_caught_by_a_witness(filled: AuditLog, clock: FakeClock,
                                                        sessions: sessionmaker[Session],
                                                        tmp_path: Path) -> None:
    with sessions.begin() as session:
        witnessed = filled.checkpoint(session).note
    forge_history(sessions, filled, clock, keep_checkpoints=False)
    with sessions.begin() as session:
        verify_database(session, verifier=filled.verifier)  # Consistent on its own...
    report = findings(filled, sessions, [("witness.txt", witnessed)])
    assert "outside checkpoint witness.txt (size 25): its root does not match" in report
    assert "entries in [0, 25)" in report


def test_a_checkpoint_signed_with_another_key(filled: AuditLog, tmp_path: Path,
                                              sessions: sessionmaker[Session]) -> None:
    impostor = make_signer(tmp_path / "impostor")
    with sessions.begin() as session:
        root = filled.root(session, 25)
        session.execute(text("INSERT INTO audit_checkpoints (size, root, created_at, note) "
                             "VALUES (25, :r, '2026-11-02 10:00:00', :n)"),
                        {"r": root, "n": impostor.sign(Checkpoint(impostor.name, 25, root)
                                                       .text())})
    report = findings(filled, sessions)
    assert "stored checkpoint #6 (size 25): not a valid checkpoint" in report


def test_a_checkpoint_with_a_rolled_back_size(filled: AuditLog,
                                              sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        root = filled.root(session, 3)
        note = filled._signer.sign(Checkpoint(filled.origin, 3, root).text())
        session.execute(text("INSERT INTO audit_checkpoints (size, root, created_at, note) "
                             "VALUES (3, :r, '2026-11-02 10:00:00', :n)"),
                        {"r": root, "n": note})
    report = findings(filled, sessions)
    assert ("stored checkpoint #6 (size 3): its size is smaller than that of the earlier "
            "checkpoint #5 (size 21): a rolled-back checkpoint") in report


def test_a_log_rolled_back_behind_a_witness(filled: AuditLog, clock: FakeClock,
                                            sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        witnessed = filled.checkpoint(session).note
        session.execute(text("DELETE FROM audit_entries WHERE idx >= 20"))
        session.execute(text("DELETE FROM audit_nodes WHERE pos >= 38"))
        session.execute(text("DELETE FROM audit_checkpoints WHERE size > 20"))
    report = findings(filled, sessions, [("w.txt", witnessed)])
    assert ("outside checkpoint w.txt (size 25): it covers 25 entries but the log holds "
            "only 20") in report


def test_a_column_changed_without_the_leaf(filled: AuditLog,
                                           sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        session.execute(text("UPDATE audit_entries SET tag = 'auth:login:success' "
                             "WHERE idx = 2"))
    assert "entry 2: its tag or time column differs from its leaf" in findings(filled, sessions)


def test_checkpoints_removed(filled: AuditLog, sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        session.execute(text("DELETE FROM audit_checkpoints"))
    assert "no stored checkpoint" in findings(filled, sessions)


def export_lines(log: AuditLog, sessions: sessionmaker[Session]) -> list[bytes]:
    with sessions.begin() as session:
        return [event.leaf + b"\n" for event in log.events(session)]


def test_offline_export_verification(log: AuditLog, sessions: sessionmaker[Session]) -> None:
    fill(log, sessions, 10)
    with sessions.begin() as session:
        note = log.checkpoint(session).note
    lines = export_lines(log, sessions)
    report = verify_export(lines, verifier=log.verifier, outside=[("cp", note)])
    assert report.size == len(lines)
    forged = list(lines)
    forged[4] = forged[4].replace(b'"bytes":1003', b'"bytes":1')
    with pytest.raises(VerificationError, match=r"entries in \[0, 13\)"):
        verify_export(forged, verifier=log.verifier, outside=[("cp", note)])
    with pytest.raises(VerificationError, match="covers 13 entries but the log holds only 12"):
        verify_export(lines[:-2], verifier=log.verifier, outside=[("cp", note)])
    with pytest.raises(VerificationError, match="entry 3: its leaf declares index 4"):
        verify_export([*lines[:3], *lines[4:]], verifier=log.verifier, outside=[("cp", note)])
