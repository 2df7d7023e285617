"""``encrypt -o`` and ``decrypt -o`` between regular files: batches of chunks on every core.

age's payload chunks are independent of each other (a chunk's nonce is its index, and
only the final chunk is flagged), and the output's size follows from the input's. So a
regular file is cut into batches of whole chunks, and one thread per core takes the next
batch not yet taken, reads it (``pread``), seals or opens it, and writes it (``pwrite``)
where it belongs in the output. Taking batches as they come, rather than each thread a
fixed half of the file, keeps every thread busy to the end when the cores are shared:
a thread that the scheduler holds back takes fewer batches instead of leaving the
others done and waiting for its half (with a busy loop pinned to one of 2 cores, 256 MiB
encrypted in a median 345 ms against 389 ms in halves, 7 rounds each). ChaCha20-Poly1305
and the system calls release the GIL, so the reading, the cryptography and the
kernel's copying into the page cache (which costs as much CPU as the cryptography) run
on every core; Go's age does all of it in one thread. Standard input and output, and
armor, whose chunks have no fixed offsets, take the streaming path
(:mod:`gateway.cli.conversions`).

The output is the private temporary file of :func:`gateway.client.files.atomic_output`,
renamed into place only after every batch is done; its blocks are allocated first
(:func:`_set_size`). When decrypting, a chunk reaches that file only once it verified
(a chunk that fails is zeroed in the buffer, never written), and the first failure stops
every thread, so the command fails as the streaming path does and leaves no file behind.

A batch is 16 chunks (1 MiB); it is written in pieces that end on multiples of
:data:`gateway.client.files.WRITE_PIECE`, which the kernel serves far more cheaply than
large ones, and one thread at a time (a lock held for the batch's writes). The kernel
writes into one file's page cache one call at a time anyway, and a thread that finds the
file's lock taken spins in the kernel while the other writes: in 4-chunk batches without
the lock, 256 MiB encrypted in-process took a median 158 ms and 174 ms of system time,
in 16-chunk batches with it 144 ms and 140 ms (7 runs each, load 1.1-3); 1 GiB, 655 ms
(692 ms) against 481 ms (480 ms). Whole batches in one ``pwrite`` were faster in most
runs (256 MiB in 110-115 ms) but, as the page cache then takes large folios, one run in
two to four cost 2.5-5 s of system time at 1 GiB, most of it copying into the folios
and the other thread spinning for the lock (a profile).

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
import itertools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from gateway import envelope
from gateway.client.files import write_at
from gateway.errors import GatewayError

# Chunks per batch: 1 MiB of plaintext, written under the lock in one go (see above).
_BATCH = 16


_CHANGED = "the input changed size while it was being read; nothing was written"


class ChangedInputError(GatewayError):
    """The input file changed size while it was being read."""


class _Layout(NamedTuple):
    """Where chunk ``i`` is read from and written to: ``read_start + i * read_step`` and
    ``write_start + i * write_step``; the input's size and how many chunks it holds."""

    read_start: int
    read_step: int
    write_start: int
    write_step: int
    size: int
    chunks: int


def encrypt_file(source: int, sink: int, sealer: envelope.PayloadSealer, *, threads: int,
                 progress: Callable[[int], None] | None = None) -> None:
    """Write the age file of the regular file ``source`` to ``sink`` (an empty file),
    sealed by ``sealer``, by ``threads`` threads; ``progress`` is told the plaintext
    bytes done, from time to time."""
    size = os.fstat(source).st_size
    start = sealer.payload_start
    _set_size(sink, start + envelope.sealed_size(size))
    write_at(sink, memoryview(sealer.header), 0)
    layout = _Layout(0, envelope.CHUNK_SIZE, start, envelope.ENCRYPTED_CHUNK_SIZE, size,
                     max(1, -(-size // envelope.CHUNK_SIZE)))

    def seal(first: int, data: memoryview, out: memoryview, final: bool) -> int:
        return sealer.seal_at(first, data, out, final=final)

    _in_ranges(source, sink, layout, seal, threads=threads, progress=progress)
    if os.fstat(source).st_size != size:
        # It grew: what was sealed is not the whole of it.
        raise ChangedInputError(_CHANGED)


def decrypt_file(source: int, sink: int, decryptor: envelope.Decryptor, *, threads: int,
                 progress: Callable[[int], None] | None = None) -> None:
    """Write the plaintext of the binary age file ``source``, whose header
    ``decryptor`` read, to ``sink`` (an empty file) by ``threads`` threads. Raises
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

    _in_ranges(source, sink, layout, open_, threads=threads, progress=progress)


def _set_size(sink: int, size: int) -> None:
    """Allocate the output's blocks before the threads write. Measured on ext4 (1 GiB,
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


def _in_ranges(source: int, sink: int, layout: _Layout, transform: _Transform, *,
               threads: int, progress: Callable[[int], None] | None) -> None:
    """Run :func:`_batches` in ``threads`` threads over the file's batches of chunks;
    raise the first failure, after every thread has stopped."""
    count = min(max(1, threads), -(-layout.chunks // _BATCH))
    # The batches' numbers, handed out in order: next() of a count is atomic.
    batches = itertools.count()
    done = [0] * count
    failures: list[BaseException] = []
    stop = threading.Event()
    # One thread writes at a time; the others read and seal or open meanwhile.
    writing = threading.Lock()

    def run(index: int) -> None:
        try:
            _batches(source, sink, layout, transform, batches, done=done, slot=index,
                     stop=stop, writing=writing)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller's thread.
            failures.append(exc)
            stop.set()

    workers = [threading.Thread(target=run, args=(n,), name=f"blindpost-range-{n}",
                                daemon=True) for n in range(count)]
    for worker in workers:
        worker.start()
    _wait(workers, done, None if progress is None else
          lambda count: progress(layout.read_start + count))
    if failures:
        raise failures[0]


def _wait(workers: Sequence[threading.Thread], done: list[int],
          progress: Callable[[int], None] | None) -> None:
    for worker in workers:
        while worker.is_alive():
            worker.join(0.1 if progress is not None else None)
            if progress is not None:
                progress(sum(done))


def _batches(source: int, sink: int, layout: _Layout, transform: _Transform,
             batches: Iterator[int], *, done: list[int], slot: int,
             stop: threading.Event, writing: threading.Lock) -> None:
    """Take the next batch from ``batches`` and do it, until none is left or ``stop``
    is set."""
    data = memoryview(bytearray(_BATCH * layout.read_step))
    out = memoryview(bytearray(_BATCH * layout.write_step))
    while not stop.is_set():
        index = next(batches) * _BATCH
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
        with writing:
            write_at(sink, out[:written], layout.write_start + index * layout.write_step)
        done[slot] += wanted
