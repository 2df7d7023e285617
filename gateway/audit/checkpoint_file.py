"""The latest signed checkpoint, kept in a file beside the database.

Someone who can write the database but not the data directory could otherwise empty,
shorten or roll back the log and its checkpoints together; the file remembers the
largest checkpoint this installation signed, and verification holds the log to it.
The file only grows: a checkpoint smaller than the one it holds is not written.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from gateway.audit.note import Checkpoint, unverified_text


def _size_of(note: str) -> int:
    return Checkpoint.parse(unverified_text(note)).size


def read_latest_checkpoint(path: Path) -> str | None:
    """The note in the file, or None if there is none."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def keep_latest_checkpoint(path: Path, size: int, note: str) -> None:
    """Replace the file's checkpoint with ``note`` if it covers more entries (atomically)."""
    lock = os.open(path.with_name(path.name + ".lock"),
                   os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        # Several worker processes sign checkpoints; one at a time decides what the file
        # holds, so it never goes back to a smaller one.
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = read_latest_checkpoint(path)
        if current is not None and _size_of(current) >= size:
            return
        temporary = path.with_name(path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(note)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
    finally:
        os.close(lock)
