"""Following the log never waits for a database connection while holding the ledger.

Twenty SFTP sign-ins at once on one worker used to stop for SQLite's 30 s busy timeout:
a sign-in holding the write lock waited for the ledger's lock; the ledger's lock was
held by a request whose read snapshot was older than what the process had followed, and
which waited for a pooled connection to read on; every pooled connection was held by a
sign-in waiting for the write lock. These tests build each edge of that cycle by hand.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import Connection, Engine, select

from gateway.actors import Actor
from gateway.app import App
from gateway.audit import AuditTag
from gateway.audit.models import AuditEntry

TEST_ACTOR = Actor.system("test")


class DrainedPool:
    """The ledger's own connections, handed out only once ``released`` is set: as if
    every pooled connection were held by a thread waiting for the write lock."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.waiting = threading.Event()
        self.released = threading.Event()

    def connect(self) -> Connection:
        self.waiting.set()
        assert self.released.wait(10), "no pooled connection came back"
        return self._engine.connect()


class NoPool:
    """The ledger's own connections, refused: a writer must not need one."""

    def connect(self) -> Connection:
        raise AssertionError("a writer asked for a second connection")


def download(app: App, transfer: str) -> None:
    """Commit a complete download of ``transfer`` to the log (not followed yet)."""
    with app.transaction() as session:
        app.audit.record(session, tag=AuditTag.DOWNLOAD_COMPLETE, actor=TEST_ACTOR,
                         subject=f"file:{transfer}", details={"served": 10})


def in_thread(work: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_a_writer_follows_the_log_while_a_stale_reader_waits_for_a_connection(
        app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    app.ledger.catch_up()
    read: list[int] = []
    written: list[int] = []
    with app.read() as stale:
        stale.execute(select(AuditEntry.idx).limit(1)).all()  # Its snapshot starts here.
        download(app, "f1")
        app.ledger.catch_up()  # This process has now read past that snapshot.
        pool = DrainedPool(app.engine)
        monkeypatch.setattr(app.ledger, "_engine", pool)
        reader = in_thread(lambda: read.append(app.ledger.downloads("f1", stale)))
        assert pool.waiting.wait(10)

        def sign_in() -> None:
            with app.transaction() as session:  # Holds the write lock, as a sign-in does.
                written.append(app.ledger.downloads("f1", session))

        writer = in_thread(sign_in)
        writer.join(5)
        finished = not writer.is_alive()
        pool.released.set()
        reader.join(10)
        writer.join(10)
    assert finished, "the writer waited for the ledger, held by a thread waiting for the pool"
    assert written == [1]
    assert read == [1]


def test_a_writer_that_appended_reads_the_committed_log_on_its_own_connection(
        app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    app.ledger.catch_up()
    download(app, "f1")  # Committed by another request, not followed yet.
    with app.transaction() as session:
        app.audit.record(session, tag=AuditTag.DOWNLOAD_COMPLETE, actor=TEST_ACTOR,
                         subject="file:f2", details={"served": 10})
        monkeypatch.setattr(app.ledger, "_engine", NoPool())
        assert app.ledger.downloads("f1", session) == 1
        # Its own entry is not committed yet: following it would count a download that a
        # rollback then takes back.
        assert app.ledger.downloads("f2", session) == 0
    monkeypatch.undo()
    assert app.ledger.downloads("f2") == 1
