"""Streaming encryption to age recipients: :class:`Encryptor`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

from gateway.envelope.errors import RecipientError
from gateway.envelope.format import FILE_KEY_SIZE, encode_header
from gateway.envelope.recipient import Recipient
from gateway.envelope.stream import (
    CHUNK_SIZE,
    ENCRYPTED_CHUNK_SIZE,
    PAYLOAD_NONCE_SIZE,
    TAG_SIZE,
    ChunkSealer,
    Halves,
    payload_key,
)

if TYPE_CHECKING:
    from gateway.envelope.armor import ArmorWriter, Writable

Buffer = bytes | bytearray | memoryview
# Sealed chunks are handed to the sink in batches of up to 1 MiB: one write call
# per batch instead of one per chunk.
BATCH_CHUNKS = 16


def check_recipients(recipients: Sequence[Recipient]) -> None:
    """Raise :class:`RecipientError` unless ``recipients`` can share one file.

    The list must not be empty, and must not mix post-quantum and classical
    recipients: the age spec advises against it, since the classical stanza would
    let a future quantum attacker read a file meant to resist one.
    """
    if not recipients:
        raise RecipientError("at least one recipient is required")
    if len({r.is_post_quantum for r in recipients}) > 1:
        raise RecipientError(
            "refusing to encrypt to both post-quantum and classical recipients: "
            "the classical key would undo the post-quantum protection"
        )


def _new_file(recipients: Sequence[Recipient]) -> tuple[bytes, ChunkSealer]:
    """A fresh file key wrapped to ``recipients``: the file's header (with the payload
    nonce after it) and the sealer of its chunks."""
    check_recipients(recipients)
    file_key = os.urandom(FILE_KEY_SIZE)
    stanzas = [recipient.wrap(file_key) for recipient in recipients]
    nonce = os.urandom(PAYLOAD_NONCE_SIZE)
    return encode_header(stanzas, file_key) + nonce, ChunkSealer(payload_key(file_key, nonce))


class Encryptor:
    """A writable stream that encrypts to ``recipients`` and writes age to ``sink``.

    Memory use is constant (one plaintext chunk and one batch of sealed chunks)
    whatever the file size. The header is written at construction; each 64 KiB chunk
    once the byte after it arrives; the final chunk only at :meth:`close`, so an
    upload that is cut short never looks complete. Leaving a ``with`` block by an
    exception calls :meth:`abort`, not :meth:`close`, for the same reason. The sink
    is not closed.

    ``sink.write`` receives views of a buffer that is reused, so it must consume
    the data before returning, as files and sockets do (the :class:`io.RawIOBase`
    contract). With ``threads=2`` whole chunks are sealed in two threads. Sealed chunks
    reach the sink ``batch_chunks`` at a time at most (the batch is held for the
    object's life: a server encrypting many uploads at once keeps it small).

    The file key lives only in this object's memory, and is dropped at close or
    abort. Nothing secret is reachable from the object afterwards.
    """

    def __init__(
        self,
        sink: Writable,
        recipients: Sequence[Recipient],
        *,
        armor: bool = False,
        threads: int = 1,
        batch_chunks: int = BATCH_CHUNKS,
    ) -> None:
        if batch_chunks < 1:
            raise ValueError("batch_chunks must be at least 1")
        self._armor: ArmorWriter | None = None
        if armor:
            # Imported only for armor: binary output (`encrypt -o`) starts without it.
            from gateway.envelope.armor import ArmorWriter as _ArmorWriter

            self._armor = _ArmorWriter(sink)
        self._sink: Writable = self._armor or sink
        header, sealer = _new_file(recipients)
        self._sink.write(header)
        self._sealer: ChunkSealer | None = sealer
        # Both buffers are allocated once: fresh large allocations cost page faults
        # on every write, which showed up as a 20% loss in bench/envelope.py.
        self._pending = memoryview(bytearray(CHUNK_SIZE))
        self._pending_size = 0
        self._batch = memoryview(bytearray(batch_chunks * ENCRYPTED_CHUNK_SIZE))
        self._batch_size = 0
        self._halves = Halves(threads)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` or :meth:`abort` has been called."""
        return self._sealer is None

    def write(self, data: Buffer) -> int:
        """Encrypt ``data`` (any bytes-like object) and return its length."""
        sealer = self._require_open()
        view = memoryview(data).cast("B")
        size = len(view)
        pos = self._fill_pending(view)
        if pos < size:
            # The pending chunk is full and more data follows, so it is not last.
            self._seal(sealer, self._pending)
            self._pending_size = 0
            # Whole chunks are sealed straight from the caller's buffer; the last
            # one is held back because it might be the file's final chunk.
            whole = (size - pos - 1) // CHUNK_SIZE
            self._seal_whole(sealer, view[pos : pos + whole * CHUNK_SIZE])
            self._fill_pending(view[pos + whole * CHUNK_SIZE :])
        self._flush()
        return size

    def _fill_pending(self, view: memoryview) -> int:
        """Copy as much of ``view`` as fits into the pending chunk; return the count."""
        count = min(CHUNK_SIZE - self._pending_size, len(view))
        self._pending[self._pending_size : self._pending_size + count] = view[:count]
        self._pending_size += count
        return count

    def _seal(self, sealer: ChunkSealer, chunk: memoryview, *, last: bool = False) -> None:
        if self._batch_size + len(chunk) + TAG_SIZE > len(self._batch):
            self._flush()
        out = self._batch[self._batch_size :]
        self._batch_size += sealer.seal_into(chunk, out, last=last)

    def _seal_whole(self, sealer: ChunkSealer, chunks: memoryview) -> None:
        """Seal full chunks that are not the last, a batch at a time."""
        while chunks:
            room = (len(self._batch) - self._batch_size) // ENCRYPTED_CHUNK_SIZE
            if not room:
                self._flush()
                continue
            part = chunks[: room * CHUNK_SIZE]
            self._batch_size += sealer.seal_full(part, self._batch[self._batch_size :],
                                                 self._halves)
            chunks = chunks[len(part) :]

    def _flush(self) -> None:
        if self._batch_size:
            self._sink.write(self._batch[: self._batch_size])
            self._batch_size = 0

    def close(self) -> None:
        """Write the final chunk (and armor footer). Idempotent after success."""
        if self._sealer is None:
            return
        self._seal(self._sealer, self._pending[: self._pending_size], last=True)
        self._drop_secrets()
        self._flush()
        if self._armor is not None:
            self._armor.close()

    def abort(self) -> None:
        """Forget the key without writing a final chunk; the output stays invalid."""
        self._drop_secrets()
        self._batch_size = 0

    def _drop_secrets(self) -> None:
        self._sealer = None
        self._halves.close()
        # Overwrite buffered plaintext rather than leave it for the allocator.
        self._pending[:] = bytes(CHUNK_SIZE)
        self._pending_size = 0

    def _require_open(self) -> ChunkSealer:
        if self._sealer is None:
            raise ValueError("write to a closed Encryptor")
        return self._sealer

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class PayloadSealer:
    """A new binary age file to ``recipients`` for a writer that places the chunks
    itself: :attr:`header` starts the file (:attr:`payload_start` bytes, payload nonce
    included), and :meth:`seal_at` seals any run of chunks, in any order, from any
    thread. ``encrypt -o`` writes a regular file so, a range of chunks per core.

    The caller must seal every chunk of the plaintext exactly once, the last with
    ``final``; this object cannot check that, which is why :class:`Encryptor` is the
    choice for streams. The file key lives in memory until :meth:`close`.
    """

    def __init__(self, recipients: Sequence[Recipient]) -> None:
        self.header, sealer = _new_file(recipients)
        self._sealer: ChunkSealer | None = sealer

    @property
    def payload_start(self) -> int:
        """Where the first chunk starts in the file."""
        return len(self.header)

    def seal_at(self, first: int, chunks: Buffer, out: Buffer, *, final: bool) -> int:
        """Seal ``chunks`` as the file's chunks ``first``, ``first + 1``, … into ``out``
        (room for 16 more bytes a chunk); return the bytes written. All are full 64 KiB
        chunks except, with ``final``, the file's last one (at most 64 KiB; empty only
        in an empty file)."""
        if self._sealer is None:
            raise ValueError("seal_at on a closed PayloadSealer")
        return self._sealer.seal_at(first, memoryview(chunks).cast("B"),
                                    memoryview(out).cast("B"), final=final)

    def close(self) -> None:
        """Forget the key."""
        self._sealer = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
