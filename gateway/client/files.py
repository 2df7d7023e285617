"""Files on a staff or partner machine: private, replaced atomically, durable if asked.

A plaintext output never sits under its final name until it is complete: it is written
to a 0600 temporary file next to it and renamed into place. ``fetch`` also flushes it to
the disk (``fsync``) before the rename, because it then records the file as delivered;
``encrypt -o`` and ``decrypt -o`` convert one file into another, as ``age -o``, ``cp``
and ``gpg -o`` do, and leave the flushing to the kernel. Writes go straight to the file
descriptor in the caller's blocks (no buffering layer copies them again), optionally
from a thread of their own, so that the next block is decrypted while one is written.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
    """A binary sink over a file descriptor.

    With ``background``, :meth:`write` hands the block to a writer thread and returns;
    the caller may not change that block until its next :meth:`write` returns (which
    waits for the block before). ``os.write`` releases the GIL, so decryption and the
    kernel's copying run side by side. :meth:`finish` waits for the last block and
    raises the first write error.
    """

    def __init__(self, fd: int, *, background: bool = False) -> None:
        self._fd = fd
        self._pool = ThreadPoolExecutor(1, "blindpost-write") if background else None
        self._pending: Future[None] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        if self._pool is None:
            self._write_all(view)
            return len(view)
        self._wait()
        self._pending = self._pool.submit(self._write_all, view)
        return len(view)

    def _write_all(self, view: memoryview) -> None:
        while view:
            view = view[os.write(self._fd, view):]

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def finish(self, *, durable: bool) -> None:
        """Wait for every write; with ``durable``, until it is on disk too."""
        self.close()
        if durable:
            os.fsync(self._fd)

    def close(self) -> None:
        """Wait for the write in progress and stop the writer thread."""
        try:
            self._wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None


@contextlib.contextmanager
def atomic_output(path: Path, *, durable: bool = True,
                  background: bool = False) -> Iterator[OutputWriter]:
    """A private temporary file next to ``path``, renamed to it only on success.

    On success, with ``durable``, the data and the rename are on disk when the block
    ends; without, the kernel writes them back in its own time (a crash soon after
    may leave an empty or partial file under ``path``, as with ``cp``). On any error
    the temporary file is removed and ``path`` is untouched.
    """
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    sink = OutputWriter(fd, background=background)
    try:
        yield sink
        sink.finish(durable=durable)
        os.close(fd)
        fd = -1
        Path(temporary).replace(path)
        if durable:
            sync_directory(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            sink.close()
        if fd >= 0:
            os.close(fd)
        Path(temporary).unlink(missing_ok=True)
        raise
