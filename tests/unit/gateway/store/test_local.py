"""The local store: atomic commit, crash leftovers, concurrency, ranged reads, modes."""

from __future__ import annotations

import errno
import os
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import NotFoundError, StorageError
from gateway.store import LocalStore


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_put_commit_get(store: LocalStore) -> None:
    pending = store.create()
    pending.write(b"hello ")
    pending.write(memoryview(b"world"))
    stored = pending.commit()
    assert stored.size == 11
    assert stored.sha256 == "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    reader = store.open(stored.object_id)
    assert reader.read_at(0, 100) == b"hello world"
    reader.close()
    assert [info.object_id for info in store.list_objects()] == [stored.object_id]


def test_uncommitted_object_is_invisible_and_swept(store: LocalStore) -> None:
    """A crash between write and commit: nothing listed, nothing openable, sweep removes it."""
    pending = store.create()
    pending.write(b"x" * 1000)
    # No commit: the process "dies" here.
    assert list(store.list_objects()) == []
    with pytest.raises(NotFoundError):
        store.open(pending.object_id)
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert store.sweep_partials(older_than=later) == [pending.object_id]
    assert list(store.partial_dir.iterdir()) == []


def test_sweep_keeps_recent_partials(store: LocalStore) -> None:
    pending = store.create()
    pending.write(b"live upload")
    assert store.sweep_partials(older_than=datetime.now(UTC) - timedelta(hours=1)) == []
    assert pending.commit().size == 11


def test_abort_removes_everything(store: LocalStore) -> None:
    pending = store.create()
    pending.write(b"abc")
    pending.abort()
    pending.abort()
    assert list(store.partial_dir.iterdir()) == []
    assert list(store.list_objects()) == []
    with pytest.raises(StorageError):
        pending.write(b"more")


def test_ids_are_random_and_not_paths(store: LocalStore) -> None:
    ids = {store.create().object_id for _ in range(50)}
    assert len(ids) == 50
    for bad in ("../../etc/passwd", "a" * 31, "A" * 32, "", "0" * 31 + "/"):
        with pytest.raises(NotFoundError):
            store.open(bad)


def test_concurrent_puts(store: LocalStore) -> None:
    results: list[tuple[str, bytes]] = []
    lock = threading.Lock()

    def put(n: int) -> None:
        data = bytes([n]) * (70_000 + n)
        pending = store.create()
        for start in range(0, len(data), 4096):
            pending.write(data[start:start + 4096])
        stored = pending.commit()
        with lock:
            results.append((stored.object_id, data))

    threads = [threading.Thread(target=put, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 16
    for object_id, data in results:
        reader = store.open(object_id)
        assert reader.read_at(0, len(data) + 10) == data
        reader.close()


@pytest.mark.parametrize(("offset", "length", "expected"), [
    (0, 0, b""), (0, 1, b"0"), (9, 1, b"9"), (9, 5, b"9"), (10, 5, b""), (3, 4, b"3456"),
    (100, 5, b""),
])
def test_ranged_reads_at_boundaries(store: LocalStore, offset: int, length: int,
                                    expected: bytes) -> None:
    pending = store.create()
    pending.write(b"0123456789")
    reader = store.open(pending.commit().object_id)
    assert reader.size == 10
    assert reader.read_at(offset, length) == expected
    reader.close()


def test_negative_range_is_refused(store: LocalStore) -> None:
    pending = store.create()
    pending.write(b"abc")
    reader = store.open(pending.commit().object_id)
    with pytest.raises(StorageError):
        reader.read_at(-1, 2)
    reader.close()


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


def test_delete(store: LocalStore) -> None:
    pending = store.create()
    pending.write(b"x")
    stored = pending.commit()
    assert store.delete(stored.object_id) is True
    assert store.delete(stored.object_id) is False
    assert list(store.list_objects()) == []


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
