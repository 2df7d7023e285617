"""The age STREAM payload: ChaCha20-Poly1305 over 64 KiB chunks.

Each chunk is sealed under the payload key with a 12-byte nonce made of an 11-byte
big-endian chunk counter and a final byte that is 1 only for the last chunk. The flag
is what makes truncation detectable: a file cut at a chunk boundary ends in a chunk
sealed as "not last", which then fails to open as last.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.envelope.errors import PayloadError

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
ENCRYPTED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
PAYLOAD_NONCE_SIZE = 16


def payload_key(file_key: bytes, nonce: bytes) -> bytes:
    """Derive the payload key from the file key and the per-file payload nonce."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=nonce, info=b"payload").derive(file_key)


def _chunk_nonce(counter: int, *, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def chunk_count(plain_size: int) -> int:
    """How many chunks a payload of ``plain_size`` bytes has (an empty one has one)."""
    return max(1, -(-plain_size // CHUNK_SIZE))


def sealed_size(plain_size: int) -> int:
    """The size of the payload that seals ``plain_size`` bytes (nonce not counted)."""
    return plain_size + TAG_SIZE * chunk_count(plain_size)


def plain_size(sealed: int) -> int | None:
    """The plaintext size of a payload of ``sealed`` bytes (nonce not counted), or
    ``None`` if no payload has that size: one whose last chunk would be shorter than a
    tag, or empty after a full one (only an empty file ends in an empty chunk)."""
    chunks = max(1, -(-sealed // ENCRYPTED_CHUNK_SIZE))
    plain = sealed - TAG_SIZE * chunks
    return plain if plain >= 0 and (chunks == 1 or plain > (chunks - 1) * CHUNK_SIZE) else None


class Halves:
    """Splits work on a batch of chunks between the calling thread and one helper.

    ChaCha20-Poly1305 in ``cryptography`` releases the GIL, so two threads seal or open
    a batch in about half the time on two cores. With ``threads=1`` there is no helper
    and the work runs in the caller, as before: the gateway, which serves many sessions,
    keeps one thread per stream; the clients, which run one stream, use two when a core
    is free.
    """

    def __init__(self, threads: int) -> None:
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None

    def run(self, work: Callable[[int, int], int], count: int) -> int:
        """Call ``work(start, stop)`` over ``[0, count)`` in two halves; each returns how
        many of its chunks succeeded. Return how many chunks from the first succeeded."""
        if self._threads < 2 or count < 4:
            return work(0, count)
        half = count // 2
        later = self._helper().submit(work, half, count)
        done = work(0, half)
        rest = later.result()
        return done + rest if done == half else done

    def _helper(self) -> ThreadPoolExecutor:
        if self._pool is None:
            # Made (and imported) on first use: `decrypt -o` between files asks for two
            # threads but opens its chunks in gateway.client.ranges, and starts faster
            # without loading concurrent.futures.
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, "blindpost-chunks")
        return self._pool

    def close(self) -> None:
        self._threads = 1
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


class ChunkSealer:
    """Seals consecutive chunks; one instance per file, used once per chunk index."""

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._counter = 0

    def seal_full(self, chunks: memoryview, out: memoryview, halves: Halves) -> int:
        """Seal ``chunks`` (a whole number of full chunks, none of them the file's
        last) into ``out``; return the bytes written."""
        count, first = len(chunks) // CHUNK_SIZE, self._counter
        aead = self._aead

        def work(start: int, stop: int) -> int:
            for index in range(start, stop):
                aead.encrypt_into(_chunk_nonce(first + index, last=False),
                                  chunks[index * CHUNK_SIZE:(index + 1) * CHUNK_SIZE], None,
                                  out[index * ENCRYPTED_CHUNK_SIZE:
                                      (index + 1) * ENCRYPTED_CHUNK_SIZE])
            return stop - start

        halves.run(work, count)
        self._counter += count
        return count * ENCRYPTED_CHUNK_SIZE

    def seal_into(self, chunk: memoryview, out: memoryview, *, last: bool) -> int:
        """Encrypt the next chunk into the start of ``out``; return the bytes written.

        A chunk is at most 64 KiB, and empty only as the sole chunk of a file.
        """
        size = len(chunk) + TAG_SIZE
        self._aead.encrypt_into(_chunk_nonce(self._counter, last=last), chunk, None, out[:size])
        self._counter += 1
        return size


    def seal_at(self, first: int, chunks: memoryview, out: memoryview, *, final: bool) -> int:
        """Seal ``chunks`` as chunks ``first``, ``first + 1``, … of the file into ``out``;
        return the bytes written.

        They are full chunks, except that with ``final`` the last of them is the file's
        final chunk (short, or empty only as the file's one chunk). The counter is not
        used or moved: threads may seal different chunks of one file at the same time.
        """
        count = _count_of(len(chunks), CHUNK_SIZE, final=final, first=first, extra=0)
        written = 0
        for index in range(count):
            piece = chunks[index * CHUNK_SIZE:(index + 1) * CHUNK_SIZE]
            size = len(piece) + TAG_SIZE
            self._aead.encrypt_into(_chunk_nonce(first + index, last=final and index == count - 1),
                                    piece, None, out[written:written + size])
            written += size
        return written


def _count_of(size: int, chunk: int, *, final: bool, first: int, extra: int) -> int:
    """How many chunks of ``chunk`` bytes (plain or sealed) ``size`` bytes hold, ending
    in the file's final chunk if ``final``; ``extra`` is what a chunk adds to its
    plaintext (the tag when sealed). Refuses what no file holds."""
    if not final:
        if size % chunk:
            raise ValueError("only whole chunks can be sealed or opened before the last")
        return size // chunk
    count = max(1, -(-size // chunk))
    last = size - (count - 1) * chunk
    if last < extra:
        raise PayloadError("payload is truncated")
    if last == extra and first + count > 1:
        raise PayloadError("payload ends with an empty chunk")
    return count


class ChunkOpener:
    """Opens consecutive chunks, enforcing the last-chunk rules of the format."""

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._counter = 0
        self.finished = False

    def open(self, sealed: bytes, *, last: bool) -> bytes:
        """Verify and decrypt the next chunk; raise :class:`PayloadError` if damaged.

        Only a verified chunk's plaintext is returned: the AEAD checks the tag before
        anything is handed back.
        """
        if len(sealed) < TAG_SIZE:
            raise PayloadError("payload is truncated")
        if last and len(sealed) == TAG_SIZE and self._counter > 0:
            # Only an empty file may end in an empty chunk; otherwise the final
            # chunk could be dropped and re-added without changing the plaintext.
            raise PayloadError("payload ends with an empty chunk")
        try:
            plaintext = self._aead.decrypt(_chunk_nonce(self._counter, last=last), sealed, None)
        except InvalidTag:
            raise PayloadError("payload is damaged or truncated") from None
        self._counter += 1
        self.finished = last
        return plaintext

    def open_middle(self, sealed: memoryview, out: memoryview, halves: Halves) -> int:
        """Open full chunks known not to be the file's last into ``out``; return how many
        verified, in order: fewer than all means the next one failed. What ``out`` holds
        past the verified ones is not to be used."""
        count, first = len(sealed) // ENCRYPTED_CHUNK_SIZE, self._counter
        aead = self._aead

        def work(start: int, stop: int) -> int:
            for index in range(start, stop):
                try:
                    aead.decrypt_into(_chunk_nonce(first + index, last=False),
                                      sealed[index * ENCRYPTED_CHUNK_SIZE:
                                             (index + 1) * ENCRYPTED_CHUNK_SIZE], None,
                                      out[index * CHUNK_SIZE:(index + 1) * CHUNK_SIZE])
                except InvalidTag:
                    return index - start
            return stop - start

        done = halves.run(work, count)
        self._counter += done
        return done

    def open_at(self, first: int, sealed: memoryview, out: memoryview, *, final: bool) -> int:
        """Open ``sealed`` as chunks ``first``, ``first + 1``, … of the file into ``out``;
        return the plaintext bytes. With ``final`` the last of them must open as the
        file's final chunk; otherwise they are full middle chunks.

        Raises :class:`PayloadError` at the first chunk that does not verify, having
        zeroed what its opening left in ``out``; the chunks before it are verified. The
        counter is not used or moved, so threads may open different chunks at once.
        """
        count = _count_of(len(sealed), ENCRYPTED_CHUNK_SIZE, final=final, first=first,
                          extra=TAG_SIZE)
        written = 0
        for index in range(count):
            piece = sealed[index * ENCRYPTED_CHUNK_SIZE:(index + 1) * ENCRYPTED_CHUNK_SIZE]
            size = len(piece) - TAG_SIZE
            target = out[written:written + size]
            try:
                self._aead.decrypt_into(
                    _chunk_nonce(first + index, last=final and index == count - 1),
                    piece, None, target)
            except InvalidTag:
                # The AEAD decrypts before it checks the tag.
                target[:] = bytes(size)
                raise PayloadError("payload is damaged or truncated") from None
            written += size
        return written

    def restart_at(self, counter: int) -> None:
        """Open chunk ``counter`` next (a download resumed at that chunk)."""
        self._counter = counter
        self.finished = False

    def reseal(self, plaintext: memoryview, counter: int, *, last: bool) -> bytes:
        """The sealed form of chunk ``counter`` of this file, given its plaintext.

        Sealing is deterministic, so this is byte for byte what the file holds: a
        resumed download hashes the chunks it kept without having kept them sealed.
        """
        return self._aead.encrypt(_chunk_nonce(counter, last=last), plaintext, None)

    def open_full(self, sealed: bytes) -> bytes:
        """Open a full-size chunk, which may be a middle chunk or the final one.

        A chunk authenticates under one flag only, so trying "not last" first and
        then "last" decides which it is; :attr:`finished` tells the caller.
        """
        try:
            return self.open(sealed, last=False)
        except PayloadError:
            return self.open(sealed, last=True)
