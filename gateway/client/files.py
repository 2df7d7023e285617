"""Files on a staff or partner machine: private, replaced atomically, durable if asked.

A plaintext output never sits under its final name until it is complete: it is written
to a 0600 temporary file next to it and renamed into place. ``fetch`` also flushes it to
the disk (``fsync``) before the rename, because it then records the file as delivered;
``encrypt -o`` and ``decrypt -o`` convert one file into another, as ``age -o``, ``cp``
and ``gpg -o`` do, and leave the flushing to the kernel. Writes go straight to the file
descriptor in the caller's blocks (no buffering layer copies them again). (A writer
thread of its own measured no faster once the blocks were small enough to stay in
the cache; see :mod:`gateway.client.cores`.)
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


class OutputWriter:
    """A binary sink over a file descriptor; :meth:`finish` may make it durable."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        while view:
            view = view[os.write(self._fd, view):]
        return size

    def finish(self, *, durable: bool) -> None:
        """With ``durable``, wait until everything written is on disk."""
        if durable:
            os.fsync(self._fd)


@contextlib.contextmanager
def atomic_output(path: Path, *, durable: bool = True) -> Iterator[OutputWriter]:
    """A private temporary file next to ``path``, renamed to it only on success.

    On success, with ``durable``, the data and the rename are on disk when the block
    ends; without, the kernel writes them back in its own time (a crash soon after
    may leave an empty or partial file under ``path``, as with ``cp``). On any error
    the temporary file is removed and ``path`` is untouched.
    """
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    sink = OutputWriter(fd)
    try:
        yield sink
        sink.finish(durable=durable)
        os.close(fd)
        fd = -1
        Path(temporary).replace(path)
        if durable:
            sync_directory(path.parent)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(temporary).unlink(missing_ok=True)
        raise
