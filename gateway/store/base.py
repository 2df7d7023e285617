"""The object-store interface every backend implements."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

# The most a write after :meth:`PendingObject.ready` is expected to bring: an SFTP write
# (at most 256 KiB and its header) sealed, with the 64 KiB the encryptor held back and
# the chunks' tags, fits with room to spare. A larger write is still taken; it may wait.
READY_WRITE = 512 << 10


@dataclass(frozen=True)
class StoredObject:
    """A committed object: its id, size in bytes and SHA-256 (hex) of its content."""

    object_id: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ObjectInfo:
    """A committed object as listed by the store."""

    object_id: str
    size: int
    modified_at: datetime


class PendingObject(Protocol):
    """An object being written. Invisible until :meth:`commit`; :meth:`abort` removes it."""

    @property
    def object_id(self) -> str: ...

    @property
    def size(self) -> int: ...

    def write(self, data: bytes | memoryview) -> int:
        """Append ``data``; raise :class:`~gateway.errors.StorageError` on I/O failure.

        ``data`` may be a view of a buffer the caller reuses (the age encryptor's is):
        consume or copy it before returning, never keep a reference.
        """
        ...

    def ready(self, before_waiting: Callable[[], None] | None = None) -> None:
        """Wait until the next write (of at most :data:`READY_WRITE` bytes) can go to the
        store without waiting, so that a caller holding nothing yet waits here rather
        than with the data in hand; raise :class:`~gateway.errors.StorageError` as
        :meth:`write` would. Never call it while a :meth:`write` runs. ``before_waiting``
        is called first if it is going to wait (the SFTP server sends the replies it
        holds back), and never otherwise.
        """
        ...

    def commit(self) -> StoredObject:
        """Make the object durable and visible under its id, atomically."""
        ...

    def abort(self) -> None:
        """Discard everything written; safe to call more than once and after a failure."""
        ...


class ObjectReader(Protocol):
    """Random access to one committed object."""

    @property
    def size(self) -> int: ...

    def read_at(self, offset: int, length: int) -> bytes:
        """Return up to ``length`` bytes at ``offset``; fewer only at the end of the object."""
        ...

    def close(self) -> None: ...


class ObjectStore(Protocol):
    """Streamed put with atomic commit, ranged get, delete, list, sweep of partials.

    Backends: :class:`~gateway.store.LocalStore` and :class:`~gateway.store.s3.S3Store`;
    :func:`~gateway.store.factory.open_store` builds the one the settings name.
    """

    def create(self) -> PendingObject:
        """Start a new object under a fresh random id."""
        ...

    def open(self, object_id: str) -> ObjectReader:
        """Open a committed object for ranged reads."""
        ...

    def delete(self, object_id: str) -> bool:
        """Delete an object, committed or still being written; return whether it existed.

        A writer still holding a partial object finds its later writes or commit fail.
        """
        ...

    def list_objects(self) -> Iterator[ObjectInfo]:
        """Every committed object."""
        ...

    def sweep_partials(self, *, older_than: datetime) -> list[str]:
        """Remove uncommitted objects last written before ``older_than``; return their ids."""
        ...
