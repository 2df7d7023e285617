"""Verification with leaves hashed in a second process finds what it finds in one.

Batches are made small (4 entries) so that a log of a few dozen entries reaches the
worker process; each log is verified both ways and the reports compared word for word.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit import AuditLog, VerificationError, leaf_worker, reading, verify
from gateway.audit.verify import local_leaf_hashes
from gateway.state_keys import StateKey, StateKeys
from tests.unit.audit.audit_support import fill
from tests.unit.audit.test_audit_tamper import change_row, drop_triggers

KEYS = StateKeys(StateKey(os.urandom(32)))
AVAILABLE = leaf_worker.available


@pytest.fixture(autouse=True)
def _a_free_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker starts whatever the load of the machine running the tests."""
    monkeypatch.setattr(leaf_worker, "available", lambda: True)


def _verify(log: AuditLog, sessions: sessionmaker[Session]) -> str:
    with sessions.begin() as session:
        try:
            report = verify.verify_database(session, verifier=log.verifier, entry_keys=KEYS)
        except VerificationError as exc:
            return exc.diagnostics()
    return f"OK {report.size} {report.root.hex()} {report.anchor}"


def _both_ways(log: AuditLog, sessions: sessionmaker[Session],
               monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, int]:
    """The report of a serial and of a parallel verification, and how many batches the
    worker answered."""
    answered = []
    receive = leaf_worker.LeafWorker.receive

    def counted(worker: leaf_worker.LeafWorker) -> list[bytes] | None:
        answered.append(1)
        return receive(worker)

    monkeypatch.setattr(leaf_worker.LeafWorker, "receive", counted)
    monkeypatch.setattr(reading, "BATCH", 4)
    # Every batch after the first to the worker, however fast this process is.
    monkeypatch.setattr(leaf_worker, "SLOTS", 16)
    monkeypatch.setattr(leaf_worker, "SLOT_SIZE", 1 << 16)
    monkeypatch.setattr(verify._LeafPipeline, "depth", 16)
    monkeypatch.setattr(verify._LeafPipeline, "most_pending", 16)
    monkeypatch.setattr(verify, "PARALLEL", False)
    serial = _verify(log, sessions)
    assert not answered
    monkeypatch.setattr(verify, "PARALLEL", True)
    return serial, _verify(log, sessions), len(answered)


def _changed_columns(session: Session) -> None:
    change_row(session, 9, '"bytes":1007', '"bytes":9999')
    session.execute(text("UPDATE audit_entries SET tag = 'file:delete' WHERE idx = 14"))
    session.execute(text("UPDATE audit_entries SET recorded_at = '2020-01-01 00:00:00.000000'"
                         " WHERE idx = 22"))


def _removed_entry_and_node(session: Session) -> None:
    session.execute(text("DELETE FROM audit_entries WHERE idx = 17"))
    session.execute(text("UPDATE audit_nodes SET hash = zeroblob(32) WHERE pos = 40"))


def _bad_macs_and_unusual_leaf(session: Session) -> None:
    # Beyond the checkpoint before the last (the last one removed), MACs count.
    session.execute(text("DELETE FROM audit_checkpoints WHERE id = "
                         "(SELECT max(id) FROM audit_checkpoints)"))
    session.execute(text("UPDATE audit_entries SET mac = 'k1:AAAA' WHERE idx >= 30"))
    change_row(session, 5, '{"actor"', '{ "actor"')


@pytest.mark.parametrize("tamper", [None, _changed_columns, _removed_entry_and_node,
                                    _bad_macs_and_unusual_leaf])
def test_parallel_and_serial_report_the_same(
        log: AuditLog, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch,
        tamper: Callable[[Session], None] | None) -> None:
    log.entry_keys = KEYS
    fill(log, sessions, 32)
    if tamper is not None:
        with sessions.begin() as session:
            drop_triggers(session)
            tamper(session)
    serial, parallel, answered = _both_ways(log, sessions, monkeypatch)
    assert answered >= 8  # The worker answered for every batch but the first.
    assert parallel == serial
    assert serial.startswith("OK") == (tamper is None), serial


def test_the_worker_answers_as_this_process_computes(
        log: AuditLog, sessions: sessionmaker[Session]) -> None:
    fill(log, sessions, 6)
    with sessions.begin() as session:
        rows = next(reading.LogTables(session).entries())
    request = leaf_worker.encode_request(rows)
    assert request is not None
    reply = leaf_worker.answer(request)
    usual, count = leaf_worker.REPLY.unpack_from(reply)
    hashes = local_leaf_hashes(rows)
    assert hashes is not None
    assert (usual, count) == (1, len(rows))
    assert reply[leaf_worker.REPLY.size:] == b"".join(hashes)
    # A leaf holding the separator splits into one part too many: not usual, no hashes.
    broken = [*rows[:-1], (*rows[-1][:3], rows[-1][3] + "\x00", rows[-1][4])]
    request = leaf_worker.encode_request(broken)
    assert request is not None
    assert leaf_worker.answer(request) == leaf_worker.REPLY.pack(0, 0)
    # Rows that are not consecutive are not sent at all.
    assert leaf_worker.encode_request([rows[0], rows[2]]) is None


def test_a_worker_that_dies_leaves_the_work_to_this_process(
        log: AuditLog, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch) -> None:
    log.entry_keys = KEYS
    fill(log, sessions, 12)
    with sessions.begin() as session:
        drop_triggers(session)
        change_row(session, 9, '"bytes":1007', '"bytes":9999')
    start = leaf_worker.LeafWorker.__init__

    def stillborn(worker: leaf_worker.LeafWorker) -> None:
        start(worker)
        worker._process.kill()
        worker._process.wait()

    monkeypatch.setattr(leaf_worker.LeafWorker, "__init__", stillborn)
    monkeypatch.setattr(reading, "BATCH", 4)
    assert "entry 9: its leaf hash differs" in _verify(log, sessions)


def test_batches_the_worker_is_slow_to_answer_are_hashed_here(
        log: AuditLog, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch) -> None:
    log.entry_keys = KEYS
    fill(log, sessions, 32)
    with sessions.begin() as session:
        drop_triggers(session)
        _changed_columns(session)
    monkeypatch.setattr(reading, "BATCH", 4)
    monkeypatch.setattr(verify, "PARALLEL", False)
    serial = _verify(log, sessions)
    monkeypatch.setattr(verify, "PARALLEL", True)
    # The worker never seems ready: each batch sent is hashed here as well, and its
    # answer dropped when it comes, before the answer of the next batch is taken.
    monkeypatch.setattr(leaf_worker.LeafWorker, "ready", lambda _worker: False)
    monkeypatch.setattr(verify._LeafPipeline, "most_pending", 1)
    assert _verify(log, sessions) == serial


def test_no_worker_when_every_core_is_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    assert not AVAILABLE()
