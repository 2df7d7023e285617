"""The audit log service: recording, checkpoints, proofs, reading, SIEM copy."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit import (
    AuditError,
    AuditLog,
    AuditTag,
    merkle,
    verify_database,
    verify_tlog_proof,
)
from gateway.audit.models import AuditCheckpoint
from tests.conftest import FakeClock
from tests.unit.audit.audit_support import ORIGIN, fill, named


def test_indices_are_gap_free_and_leaves_canonical(log: AuditLog,
                                                   sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        first = log.record(session, tag=AuditTag.LOGIN_SUCCESS, actor=named("alice"),
                           subject="account:alice", details={"source": "192.0.2.1"})
        second = log.record(session, tag=AuditTag.LOGIN_FAILURE, actor=named("bob"),
                            subject="account:bob")
    assert (first, second) == (0, 2)  # Index 1 is the first checkpoint's own entry.
    with sessions.begin() as session:
        events = list(log.events(session))
    assert [event.index for event in events] == [0, 1, 2]
    assert events[0].leaf == (b'{"actor":"alice","details":{"source":"192.0.2.1"},"index":0,'
                              b'"subject":"account:alice","tag":"auth:login:success",'
                              b'"time":"2026-11-02T09:00:00.000000Z","v":1}')
    assert events[1].tag == AuditTag.AUDIT_CHECKPOINT


def test_an_event_rolls_back_with_its_transaction(log: AuditLog,
                                                  sessions: sessionmaker[Session],
                                                  jsonl: Path) -> None:
    fill(log, sessions, 1)
    def failing_change() -> None:
        with sessions.begin() as session:
            log.record(session, tag=AuditTag.KEY_PROPOSE, actor=named("alice"), subject="key:1")
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        failing_change()
    with sessions.begin() as session:
        assert log.size(session) == 2
        verify_database(session, verifier=log.verifier)
    assert [json.loads(line)["index"] for line in jsonl.read_text().splitlines()] == [0, 1]


def test_siem_copy_is_written_after_commit_and_private(log: AuditLog,
                                                       sessions: sessionmaker[Session],
                                                       jsonl: Path) -> None:
    with sessions.begin() as session:
        log.record(session, tag=AuditTag.FILE_PURGE, actor=named("system:purger"), subject="file:9")
        assert not jsonl.exists()
    assert stat.S_IMODE(jsonl.stat().st_mode) == 0o600
    lines = jsonl.read_bytes().splitlines()
    with sessions.begin() as session:
        assert lines == [event.leaf for event in log.events(session)]


@pytest.mark.parametrize(("details", "message"), [
    ({"blob": b"raw"}, "not allowed"),
    ({"nested": {"a": 1}}, "not allowed"),
    ({"text": "x" * 2000}, "longer than"),
    ({"nan": float("nan")}, "finite"),
    ({"": 1}, "detail name"),
])
def test_details_hold_plain_values_only(log: AuditLog, sessions: sessionmaker[Session],
                                        details: dict[str, object], message: str) -> None:
    with pytest.raises(AuditError, match=message), sessions.begin() as session:
        log.record(session, tag=AuditTag.SETTING_CHANGE, actor=named("alice"), subject="setting:x",
                   details=details)


def test_unknown_tags_and_empty_actors_are_refused(log: AuditLog,
                                                   sessions: sessionmaker[Session]) -> None:
    with pytest.raises(ValueError, match="not a valid AuditTag"), sessions.begin() as session:
        log.record(session, tag="file:eaten", actor=named("alice"), subject="x")  # type: ignore[arg-type]
    with pytest.raises(AuditError, match="actor"), sessions.begin() as session:
        log.record(session, tag=AuditTag.FILE_PURGE, actor=named(""), subject="x")


def checkpoint_sizes(sessions: sessionmaker[Session]) -> list[int]:
    with sessions.begin() as session:
        return list(session.scalars(select(AuditCheckpoint.size).order_by(AuditCheckpoint.id)))


def test_checkpoint_every_n_entries(log: AuditLog, sessions: sessionmaker[Session]) -> None:
    fill(log, sessions, 12)
    # Size 1 at the first event; then once 4 entries follow a checkpoint's own entry.
    assert checkpoint_sizes(sessions) == [1, 6, 11]
    with sessions.begin() as session:
        assert log.size(session) == 15


def test_checkpoint_after_t_seconds(signer, clock: FakeClock,  # type: ignore[no-untyped-def]
                                    sessions: sessionmaker[Session]) -> None:
    log = AuditLog(signer=signer, clock=clock, checkpoint_every=1000, checkpoint_seconds=60)
    fill(log, sessions, 3, clock=clock)
    assert checkpoint_sizes(sessions) == [1]
    clock.advance(seconds=60)
    with sessions.begin() as session:
        assert log.checkpoint_if_due(session) is not None
        assert log.checkpoint_if_due(session) is None
    clock.advance(seconds=600)
    with sessions.begin() as session:
        assert log.checkpoint_if_due(session) is None  # Idle: nothing new to cover.
    assert checkpoint_sizes(sessions) == [1, 4]


def test_forced_checkpoint_is_reused_when_nothing_changed(log: AuditLog,
                                                          sessions: sessionmaker[Session]) -> None:
    fill(log, sessions, 2)
    with sessions.begin() as session:
        first = log.checkpoint(session)
    with sessions.begin() as session:
        again = log.checkpoint(session)
    assert first == again and first.checkpoint.size == 3
    assert first.note.startswith(f"{ORIGIN}\n3\n")


def test_proofs_from_the_stored_tree(log: AuditLog, sessions: sessionmaker[Session]) -> None:
    fill(log, sessions, 20)
    with sessions.begin() as session:
        size = log.size(session)
        leaves = [event.leaf for event in log.events(session)]
        reference = merkle.MemoryTree(leaves)
        for probe in (1, 7, 16, size):
            assert log.root(session, probe) == merkle.root_hash(probe, reference)
        root = log.root(session, size)
        for index in range(size):
            merkle.verify_inclusion(index=index, size=size,
                                    hashed_leaf=merkle.leaf_hash(leaves[index]),
                                    proof=log.inclusion_proof(session, index, size), root=root)
        for old in range(1, size):
            merkle.verify_consistency(size1=old, size2=size, root1=log.root(session, old),
                                      root2=root,
                                      proof=log.consistency_proof(session, old, size))
        with pytest.raises(AuditError, match="no tree of size"):
            log.root(session, size + 1)


def test_prove_signs_a_new_checkpoint_when_needed(log: AuditLog,
                                                  sessions: sessionmaker[Session]) -> None:
    fill(log, sessions, 3)
    with sessions.begin() as session:
        latest = log.latest_checkpoint(session)
        assert latest is not None and latest.checkpoint.size == 1
        proof = log.prove(session, 3)
    checkpoint, leaf = verify_tlog_proof(proof, log.verifier)
    assert checkpoint.size == 4 and json.loads(leaf)["index"] == 3
    with pytest.raises(AuditError, match="no audit entry"), sessions.begin() as session:
        log.prove(session, 99)


def test_prove_covers_the_entry_recording_the_latest_checkpoint(
        log: AuditLog, sessions: sessionmaker[Session]) -> None:
    """That entry alone calls for no new checkpoint (an idle log would grow forever), yet
    its proof needs one that covers it (schemathesis found the 500 this was)."""
    fill(log, sessions, 3)
    with sessions.begin() as session:
        size = log.checkpoint(session).checkpoint.size
        assert log.size(session) == size + 1  # The checkpoint's own audit:checkpoint entry.
    with sessions.begin() as session:
        proof = log.prove(session, size)
    checkpoint, leaf = verify_tlog_proof(proof, log.verifier)
    assert checkpoint.size == size + 1
    assert json.loads(leaf)["tag"] == "audit:checkpoint"


def test_reading_by_tag_and_time(log: AuditLog, sessions: sessionmaker[Session],
                                 clock: FakeClock) -> None:
    fill(log, sessions, 3, clock=clock)
    with sessions.begin() as session:
        downloads = list(log.events(session, tag=AuditTag.DOWNLOAD_COMPLETE))
        later = list(log.events(session, since=clock.now.replace(second=1)))
    assert [event.subject for event in downloads] == ["file:0", "file:1", "file:2"]
    assert [event.subject for event in later] == ["file:1", "file:2"]


def test_export_writes_one_leaf_per_line(log: AuditLog, sessions: sessionmaker[Session],
                                         tmp_path: Path) -> None:
    fill(log, sessions, 5)
    target = tmp_path / "export.jsonl"
    with sessions.begin() as session, target.open("wb") as handle:
        count = log.export(session, handle)
        assert count == log.size(session)
    assert len(target.read_bytes().splitlines()) == count


def test_the_database_refuses_update_and_delete(log: AuditLog,
                                                sessions: sessionmaker[Session]) -> None:
    fill(log, sessions, 2)
    for statement in ("UPDATE audit_entries SET tag = 'x'", "DELETE FROM audit_entries",
                      "UPDATE audit_nodes SET hash = x'00'", "DELETE FROM audit_nodes",
                      "UPDATE audit_checkpoints SET size = 0", "DELETE FROM audit_checkpoints"):
        with pytest.raises(Exception, match="append-only"), sessions.begin() as session:
            session.execute(text(statement))
