"""Files on a staff or partner machine: private, replaced atomically, durable.

A plaintext output never sits under its final name until it is complete and on disk:
it is written to a 0600 temporary file next to it, flushed to the disk (``fsync``) and
renamed into place. Writing is done by a second thread, so the copy into the page cache
overlaps the decryption, and a third thread starts the disk writes early, so the final
``fsync`` waits only for the last few MiB instead of the whole file.
"""

from __future__ import annotations

import contextlib
import os
import queue
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

# Blocks handed to the writer thread, and how many may wait: 4 x 1 MiB in flight.
_BLOCK = 1 << 20
_DEPTH = 4
# Ask the disk to catch up after every this many bytes.
_SYNC_EVERY = 64 << 20


def write_private_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: 0600, atomically, durably; parents made 0700."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with atomic_output(path) as sink:
        sink.write(text.encode("utf-8"))


def sync_directory(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Syncer:
    """Calls ``fdatasync`` in the background whenever asked, at most one at a time."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._wanted = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="blindpost-sync", daemon=True)
        self._thread.start()

    def request(self) -> None:
        self._wanted.set()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stopping:
                return
            with contextlib.suppress(OSError):
                # Only a head start: the final fsync reports any error.
                os.fdatasync(self._fd)

    def stop(self) -> None:
        self._stopping = True
        self._wanted.set()
        self._thread.join()


class BackgroundWriter:
    """A binary sink that writes to ``fd`` from a second thread.

    :meth:`write` copies the caller's bytes (so it may reuse its buffer) and returns;
    :meth:`finish` waits until everything is written and raises the first error. Used
    as a context manager it always stops its threads; only ``finish`` makes it durable.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(_DEPTH):
            self._free.put(bytearray(_BLOCK))
        self._full: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        self._error: OSError | None = None
        self._syncer = _Syncer(fd)
        self._thread = threading.Thread(target=self._run, name="blindpost-write", daemon=True)
        self._thread.start()
        self._stopped = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            self._raise_error()
            block = self._free.get()
            count = min(len(view) - done, _BLOCK)
            block[:count] = view[done:done + count]
            self._full.put((block, count))
            done += count
        return done

    def finish(self) -> None:
        """Write everything out, ``fsync`` it, and raise the first write error."""
        self._stop()
        self._raise_error()
        os.fsync(self._fd)

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        unsynced = 0
        while (item := self._full.get()) is not None:
            block, count = item
            if self._error is None:
                try:
                    _write_all(self._fd, memoryview(block)[:count])
                except OSError as exc:
                    self._error = exc
                unsynced += count
                if unsynced >= _SYNC_EVERY:
                    self._syncer.request()
                    unsynced = 0
            self._free.put(block)

    def _stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._full.put(None)
            self._thread.join()
            self._syncer.stop()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop()


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        written = os.write(fd, view)
        view = view[written:]


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[BackgroundWriter]:
    """A private temporary file next to ``path``, renamed to it only on success.

    On success the data and the rename are on disk when the block ends; on any error
    the temporary file is removed and ``path`` is untouched.
    """
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with BackgroundWriter(fd) as sink:
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
