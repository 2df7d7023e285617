"""What only the local store has: file modes, and a full disk."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from gateway.errors import StorageError
from gateway.store import LocalStore


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_modes(store: LocalStore) -> None:
    pending = store.create()
    pending.write(b"x")
    stored = pending.commit()
    assert _mode(store.root) == 0o700
    assert _mode(store.objects_dir) == 0o700
    assert _mode(store.partial_dir) == 0o700
    path = store.object_path(stored.object_id)
    assert _mode(path.parent) == 0o700
    assert _mode(path) == 0o600


def test_uncommitted_objects_live_in_partial(store: LocalStore) -> None:
    pending = store.create()
    pending.write(b"abc")
    assert [p.name for p in store.partial_dir.iterdir()] == [pending.object_id]
    pending.abort()
    assert list(store.partial_dir.iterdir()) == []


def test_full_disk_aborts_cleanly(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC mid-write: a clear error and no partial left behind."""
    pending = store.create()
    pending.write(b"first")
    real_write = os.write

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(StorageError, match="the object store is full"):
        pending.write(b"second")
    monkeypatch.setattr(os, "write", real_write)
    assert list(store.partial_dir.iterdir()) == []
    assert list(store.list_objects()) == []


def test_writeback_of_each_step_starts_while_the_object_is_written(
        store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.store import local

    advised: list[tuple[int, int, int]] = []
    monkeypatch.setattr(local, "WRITEBACK_STEP", 1000)
    monkeypatch.setattr(local.os, "posix_fadvise",
                        lambda fd, start, length, advice: advised.append((start, length, advice)))
    pending = store.create()
    for _ in range(5):
        pending.write(b"x" * 600)
    stored = pending.commit()
    assert advised == [(0, 1200, os.POSIX_FADV_DONTNEED), (1200, 1200, os.POSIX_FADV_DONTNEED)]
    assert store.object_path(stored.object_id).read_bytes() == b"x" * 3000
    assert stored.size == 3000
