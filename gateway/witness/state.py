"""What a witness remembers: the latest checkpoint it cosigned, per log, on disk.

One file per origin (named by the SHA-256 of the origin, so no origin text becomes a
path) holds that checkpoint as the witness returned it: the log's signature and the
witness's cosignature. :meth:`WitnessState.update` is the compare-and-update the spec
requires to be atomic: under an exclusive ``flock`` (which excludes other threads and
other processes alike) it reads the current record, lets the caller decide, and writes
the new record (temporary file, fsync, rename, fsync of the directory) before the lock
is released and before any cosignature leaves the process. A crash at any moment
leaves the old record or the new one, never a mix and never an older one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from gateway.audit.errors import AuditError, VerificationError
from gateway.audit.note import Checkpoint, unverified_text

T = TypeVar("T")


def origin_hash(origin: str) -> str:
    """The lowercase hex SHA-256 of an origin: the monitoring URL's and file's name."""
    return hashlib.sha256(origin.encode()).hexdigest()


class WitnessState:
    """The per-log records under a state directory (created 0700)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise AuditError(f"{directory}: cannot create the witness state directory "
                             f"({exc.strerror})") from exc
        if not os.access(directory, os.W_OK):
            raise AuditError(f"{directory}: the witness state directory is not writable")

    def _path(self, origin: str) -> Path:
        return self.directory / f"{origin_hash(origin)}.checkpoint"

    def latest(self, origin: str) -> str | None:
        """The stored cosigned checkpoint of ``origin``, or None (read without locking:
        the file is only ever replaced whole)."""
        try:
            return self._path(origin).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    @contextmanager
    def _locked(self, origin: str) -> Iterator[None]:
        lock = os.open(self.directory / f"{origin_hash(origin)}.lock",
                       os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
        finally:
            os.close(lock)

    def update(self, origin: str, decide: Callable[[Checkpoint | None], tuple[str, T]]) -> T:
        """Atomically replace the record of ``origin`` with what ``decide`` returns.

        ``decide`` gets the current checkpoint (None if the witness never cosigned one)
        and returns the note to store and a result, or raises to leave the record alone.
        """
        with self._locked(origin):
            current = self.latest(origin)
            body = None if current is None else _parse_record(self._path(origin), current)
            note, result = decide(body)
            self._write(self._path(origin), note)
            return result

    def _write(self, path: Path, note: str) -> None:
        temporary = path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                             0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(note)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
        # The rename is durable only once the directory entry is.
        directory = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _parse_record(path: Path, note: str) -> Checkpoint:
    try:
        return Checkpoint.parse(unverified_text(note))
    except VerificationError as exc:
        # Refusing is the only safe answer: guessing a size could roll the log back.
        raise AuditError(f"{path}: the witness state is damaged ({exc.summary}); "
                         "restore it from a backup") from exc
