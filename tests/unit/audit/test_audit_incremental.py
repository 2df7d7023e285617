"""Incremental verification (verify_from) and verification read in batches.

A follower verifies only what was appended since a verified state; what it cannot see
(an entry it already covered, changed with the stored tree left alone) is for a full
verification, and the tests say which is which.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit import (
    AuditLog,
    StaleStateError,
    VerificationError,
    VerifyReport,
    merkle,
    reading,
    verify_database,
    verify_from,
)
from gateway.audit.note import Checkpoint
from gateway.audit.verify import VerifiedState
from tests.unit.audit.audit_support import fill
from tests.unit.audit.test_audit_tamper import change_row, drop_triggers


def _full(log: AuditLog, sessions: sessionmaker[Session]) -> VerifyReport:
    with sessions.begin() as session:
        return verify_database(session, verifier=log.verifier)


def _since(log: AuditLog, sessions: sessionmaker[Session], trusted: object,
           **options: object) -> VerifyReport:
    with sessions.begin() as session:
        return verify_from(session, trusted=trusted, verifier=log.verifier,  # type: ignore[arg-type]
                           **options)  # type: ignore[arg-type]


def test_only_new_entries_are_read(log: AuditLog, sessions: sessionmaker[Session]) -> None:
    fill(log, sessions, 10)
    first = _full(log, sessions)
    fill(log, sessions, 7)
    seen: list[int] = []
    report = _since(log, sessions, first.state,
                    reader=lambda index, _t, _tag, _leaf: seen.append(index))
    assert (report.start, report.size) == (first.size, _full(log, sessions).size)
    assert seen == list(range(first.size, report.size))
    assert report.root == _full(log, sessions).root
    assert "new since the last verification" in report.summary()
    # From a signed checkpoint or a bare (size, root) as well, and from the head itself.
    assert first.anchor is not None
    assert _since(log, sessions, first.anchor).size == report.size
    assert _since(log, sessions, (first.size, first.root)).size == report.size
    assert _since(log, sessions, report.state).size == report.size


def test_a_changed_new_entry_is_named(log: AuditLog, sessions: sessionmaker[Session]) -> None:
    fill(log, sessions, 10)
    state = _full(log, sessions).state
    fill(log, sessions, 6)
    with sessions.begin() as session:
        drop_triggers(session)
        change_row(session, state.size + 2, '"bytes":10', '"bytes":99')
    with pytest.raises(VerificationError) as caught:
        _since(log, sessions, state)
    assert (f"entry {state.size + 2}: its leaf hash differs from the one stored"
            in caught.value.diagnostics())


def test_a_log_that_no_longer_extends_the_state(log: AuditLog,
                                                sessions: sessionmaker[Session]) -> None:
    fill(log, sessions, 10)
    state = _full(log, sessions).state
    with pytest.raises(StaleStateError, match="no longer extends"):
        _since(log, sessions, VerifiedState(state.size, bytes(32), state.checkpoint_id))
    with pytest.raises(StaleStateError):
        _since(log, sessions, VerifiedState(state.size + 5, state.root))
    # Old entries changed with their stored subtree: the stored tree no longer folds to
    # the verified root.
    largest = merkle.node_position(*merkle.perfect_subtrees(0, state.size)[0])
    with sessions.begin() as session:
        drop_triggers(session)
        session.execute(text("UPDATE audit_nodes SET hash = :h WHERE pos = :pos"),
                        {"h": bytes(32), "pos": largest})
    with pytest.raises(StaleStateError):
        _since(log, sessions, state)


def test_an_old_entry_changed_alone_needs_a_full_verification(
        log: AuditLog, sessions: sessionmaker[Session]) -> None:
    fill(log, sessions, 10)
    state = _full(log, sessions).state
    with sessions.begin() as session:
        drop_triggers(session)
        change_row(session, 3, '"bytes":10', '"bytes":99')
    assert _since(log, sessions, state).size == state.size  # What incremental cannot see...
    with pytest.raises(VerificationError, match="entry 3: its leaf hash differs"):
        _full(log, sessions)  # ...and the full verification finds.


def test_checkpoints_within_the_trusted_tree_are_proved(
        log: AuditLog, sessions: sessionmaker[Session], tmp_path: Path) -> None:
    fill(log, sessions, 10)
    with sessions.begin() as session:
        witnessed = log.checkpoint(session).note
    fill(log, sessions, 3)
    state = _full(log, sessions).state
    fill(log, sessions, 3)
    report = _since(log, sessions, state, outside=[("w", witnessed)])
    assert report.witnessed is not None and report.witnessed.size < state.size
    # A checkpoint signed by the log but of another history (a rewrite re-signed).
    forged = log._signer.sign(Checkpoint(log.origin, 5, bytes(32)).text())
    with pytest.raises(VerificationError, match=r"outside checkpoint f \(size 5\): it is "
                                                "not consistent with the verified tree"):
        _since(log, sessions, state, outside=[("f", forged)])


def test_a_new_stored_checkpoint_is_checked(log: AuditLog,
                                            sessions: sessionmaker[Session]) -> None:
    fill(log, sessions, 10)
    state = _full(log, sessions).state
    with sessions.begin() as session:
        note = log._signer.sign(Checkpoint(log.origin, 2, log.root(session, 2)).text())
        session.execute(text("INSERT INTO audit_checkpoints (size, root, created_at, note) "
                             "VALUES (2, :root, :at, :note)"),
                        {"root": log.root(session, 2), "at": datetime(2026, 1, 1),
                         "note": note})
    with pytest.raises(VerificationError, match="a rolled-back checkpoint"):
        _since(log, sessions, state)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_small_batches_say_what_one_batch_says(log: AuditLog, sessions: sessionmaker[Session],
                                               monkeypatch: pytest.MonkeyPatch,
                                               batch: int) -> None:
    fill(log, sessions, 20)
    whole = _full(log, sessions)
    with sessions.begin() as session:
        drop_triggers(session)
        change_row(session, 9, '"bytes":1007', '"bytes":9999')
        session.execute(text("DELETE FROM audit_entries WHERE idx = 15"))
    with pytest.raises(VerificationError) as one:
        _full(log, sessions)
    monkeypatch.setattr(reading, "BATCH", batch)
    with pytest.raises(VerificationError) as many:
        _full(log, sessions)
    assert many.value.diagnostics() == one.value.diagnostics()
    assert "entry 9: its leaf hash differs" in one.value.diagnostics()
    assert whole.size == 25
