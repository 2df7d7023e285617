"""Files on a staff or partner machine: private, replaced atomically, durable if asked.

A plaintext output never sits under its final name until it is complete: it is written
to a 0600 temporary file next to it and renamed into place. ``fetch`` also flushes it to
the disk (``fsync``) before the rename, because it then records the file as delivered;
``encrypt -o`` and ``decrypt -o`` convert one file into another, as ``age -o``, ``cp``
and ``gpg -o`` do, and leave the flushing to the kernel. Writes go straight to the file
descriptor in the caller's blocks (no buffering layer copies them again), or, when a
core is free (:func:`gateway.client.cores.spare_core`), from a thread of their own
(:class:`BackgroundWriter`): the kernel's copy into the page cache costs about as much
CPU as reading and decrypting together, so on two idle cores it runs beside them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import threading
from collections.abc import Callable, Iterator
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


# Output goes to the kernel in pieces that end on multiples of this in the file. A large
# aligned write lets the page cache allocate large folios for it, and on the (virtual)
# machine we measured those came at several times the system time of small ones: 1 GiB
# written in 256 KiB calls cost 1.0-1.8 s of system time, in 128 KiB calls 0.8-1.7 s, in
# aligned 32 KiB calls 0.31-0.45 s in 7 runs of 8 (Linux 6.18, ext4). Unaligned pieces
# cost more again (0.55-0.62 s in 32 KiB calls after a 200-byte header; age, whose 64 KiB
# + 16 byte writes are never aligned, 0.38-0.59 s). The extra calls cost a few ms per GiB.
WRITE_PIECE = 32 * 1024


def write_at(fd: int, data: memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` of the file (``pwrite``, so threads may write
    different parts of one file at once), in pieces that end on multiples of
    :data:`WRITE_PIECE`."""
    while data:
        written = os.pwrite(fd, data[:WRITE_PIECE - offset % WRITE_PIECE], offset)
        offset += written
        data = data[written:]


# A writer that will be made durable starts the disk writes of every this much behind
# it, so that the final fsync finds little left to wait for.
WRITEBACK_STEP = 16 << 20


class OutputWriter:
    """A binary sink over a file descriptor; :meth:`finish` may make it durable.

    With ``early_writeback`` (for output that :meth:`finish` will make durable), the
    kernel is asked to start writing each :data:`WRITEBACK_STEP` to the disk as soon as
    it is written (``POSIX_FADV_DONTNEED``, which starts the writeback without waiting
    for it and lets the pages go once written), instead of all of it at the fsync.
    """

    def __init__(self, fd: int, *, early_writeback: bool = False) -> None:
        self._fd = fd
        try:
            self._offset = os.lseek(fd, 0, os.SEEK_CUR)
        except OSError:  # Not a file: the pieces' alignment does not matter.
            self._offset = 0
        self._written_back = self._offset if early_writeback else None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        while view:
            piece = WRITE_PIECE - self._offset % WRITE_PIECE
            written = os.write(self._fd, view[:piece])
            self._offset += written
            view = view[written:]
        start = self._written_back
        if start is not None and self._offset - start >= WRITEBACK_STEP:
            with contextlib.suppress(OSError, AttributeError):  # Only advice.
                os.posix_fadvise(self._fd, start, self._offset - start,
                                 os.POSIX_FADV_DONTNEED)
            self._written_back = self._offset
        return size

    @property
    def fd(self) -> int:
        """The file descriptor written to, for callers that place writes themselves
        (:func:`write_at`)."""
        return self._fd

    def finish(self, *, durable: bool) -> None:
        """With ``durable``, wait until everything written is on disk."""
        if durable:
            os.fsync(self._fd)

    def fill(self, read: Callable[[memoryview], int], buffer: memoryview) -> int:
        """Let ``read`` fill ``buffer`` and write what it put there; return the count."""
        count = read(buffer)
        if count:
            self.write(buffer[:count])
        return count

    def stop(self) -> None:
        """Give up: nothing more will be written (the caller removes the file)."""


# A background writer holds at most this much not yet written: 8 slots of 512 KiB. A
# deeper ring absorbs the scheduler's delays in waking the writer on a busy machine.
_SLOT = 512 * 1024
_SLOTS = 8


class BackgroundWriter(OutputWriter):
    """An :class:`OutputWriter` whose ``os.write`` calls run in a thread of their own.

    :meth:`write` copies the data into a free slot of a small ring (callers reuse their
    buffers) and returns; the thread writes the slots in order. A write error is raised
    by the next :meth:`write`, or by :meth:`finish`, which waits for every slot to be
    written before it flushes. :meth:`stop` ends the thread without raising.
    """

    def __init__(self, fd: int) -> None:
        super().__init__(fd)
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(_SLOTS):
            self._free.put(bytearray(_SLOT))
        self._full: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        self._error: OSError | None = None
        self._thread: threading.Thread | None = threading.Thread(
            target=self._run, name="blindpost-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._full.get()) is not None:
            slot, size = item
            if self._error is None:
                try:
                    with memoryview(slot) as view:
                        super().write(view[:size])
                except OSError as exc:
                    # Kept for the producer; the ring keeps draining so it never waits.
                    self._error = exc
            self._free.put(slot)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        for start in range(0, len(view), _SLOT):
            piece = view[start:start + _SLOT]
            slot = self._take()
            slot[:len(piece)] = piece
            self._full.put((slot, len(piece)))
        return len(view)

    def fill(self, read: Callable[[memoryview], int], buffer: memoryview) -> int:
        """As :meth:`OutputWriter.fill`, but ``read`` fills a free slot instead of
        ``buffer`` (up to the smaller of their sizes), which is then written as it is: no
        copy."""
        slot = self._take()
        with memoryview(slot) as view:
            count = read(view[:min(len(buffer), _SLOT)])
        if count:
            self._full.put((slot, count))
        else:
            self._free.put(slot)
        return count

    def _take(self) -> bytearray:
        if self._error is not None:
            raise self._error
        return self._free.get()

    def finish(self, *, durable: bool) -> None:
        self._join()
        if self._error is not None:
            raise self._error
        super().finish(durable=durable)

    def stop(self) -> None:
        self._join()

    def _join(self) -> None:
        if self._thread is not None:
            self._full.put(None)
            self._thread.join()
            self._thread = None


class ReadAhead:
    """Reads a file ahead in a thread of its own: the blocks come out in order, each a
    view of a slot that stays valid until the next one is asked for.

    ``encrypt -o`` uses it with :class:`BackgroundWriter` when a core is free: one thread
    reads, one seals, one writes. A read error is raised where the block would have been.
    """

    def __init__(self, read: Callable[[memoryview], int | None], *, block: int) -> None:
        self._read = read
        self._free: queue.SimpleQueue[bytearray | None] = queue.SimpleQueue()
        for _ in range(_SLOTS // 2):
            self._free.put(bytearray(block))
        self._full: queue.SimpleQueue[tuple[bytearray, int] | OSError] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="blindpost-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (slot := self._free.get()) is not None:
            try:
                with memoryview(slot) as view:
                    count = self._read(view) or 0
            except OSError as exc:
                self._full.put(exc)
                return
            self._full.put((slot, count))
            if not count:
                return

    def __iter__(self) -> Iterator[memoryview]:
        while True:
            item = self._full.get()
            if isinstance(item, OSError):
                raise item
            slot, count = item
            if not count:
                return
            with memoryview(slot) as view:
                yield view[:count]
            self._free.put(slot)

    def close(self) -> None:
        """Stop reading (at the end, or when the caller gives up) and wait for the thread."""
        self._free.put(None)
        self._thread.join()


# Flags for a new private file: as tempfile.mkstemp opens its files.
_NEW_FILE = (os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_CLOEXEC", 0))


def _new_private_file(path: Path) -> tuple[int, str]:
    """Create ``.NAME.RANDOM.part`` next to ``path``, 0600, open for reading and
    writing, as ``tempfile.mkstemp`` would; without importing tempfile (and its random
    and shutil), which cost `blindpost encrypt` and `decrypt` some 3 ms of their start."""
    for _ in range(100):
        name = str(path.parent / f".{path.name}.{os.urandom(6).hex()}.part")
        try:
            return os.open(name, _NEW_FILE, 0o600), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(path.parent))


@contextlib.contextmanager
def atomic_output(path: Path, *, durable: bool = True,
                  background: bool = False) -> Iterator[OutputWriter]:
    """A private temporary file next to ``path``, renamed to it only on success.

    With ``background``, the writes run in a thread of their own (:class:`BackgroundWriter`).

    On success, with ``durable``, the data and the rename are on disk when the block
    ends; without, the kernel writes them back in its own time (a crash soon after
    may leave an empty or partial file under ``path``, as with ``cp``). On any error
    the temporary file is removed and ``path`` is untouched.
    """
    fd, temporary = _new_private_file(path)
    sink = BackgroundWriter(fd) if background else OutputWriter(fd)
    try:
        yield sink
        sink.finish(durable=durable)
        os.close(fd)
        fd = -1
        Path(temporary).replace(path)
        if durable:
            sync_directory(path.parent)
    except BaseException:
        sink.stop()
        if fd >= 0:
            os.close(fd)
        Path(temporary).unlink(missing_ok=True)
        raise
