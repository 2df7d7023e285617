"""Housekeeping: a failing purge pass is logged, audited and caught up by the next one;
checkpoints are signed when due; service events are audited; no chore ends the loop."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from gateway import housekeeping
from gateway.app import App
from gateway.audit import AuditTag
from gateway.config import load_settings
from gateway.db.models import Role
from gateway.errors import StorageError
from gateway.housekeeping import Housekeeping, checkpoint_tick_seconds
from gateway.store import LocalStore
from tests.conftest import FakeClock
from tests.unit.gateway.factories import account, actor, audit_events, partner_with_key


class FlakyStore(LocalStore):
    """A local store whose next ``failures`` deletes fail.

    ``error`` is what a failure raises: the store's own :class:`StorageError`, or
    something a store client lets through unwrapped (a connection reset).
    """

    failures = 0
    error: Exception = StorageError("the object store is unreachable")

    def delete(self, object_id: str) -> bool:
        if self.failures:
            self.failures -= 1
            raise self.error
        return super().delete(object_id)


class StopAfter:
    """A stop request that says "stop" on its ``n``-th wait."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None) -> bool:
        self.waits.append(timeout)
        return len(self.waits) >= self.n


@pytest.fixture
def flaky(data_dir: Path, clock: FakeClock) -> Iterator[tuple[App, FlakyStore]]:
    settings = load_settings(data_dir=data_dir, environ={})
    store = FlakyStore(settings.store_dir)
    app = App(settings, clock=clock, store=store)
    partner_with_key(app)
    account(app, "clerk", Role.STAFF)
    yield app, store
    app.close()


def _upload(app: App, name: str) -> None:
    upload = app.transfers.begin_upload(actor(app, "clerk"), partner="uni", name=name)
    upload.write(b"content")
    upload.commit()


def _objects(app: App) -> int:
    return len(list(app.store.list_objects()))


def test_failed_purge_pass_is_audited_and_the_next_pass_catches_up(
        flaky: tuple[App, FlakyStore], clock: FakeClock, caplog: pytest.LogCaptureFixture,
) -> None:
    app, store = flaky
    _upload(app, "a.csv")
    clock.advance(days=8)
    store.failures, store.error = 1, ConnectionResetError("connection reset by the store")
    chores = Housekeeping(app, component="serve")
    with caplog.at_level(logging.ERROR, logger="gateway.housekeeping"):
        assert chores.purge() is None
    assert "purge pass failed; retrying in 60 s" in caplog.text
    failure, = audit_events(app, AuditTag.SERVICE_PURGE_FAILURE)
    assert failure["details"]["component"] == "serve"
    assert failure["details"]["reason"] == "unexpected ConnectionResetError"
    assert failure["actor"] == "system:serve"
    assert _objects(app) == 1  # The expired file's ciphertext is still there.
    _upload(app, "b.csv")
    clock.advance(days=8)
    report = chores.purge()
    assert report is not None
    assert (report.purged, report.swept) == (1, 1)  # b.csv, and what a.csv left behind
    assert _objects(app) == 0


def test_a_store_that_refuses_a_deletion_is_caught_up_by_the_next_pass(
        flaky: tuple[App, FlakyStore], clock: FakeClock) -> None:
    """The store's own errors do not fail the pass: the object stays pending."""
    app, store = flaky
    _upload(app, "a.csv")
    clock.advance(days=8)
    store.failures = 2  # The purge's deletion, and the same pass's sweep of it.
    chores = Housekeeping(app, component="serve")
    report = chores.purge()
    assert report is not None and report.purged == 1
    assert _objects(app) == 1
    assert audit_events(app, AuditTag.SERVICE_PURGE_FAILURE) == []
    report = chores.purge()
    assert report is not None and report.swept == 1
    assert _objects(app) == 0


def test_the_loop_survives_failing_passes_and_stops_when_asked(
        flaky: tuple[App, FlakyStore], clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, store = flaky
    monkeypatch.setattr(housekeeping, "PURGE_INTERVAL_SECONDS", 0.0)
    for name in ("a.csv", "b.csv"):
        _upload(app, name)
    clock.advance(days=8)
    store.failures, store.error = 2, ConnectionResetError("connection reset by the store")
    stop = StopAfter(3)
    Housekeeping(app, component="serve").run(stop, purge=True)
    assert len(audit_events(app, AuditTag.SERVICE_PURGE_FAILURE)) == 2
    assert _objects(app) == 0  # The third pass caught up.
    assert stop.waits == [checkpoint_tick_seconds(app.settings)] * 3


def test_the_loop_signs_a_checkpoint_when_one_is_due(app: App, clock: FakeClock) -> None:
    clock.now = datetime.now(UTC)  # `init` signed its checkpoint by the real clock.
    account(app, "clerk", Role.STAFF)
    chores = Housekeeping(app, component="sftp")
    signed = len(audit_events(app, AuditTag.AUDIT_CHECKPOINT))
    chores.run(StopAfter(1), purge=False)
    assert len(audit_events(app, AuditTag.AUDIT_CHECKPOINT)) == signed  # Not due yet.
    clock.advance(seconds=app.settings.audit_checkpoint_seconds)
    chores.run(StopAfter(1), purge=False)
    assert len(audit_events(app, AuditTag.AUDIT_CHECKPOINT)) == signed + 1


def test_service_events_name_the_component(app: App) -> None:
    chores = Housekeeping(app, component="sftp")
    chores.started(workers=2)
    chores.stopped(reason="SIGTERM", seconds=1.5)
    start, = audit_events(app, AuditTag.SERVICE_START)
    stop, = audit_events(app, AuditTag.SERVICE_STOP)
    assert start["details"]["component"] == "sftp" and start["details"]["workers"] == 2
    assert stop["details"]["reason"] == "SIGTERM" and stop["subject"] == "service:sftp"


@pytest.mark.parametrize(("seconds", "tick"), [(300, 30.0), (600, 30.0), (60, 6.0), (5, 1.0)])
def test_checkpoint_tick_keeps_the_unsigned_window_short(
        data_dir: Path, seconds: int, tick: float) -> None:
    settings = load_settings(data_dir=data_dir, environ={},
                             overrides={"audit_checkpoint_seconds": seconds})
    assert checkpoint_tick_seconds(settings) == tick


def test_chores_survive_an_unavailable_database(
        data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(data_dir=data_dir, environ={},
                             overrides={"sqlite_busy_timeout_seconds": 1})
    app = App(settings)
    blocker = App(settings)
    with blocker.transaction() as session, caplog.at_level(logging.WARNING):
        session.execute(text("SELECT 1"))  # BEGIN IMMEDIATE: holds the write lock.
        chores = Housekeeping(app, component="sftp")
        assert chores.record(AuditTag.SERVICE_START) is False
        chores.checkpoint_if_due()
        assert chores.purge() is None
    assert "could not sign a due audit checkpoint: the database is unavailable" in caplog.text
    assert "database is locked" in caplog.text
    assert audit_events(app, AuditTag.SERVICE_START) == []
    # Once the lock is gone, the same App works again.
    assert chores.record(AuditTag.SERVICE_START) is True
    app.close()
    blocker.close()




def test_the_loop_sends_notifications_and_survives_their_failures(
        data_dir: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from gateway.notify.models import NotificationCursor

    app = App(load_settings(data_dir=data_dir, environ={}, overrides={
        "notify_webhook_url": "https://hooks.example.org/blindpost",
        "notify_webhook_secret_file": str(data_dir / "webhook.secret")}), clock=clock)
    chores = Housekeeping(app, component="sftp")
    chores.run(StopAfter(1), purge=False)
    with app.read() as session:
        assert session.get(NotificationCursor, "audit") is not None  # The first round ran.

    def broken() -> None:
        raise RuntimeError("a bug in the notifier")

    monkeypatch.setattr(app.notifications, "run_once", broken)
    with caplog.at_level(logging.ERROR, logger="gateway.housekeeping"):
        chores.run(StopAfter(2), purge=False)
    assert caplog.text.count("could not send notifications") == 2
    app.close()
