"""Local-filesystem object store.

Layout under the store root (directories 0700, files 0600)::

    objects/ab/abcdef…   committed objects, named by a random 32-hex-digit id
    partial/abcdef…      objects being written; renamed into objects/ on commit

Commit is fsync(file), rename, fsync(directory): after a crash an object is either fully
visible or only a partial, which :meth:`LocalStore.sweep_partials` removes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from gateway.errors import NotFoundError, StorageError
from gateway.store.base import ObjectInfo, StoredObject

_OBJECT_ID = re.compile(r"[0-9a-f]{32}")
_DIR_MODE = 0o700
_FILE_MODE = 0o600


def _storage_error(action: str, exc: OSError) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(f"{action}: the object store is full")
    return StorageError(f"{action}: {exc.strerror or exc}")


# The disk writes of every this much written are started at once (without waiting for
# them), so that the fsync at commit finds little left: an fsync of a whole 256 MiB
# upload at its end kept the client waiting about 0.3 s (1 GiB: about 1 s) after its
# last byte, with OpenSSH's sftp and blindpost send alike.
WRITEBACK_STEP = 16 << 20


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalPendingObject:
    """An object being written to ``partial/``; see :class:`gateway.store.PendingObject`."""

    def __init__(self, store: LocalStore, object_id: str) -> None:
        self._store = store
        self._object_id = object_id
        self._path = store.partial_dir / object_id
        self._hash = hashlib.sha256()
        self._size = 0
        self._written_back = 0
        self._done = False
        try:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                               _FILE_MODE)
        except OSError as exc:
            raise _storage_error("cannot create object", exc) from exc

    @property
    def object_id(self) -> str:
        return self._object_id

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes | memoryview) -> int:
        if self._done:
            raise StorageError("write to an object that was already committed or aborted")
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                self._hash.update(view[:written])
                view = view[written:]
        except OSError as exc:
            self.abort()
            raise _storage_error("cannot write object", exc) from exc
        self._size += len(data)
        if self._size - self._written_back >= WRITEBACK_STEP:
            self._start_writeback()
        return len(data)

    def _start_writeback(self) -> None:
        # POSIX_FADV_DONTNEED starts the writeback of the range's dirty pages without
        # waiting for it (and lets them go from the cache once written); only advice.
        with contextlib.suppress(OSError, AttributeError):
            os.posix_fadvise(self._fd, self._written_back, self._size - self._written_back,
                             os.POSIX_FADV_DONTNEED)
        self._written_back = self._size

    def commit(self) -> StoredObject:
        if self._done:
            raise StorageError("object was already committed or aborted")
        final = self._store.object_path(self._object_id)
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._done = True
            final.parent.mkdir(mode=_DIR_MODE, exist_ok=True)
            self._path.rename(final)
            _fsync_dir(final.parent)
        except OSError as exc:
            self._done = True
            self._path.unlink(missing_ok=True)
            raise _storage_error("cannot commit object", exc) from exc
        return StoredObject(self._object_id, self._size, self._hash.hexdigest())

    def ready(self, before_waiting: Callable[[], None] | None = None) -> None:
        """Nothing to wait for: a file takes every write as it comes."""

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            os.close(self._fd)
        finally:
            self._path.unlink(missing_ok=True)


class LocalObjectReader:
    """Ranged reads on one committed object through an open descriptor."""

    def __init__(self, path: Path) -> None:
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise NotFoundError("object not found in the store") from exc
        except OSError as exc:
            raise _storage_error("cannot open object", exc) from exc
        self._size = os.fstat(self._fd).st_size

    @property
    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise StorageError("negative offset or length")
        try:
            return os.pread(self._fd, length, offset)
        except OSError as exc:
            raise _storage_error("cannot read object", exc) from exc

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LocalStore:
    """An :class:`~gateway.store.ObjectStore` in a directory of the local filesystem."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects_dir = root / "objects"
        self.partial_dir = root / "partial"
        for directory in (root, self.objects_dir, self.partial_dir):
            try:
                directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
            except OSError as exc:
                raise _storage_error(f"cannot create {directory}", exc) from exc

    def object_path(self, object_id: str) -> Path:
        """Where a committed object lives; the id is checked, so no path comes from input."""
        if not _OBJECT_ID.fullmatch(object_id):
            raise NotFoundError("invalid object id")
        return self.objects_dir / object_id[:2] / object_id

    def create(self) -> LocalPendingObject:
        return LocalPendingObject(self, secrets.token_hex(16))

    def open(self, object_id: str) -> LocalObjectReader:
        return LocalObjectReader(self.object_path(object_id))

    def delete(self, object_id: str) -> bool:
        """Delete the object, committed or still partial; return whether it existed."""
        removed = False
        for path in (self.object_path(object_id), self.partial_dir / object_id):
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _storage_error("cannot delete object", exc) from exc
            _fsync_dir(path.parent)
            removed = True
        return removed

    def list_objects(self) -> Iterator[ObjectInfo]:
        for shard in sorted(self.objects_dir.iterdir()):
            for entry in sorted(shard.iterdir()):
                if _OBJECT_ID.fullmatch(entry.name):
                    stat = entry.stat()
                    yield ObjectInfo(entry.name, stat.st_size,
                                     datetime.fromtimestamp(stat.st_mtime, UTC))

    def sweep_partials(self, *, older_than: datetime) -> list[str]:
        removed = []
        for entry in self.partial_dir.iterdir():
            modified = datetime.fromtimestamp(entry.stat().st_mtime, UTC)
            if modified < older_than:
                entry.unlink(missing_ok=True)
                removed.append(entry.name)
        return sorted(removed)
