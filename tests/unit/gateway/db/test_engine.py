"""Engine set-up: SQLite pragmas, private file mode, and never touching an open database."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.db import make_engine
from gateway.db.engine import snapshot, unavailable_as_error
from gateway.errors import DatabaseUnavailableError


def test_new_sqlite_file_is_private_and_tuned(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
    engine.dispose()
    assert stat.S_IMODE((tmp_path / "x.db").stat().st_mode) == 0o600


def test_existing_database_file_is_never_opened_outside_sqlite(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Closing any descriptor of a database file drops this process's SQLite locks.

    A second engine in a process that already had one (``blindpost serve`` starting the
    SFTP service) used to open and close the file, and the first engine then saw
    "database disk image is malformed" under load.
    """
    database = tmp_path / "x.db"
    first = make_engine(f"sqlite:///{database}")
    with first.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
    opened: list[str] = []
    real_open = os.open

    def spy(path: object, *args: object, **kwargs: object) -> int:
        descriptor = real_open(path, *args, **kwargs)  # type: ignore[arg-type]
        opened.append(str(path))  # Only opens that succeeded hold a descriptor.
        return descriptor

    monkeypatch.setattr(os, "open", spy)
    second = make_engine(f"sqlite:///{database}")
    assert str(database) not in opened
    second.dispose()
    first.dispose()


def test_snapshot_does_not_block_writers(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
    with snapshot(engine) as reader:
        assert reader.execute(text("SELECT count(*) FROM t")).scalar() == 0
        with engine.begin() as writer:
            writer.execute(text("INSERT INTO t VALUES (1)"))
        assert reader.execute(text("SELECT count(*) FROM t")).scalar() == 0
    engine.dispose()


def test_a_lock_held_past_the_busy_timeout_is_a_clear_error(tmp_path: Path) -> None:
    """A backup holding the write lock: wait for it up to the timeout, then refuse."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    backup, gateway = make_engine(url), make_engine(url, busy_timeout_seconds=1)
    with backup.begin() as holder:
        holder.execute(text("CREATE TABLE t (x INTEGER)"))
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailableError, match="database is locked"), \
                unavailable_as_error(), gateway.begin() as connection:
            connection.execute(text("SELECT 1"))
        assert 0.9 < time.monotonic() - started < 5
    with unavailable_as_error(), gateway.begin() as connection:
        assert connection.execute(text("SELECT count(*) FROM t")).scalar() == 0
    backup.dispose()
    gateway.dispose()


def test_a_writer_gets_a_second_sqlite_connection_while_others_wait_for_its_lock(
        tmp_path: Path) -> None:
    """More threads than the pool keeps wait for one writer's lock, each holding a pooled
    connection; the writer still gets a second connection to read what is committed.

    With the pool's default ceiling (5 kept + 10 more) the writer waited 30 s for a
    connection that only a thread waiting for its own lock could give back."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
    waiting = [engine.connect() for _ in range(30)]  # As threads in BEGIN IMMEDIATE hold.
    with engine.begin() as writer:
        writer.execute(text("INSERT INTO t VALUES (1)"))
        started = time.monotonic()
        with snapshot(engine) as second:
            assert second.execute(text("SELECT count(*) FROM t")).scalar() == 0
        assert time.monotonic() - started < 5
    for connection in waiting:
        connection.close()
    engine.dispose()
