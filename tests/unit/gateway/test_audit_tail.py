"""The log's tail and length: what a database writer without keys/ can no longer hide.

An earlier attack pass, with database write access only, rewrote, deleted and forged the
entries after the last checkpoint (a ``key:approve`` among them) and `audit verify`
passed; after the audit tables were wiped it said "OK: 0 entries". Entry MACs and the
checkpoint kept in the data directory close both.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.orm import Session

from gateway.actors import Actor, ActorKind
from gateway.app import App
from gateway.audit import AuditLog, AuditTag, VerificationError, merkle
from gateway.audit.checkpoint_file import keep_latest_checkpoint
from gateway.audit.note import NoteSigner
from tests.conftest import FakeClock
from tests.unit.gateway.factories import OPERATOR, partner_with_key

AUDIT_TABLES = ("audit_entries", "audit_nodes", "audit_checkpoints")


def _drop_append_only_triggers(app: App) -> None:
    # Whoever can write the database can drop the triggers; that is the attacker here.
    with app.engine.begin() as connection:
        for table in AUDIT_TABLES:
            for action in ("update", "delete"):
                connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{action}"))


def _forger(app: App, clock: FakeClock) -> AuditLog:
    """A log writer without the state key (and with a signing key of its own, never due)."""
    signer = NoteSigner(app.audit.origin, Ed25519PrivateKey.generate())
    return AuditLog(signer=signer, clock=clock, checkpoint_every=10**9,
                    checkpoint_seconds=10**9)


def _append_forged(app: App, clock: FakeClock, count: int = 1) -> None:
    forger = _forger(app, clock)
    for number in range(count):
        with Session(app.engine) as session, session.begin():
            forger.record(session, tag=AuditTag.KEY_APPROVE,
                          actor=Actor(ActorKind.ACCOUNT, "root-admin"),
                          subject=f"key:{number + 99}", details={"key_id": number + 99})


@pytest.fixture
def logged(app: App) -> App:
    partner_with_key(app, "uni")
    app.audit_view.checkpoint(OPERATOR)
    partner_with_key(app, "lab")  # Entries after the last checkpoint: the tail.
    app.audit_view.verify(OPERATOR)
    return app


def _verify_fails(app: App, expected: str) -> None:
    with pytest.raises(VerificationError) as failed:
        app.audit_view.verify(OPERATOR)
    assert expected in failed.value.diagnostics()


def test_a_forged_tail_entry_fails(logged: App, clock: FakeClock) -> None:
    _append_forged(logged, clock)
    _verify_fails(logged, "their MAC does not verify")


def test_a_rewritten_tail_entry_fails(logged: App, clock: FakeClock) -> None:
    _drop_append_only_triggers(logged)
    with logged.engine.begin() as connection:
        last = connection.execute(text("SELECT max(idx) FROM audit_entries")).scalar_one()
        connection.execute(text("DELETE FROM audit_entries WHERE idx = :last"), {"last": last})
        # Remove the last entry's stored subtree hashes, then append a different entry in
        # its place with a consistent tree: only the MAC can tell.
        connection.execute(text("DELETE FROM audit_nodes WHERE pos >= :first"),
                           {"first": merkle.stored_node_count(last)})
    _append_forged(logged, clock)
    _verify_fails(logged, "their MAC does not verify")


def test_a_shortened_log_fails_against_the_kept_checkpoint(logged: App) -> None:
    covered = logged.audit_view.checkpoint(OPERATOR).checkpoint.size
    _drop_append_only_triggers(logged)
    with logged.engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_checkpoints"))
        connection.execute(text("DELETE FROM audit_entries WHERE idx >= :keep"),
                           {"keep": covered - 3})
        connection.execute(text("DELETE FROM audit_nodes WHERE pos >= :first"),
                           {"first": merkle.stored_node_count(covered - 3)})
    _verify_fails(logged, f"kept in the data directory (size {covered})")


def test_an_emptied_log_fails(logged: App) -> None:
    logged.audit_view.checkpoint(OPERATOR)
    _drop_append_only_triggers(logged)
    with logged.engine.begin() as connection:
        for table in AUDIT_TABLES:
            connection.execute(text(f"DELETE FROM {table}"))
    _verify_fails(logged, "the log holds only 0")


def test_the_kept_checkpoint_only_grows(logged: App) -> None:
    path = logged.settings.audit_checkpoint_path
    first = logged.audit_view.checkpoint(OPERATOR)
    assert path.read_text() == first.note
    assert (path.stat().st_mode & 0o777) == 0o600
    keep_latest_checkpoint(path, 1, "an older, smaller checkpoint\n")
    assert path.read_text() == first.note
