"""Files on a staff or partner machine: private, replaced atomically, durable.

A plaintext output never sits under its final name until it is complete and on disk:
it is written to a 0600 temporary file next to it, flushed to the disk (``fsync``) and
renamed into place. Writes go straight to the file descriptor, in the caller's blocks
(1 MiB): no buffering layer copies them again. (Asking the kernel to start writing back
early, with ``posix_fadvise``, or writing from a second thread, measured no faster in
bench/clients.py and cost more CPU.)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def write_private_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: 0600, atomically, durably; parents made 0700."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with atomic_output(path) as sink:
        sink.write(text.encode("utf-8"))


def sync_directory(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DurableWriter:
    """A binary sink over a file descriptor; :meth:`finish` makes it durable."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        while view:
            view = view[os.write(self._fd, view):]
        return size

    def finish(self) -> None:
        """Wait until everything written is on disk."""
        os.fsync(self._fd)


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[DurableWriter]:
    """A private temporary file next to ``path``, renamed to it only on success.

    On success the data and the rename are on disk when the block ends; on any error
    the temporary file is removed and ``path`` is untouched.
    """
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        sink = DurableWriter(fd)
        yield sink
        sink.finish()
        os.close(fd)
        fd = -1
        Path(temporary).replace(path)
        sync_directory(path.parent)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(temporary).unlink(missing_ok=True)
        raise
