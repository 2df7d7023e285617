"""``encrypt -o`` and ``decrypt -o`` between regular files: batches of chunks on every core.

age's payload chunks are independent of each other (a chunk's nonce is its index, and
only the final chunk is flagged), and the output's size follows from the input's. So a
regular file is cut into batches of whole chunks, and one worker per core takes the next
batch not yet taken, reads it (``pread``), seals or opens it, and writes it (``pwrite``)
where it belongs in the output. Taking batches as they come, rather than each worker a
fixed half of the file, keeps every worker busy to the end when the cores are shared:
a worker that the scheduler holds back takes fewer batches instead of leaving the
others done and waiting for its half (with a busy loop pinned to one of 2 cores, 256 MiB
encrypted in a median 345 ms against 389 ms in halves, 7 rounds each). So the reading,
the cryptography and the kernel's copying into the page cache (which costs as much CPU
as the cryptography) run on every core; Go's age does all of it in one thread. Standard
input and output, and armor, whose chunks have no fixed offsets, take the streaming path
(:mod:`gateway.cli.conversions`).

The workers are this process and, for each further core, a helper forked from it
(:func:`_start_helper`), not threads. ChaCha20-Poly1305 and the system calls release
the GIL, but a batch gives it up and takes it back some 50 times (16 chunks, a
``pread``, 32 ``pwrite`` pieces), and two threads handing it to each other spent a
tenth of their samples in the futex calls of the hand-over (a profile) and waited for
it besides: 256 MiB encrypted in-process took a median 135-183 ms and 217-243 ms of CPU
with two threads, 102-105 ms and 196-209 ms with this process and one helper (3 runs of
7 each, alternating, load 1.9). The processes share what threads shared through one
anonymous shared mapping (:class:`_Board`: the next batch, a stop flag, the bytes done)
and the output's file descriptor; a helper ends with ``os._exit`` and never returns into
the caller's code, tells its failure on a pipe (its kind and message as text, which the
parent raises again for the kinds a helper can fail of, :func:`_failure`),
and stops at its next batch if the board says stop or its parent is gone. A failure
here kills the helpers (``SIGKILL``) before the caller removes the output.

The output is the private temporary file of :func:`gateway.client.files.atomic_output`,
renamed into place only after every batch is done; its blocks are allocated first
(:func:`_set_size`). When decrypting, a chunk reaches that file only once it verified
(a chunk that fails is zeroed in the buffer, never written), and the first failure stops
every worker, so the command fails as the streaming path does and leaves no file behind.

A batch is 16 chunks (1 MiB; 8, 32 and 64 measured within 3% of it with processes); it
is written in pieces that end on multiples of :data:`gateway.client.files.WRITE_PIECE`,
which the kernel serves far more cheaply than large ones, and one worker at a time (a
lock held for the batch's writes, :class:`_Lock`). The kernel writes into one file's
page cache one call at a time anyway, and a worker that finds the file's lock taken
spins in the kernel while the other writes: with threads, in 4-chunk batches without
the lock, 256 MiB encrypted in-process took a median 158 ms and 174 ms of system time,
in 16-chunk batches with it 144 ms and 140 ms (7 runs each, load 1.1-3); 1 GiB, 655 ms
(692 ms) against 481 ms (480 ms); with processes, medians of 113-119 ms without the
lock and 102-103 ms with it (3 runs of 7 each, alternating). Whole batches in one
``pwrite`` were faster in most runs (256 MiB in 110-115 ms, threads) but, as the page
cache then takes large folios, one run in two to four cost 2.5-5 s of system time at 1
GiB, most of it copying into the folios and the other thread spinning for the lock (a
profile); one ``pwritev`` of a batch's 32 KiB pieces is no different (the kernel sizes
the folios by the whole call: 256 MiB written in 282 ms against 59 ms in ``pwrite``
pieces, once in four runs).

Sealing straight into a shared mapping of the output (``encrypt_into`` on an ``mmap`` of
the allocated file, no ``pwrite`` copy) was measured and not kept: 256 MiB encrypted
took 290-335 ms of CPU in most runs against 337-367 ms with ``pwrite``, but 1 run in 4
took 500-790 ms, the kernel zeroing read-ahead pages of the unwritten extents (a
profile: half the samples in ``memset`` under ``read_pages``); ``MADV_RANDOM`` made every
run slower (530-570 ms). Decrypting could not use it anyway: ``decrypt_into`` writes the
plaintext before it checks the tag, so a mapping would put an unverified chunk in the
file's pages. Nor is the input mapped: a file cut short while it is read fails a
``pread``, but kills (``SIGBUS``) a process that reads it through a mapping.
"""

from __future__ import annotations

import errno
import functools
import mmap
import os
import warnings
from collections.abc import Callable
from typing import NamedTuple, NoReturn

from gateway import envelope
from gateway.client.files import write_at
from gateway.errors import GatewayError

# Chunks per batch: 1 MiB of plaintext, written under the lock in one go (see above).
_BATCH = 16


_CHANGED = "the input changed size while it was being read; nothing was written"


class ChangedInputError(GatewayError):
    """The input file changed size while it was being read."""


class HelperLostError(GatewayError):
    """A helper process ended without saying why (a signal, say)."""


# The failures a helper raises again in its parent by kind (OSError apart), from their
# messages; what a helper says is at most this long.
_REBUILT: dict[str, Callable[[str], BaseException]] = {
    "ChangedInputError": ChangedInputError,
    "PayloadError": envelope.PayloadError,
    "HelperLostError": HelperLostError,
    "KeyboardInterrupt": lambda _message: KeyboardInterrupt(),
}
_SAID_LIMIT = 4096


class _Layout(NamedTuple):
    """Where chunk ``i`` is read from and written to: ``read_start + i * read_step`` and
    ``write_start + i * write_step``; the input's size and how many chunks it holds."""

    read_start: int
    read_step: int
    write_start: int
    write_step: int
    size: int
    chunks: int


def encrypt_file(source: int, sink: int, sealer: envelope.PayloadSealer, *, workers: int,
                 progress: Callable[[int], None] | None = None) -> None:
    """Write the age file of the regular file ``source`` to ``sink`` (an empty file),
    sealed by ``sealer``, by ``workers`` processes (this one and helpers); ``progress``
    is told the plaintext bytes done, from time to time."""
    size = os.fstat(source).st_size
    start = sealer.payload_start
    _set_size(sink, start + envelope.sealed_size(size))
    write_at(sink, memoryview(sealer.header), 0)
    layout = _Layout(0, envelope.CHUNK_SIZE, start, envelope.ENCRYPTED_CHUNK_SIZE, size,
                     max(1, -(-size // envelope.CHUNK_SIZE)))

    def seal(first: int, data: memoryview, out: memoryview, final: bool) -> int:
        return sealer.seal_at(first, data, out, final=final)

    _in_ranges(source, sink, layout, seal, workers=workers, progress=progress)
    if os.fstat(source).st_size != size:
        # It grew: what was sealed is not the whole of it.
        raise ChangedInputError(_CHANGED)


def decrypt_file(source: int, sink: int, decryptor: envelope.Decryptor, *, workers: int,
                 progress: Callable[[int], None] | None = None) -> None:
    """Write the plaintext of the binary age file ``source``, whose header
    ``decryptor`` read, to ``sink`` (an empty file) by ``workers`` processes. Raises
    :class:`envelope.PayloadError` if any chunk fails to verify or the file is cut;
    ``sink`` then holds only verified chunks, and not all of them."""
    start = decryptor.payload_start
    if start is None:
        raise ValueError("only a binary age file has chunks at fixed offsets")
    size = os.fstat(source).st_size
    plain = envelope.plain_size(size - start)
    if plain is None:
        raise envelope.PayloadError("payload is truncated")
    _set_size(sink, plain)
    layout = _Layout(start, envelope.ENCRYPTED_CHUNK_SIZE, 0, envelope.CHUNK_SIZE, size,
                     max(1, -(-(size - start) // envelope.ENCRYPTED_CHUNK_SIZE)))

    def open_(first: int, data: memoryview, out: memoryview, final: bool) -> int:
        return decryptor.open_at(first, data, out, final=final)

    _in_ranges(source, sink, layout, open_, workers=workers, progress=progress)


def _set_size(sink: int, size: int) -> None:
    """Allocate the output's blocks before the workers write. Measured on ext4 (1 GiB,
    3 rounds each, load 1.3): system time 0.79-0.93 s encrypting and 0.66-0.76 s
    decrypting with ``posix_fallocate``, 0.99-1.11 s and 0.79-0.98 s without, and no
    better than without when the size was only set (``ftruncate``). A full disk fails
    here, before any work. Where the file system cannot allocate (some FUSE file
    systems), glibc writes a zero byte into every block instead, which is slower."""
    if size:
        try:
            os.posix_fallocate(sink, 0, size)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise
            # Not supported here: the writes allocate as they go.


_Transform = Callable[[int, memoryview, memoryview, bool], int]


class _Board:
    """What the workers share, in memory every process maps: the next batch to take,
    whether to stop, and each worker's plaintext bytes done (for the progress bar)."""

    _NEXT, _STOP, _DONE = 0, 1, 2

    def __init__(self, workers: int) -> None:
        self._map = mmap.mmap(-1, 8 * (self._DONE + workers))  # Shared, anonymous.
        self._cells = memoryview(self._map).cast("q")

    def take(self) -> int:
        """The next batch's number (under the lock: see :class:`_Lock`)."""
        number = self._cells[self._NEXT]
        self._cells[self._NEXT] = number + 1
        return number

    @property
    def stopped(self) -> bool:
        return bool(self._cells[self._STOP])

    def stop(self) -> None:
        self._cells[self._STOP] = 1

    def add_done(self, slot: int, count: int) -> None:
        self._cells[self._DONE + slot] += count

    def done(self) -> int:
        return sum(self._cells[self._DONE:])

    def close(self) -> None:
        self._cells.release()
        self._map.close()


class _Lock:
    """One worker at a time writes (and takes the next batch): a POSIX record lock on a
    byte of the output far past its end, which is each process's own and which the
    kernel releases if the process ends. Where the file system has no such locks the
    workers go on without it: the writes are still correct (each at its own offsets),
    and two workers that then take the same batch write the same bytes twice."""

    _BYTE = 1 << 62

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def __enter__(self) -> None:
        if self._fd is not None:
            try:
                import fcntl  # Here: only where helpers can be forked (not Windows).

                fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, self._BYTE)
            except OSError:
                self._fd = None

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, self._BYTE)


class _Helper(NamedTuple):
    """A helper process, and the pipe on which it says why it failed."""

    pid: int
    reasons: int


def _in_ranges(source: int, sink: int, layout: _Layout, transform: _Transform, *,
               workers: int, progress: Callable[[int], None] | None) -> None:
    """Run :func:`_batches` in this process and ``workers - 1`` helper processes over the
    file's batches of chunks; raise the first failure, after every helper has ended."""
    count = min(max(1, workers), -(-layout.chunks // _BATCH))
    if not hasattr(os, "fork"):
        count = 1  # Windows: this process does it all.
    board = _Board(count)
    lock = _Lock(sink if count > 1 else None)
    helpers: list[_Helper] = []
    report = None if progress is None else (
        lambda: progress(layout.read_start + board.done()))
    finished = False
    try:
        for slot in range(1, count):
            helper = _start_helper(functools.partial(
                _batches, source, sink, layout, transform, board, lock, slot=slot,
                report=None, parent=os.getpid()), board)
            if helper is None:
                break  # No more processes: fewer workers share the batches.
            helpers.append(helper)
        _batches(source, sink, layout, transform, board, lock, slot=0, report=report)
        finished = True
    finally:
        if not finished:
            board.stop()
        failure = _end(helpers, stopped=not finished)
        if finished and failure is None and report is not None:
            report()  # The helpers' last batches too.
        board.close()
    if failure is not None:
        raise failure


def _batches(source: int, sink: int, layout: _Layout, transform: _Transform,
             board: _Board, lock: _Lock, *, slot: int, report: Callable[[], None] | None,
             parent: int | None = None) -> None:
    """Take the next batch from ``board`` and do it, until none is left or the board
    says stop (or, in a helper, the ``parent`` process is gone)."""
    data = memoryview(bytearray(_BATCH * layout.read_step))
    out = memoryview(bytearray(_BATCH * layout.write_step))
    index = written = wanted = 0
    pending = False
    while True:
        with lock:
            if pending:
                write_at(sink, out[:written], layout.write_start + index * layout.write_step)
                board.add_done(slot, wanted)
            stop = board.stopped or (parent is not None and os.getppid() != parent)
            index = layout.chunks if stop else board.take() * _BATCH
        if report is not None:
            report()
        if index >= layout.chunks:
            return
        batch = min(_BATCH, layout.chunks - index)
        final = index + batch == layout.chunks
        offset = layout.read_start + index * layout.read_step
        wanted = (layout.size - offset if final else batch * layout.read_step)
        got = os.preadv(source, [data[:wanted]], offset) if wanted else 0
        if got != wanted:
            raise ChangedInputError(_CHANGED)
        written = transform(index, data[:wanted], out, final)
        pending = True


def _start_helper(work: Callable[[], None], board: _Board) -> _Helper | None:
    """Fork a process that does ``work`` and ends, or None if none can be made."""
    reasons, tell = os.pipe()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns of fork() beside other threads (a progress bar's, a test
            # runner's): a lock one of them held would stay held in the child. The child
            # takes none of theirs: it reads, seals or opens, writes and _exits.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:
        os.close(reasons)
        os.close(tell)
        return None
    if pid == 0:
        os.close(reasons)
        _helper_main(work, board, tell)
    os.close(tell)
    return _Helper(pid, reasons)


def _helper_main(work: Callable[[], None], board: _Board, tell: int) -> NoReturn:
    """A helper's whole life: ``work``, then ``os._exit``, never a return into the
    caller's code (whose clean-up, such as removing the output, is the parent's)."""
    code = 1
    try:
        work()
        code = 0
    except BaseException as exc:  # noqa: BLE001 - passed to the parent, which raises it.
        board.stop()
        _tell(tell, exc)
    finally:
        os._exit(code)


def _tell(fd: int, exc: BaseException) -> None:
    """Write what ``exc`` was, for the parent to raise again: its kind, then for an
    ``OSError`` its number, text and file name, else its message, one to a line (text,
    never pickled: nothing in Blindpost is)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        fields = ["OSError", str(exc.errno), exc.strerror or "", str(exc.filename or "")]
    else:
        fields = [type(exc).__name__, str(exc)]
    os.write(fd, "\n".join(field.replace("\n", " ") for field in fields)
             .encode("utf-8", "replace")[:_SAID_LIMIT])


def _end(helpers: list[_Helper], *, stopped: bool) -> BaseException | None:
    """Wait for every helper (killing them if ``stopped``: this process failed) and
    return the first one's failure, if one failed."""
    if stopped and helpers:
        import signal

        for helper in helpers:
            os.kill(helper.pid, signal.SIGKILL)
    failures: list[BaseException] = []
    for helper in helpers:
        said = _read_all(helper.reasons)
        os.close(helper.reasons)
        _, status = os.waitpid(helper.pid, 0)
        if not stopped and status:
            failures.append(_failure(said, status))
    return failures[0] if failures else None


def _read_all(fd: int) -> bytes:
    parts = []
    while part := os.read(fd, 65536):
        parts.append(part)
    return b"".join(parts)


def _failure(said: bytes, status: int) -> BaseException:
    """What a helper that ended with ``status`` failed of, from what it ``said``
    (:func:`_tell`): the same failure for the kinds a helper meets (the file's, the
    disk's, a damaged chunk's, Ctrl-C), a :class:`HelperLostError` naming any other."""
    if said:
        kind, *fields = said.decode("utf-8", "replace").split("\n")
        if kind == "OSError" and len(fields) == 3 and fields[0].isdigit():
            return OSError(int(fields[0]), fields[1], fields[2] or None)
        message = fields[0] if fields else ""
        rebuild = _REBUILT.get(kind)
        if rebuild is not None:
            return rebuild(message)
        return HelperLostError(f"a helper process failed: {kind}: {message}")
    code = os.waitstatus_to_exitcode(status)
    how = f"signal {-code}" if code < 0 else f"exit status {code}"
    return HelperLostError(f"a helper process ended before it was done ({how})")
