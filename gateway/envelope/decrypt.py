"""Streaming decryption and header inspection: :class:`Decryptor`, :func:`inspect`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import NamedTuple, Self

from gateway.envelope.armor import ArmorReader, starts_armored
from gateway.envelope.errors import (
    DecryptionError,
    HeaderError,
    HeaderMACError,
    NoIdentityMatchError,
    PayloadError,
)
from gateway.envelope.format import Header, Stanza, parse_header, verify_header_mac
from gateway.envelope.recipient import Identity
from gateway.envelope.source import BufferedSource, Readable
from gateway.envelope.stream import (
    CHUNK_SIZE,
    ENCRYPTED_CHUNK_SIZE,
    PAYLOAD_NONCE_SIZE,
    ChunkOpener,
    Halves,
    payload_key,
)

_SCRYPT = "scrypt"


class HeaderInfo(NamedTuple):
    """What the header of an age file says, learned without any key."""

    armored: bool
    stanza_types: tuple[str, ...]

    @property
    def stanza_count(self) -> int:
        """How many recipient stanzas the header has."""
        return len(self.stanza_types)

    @property
    def is_post_quantum(self) -> bool:
        """True when every stanza is a hybrid post-quantum one."""
        return all(t == "mlkem768x25519" for t in self.stanza_types)


def inspect(source: Readable, *, armored: bool | None = None) -> HeaderInfo:
    """Parse the header of the age file in ``source`` (binary or armored).

    Reads only as far as the header. Raises :class:`HeaderError` or
    :class:`ArmorError` if it is malformed. ``armored`` forces a format instead of
    detecting it.
    """
    stream, is_armored = _open(source, armored)
    header = parse_header(stream)
    return HeaderInfo(armored=is_armored, stanza_types=tuple(s.type for s in header.stanzas))


def _open(source: Readable, armored: bool | None) -> tuple[BufferedSource, bool]:
    raw = BufferedSource(source)
    detected = starts_armored(raw) if armored is None else armored
    if detected:
        return BufferedSource(ArmorReader(raw)), True
    return raw, False


class Decryptor:
    """A readable stream of the plaintext of the age file in ``source``.

    The header is parsed and the file key unwrapped at construction, so a wrong key
    or a malformed header fails before any output is made. Armor is detected
    unless ``armored`` says which format to expect.

    Plaintext is released one verified 64 KiB chunk at a time: no byte of a chunk is
    returned before its tag is checked, and a chunk that ends the stream is returned
    only if it verifies as the file's final chunk. A stream that ends without a
    final chunk (truncation) raises :class:`PayloadError` where EOF would be; data
    after the final chunk raises it on the read after that chunk. A read that hits
    an error after some verified bytes returns those bytes, and the next read
    raises. After an error every further read raises the same error.
    """

    def __init__(
        self,
        source: Readable,
        identities: Sequence[Identity],
        *,
        armored: bool | None = None,
        threads: int = 1,
    ) -> None:
        self._error: DecryptionError | None = None
        self._source, is_armored = _open(source, armored)
        header = parse_header(self._source)
        file_key = _unwrap(header, identities)
        if not verify_header_mac(header, file_key):
            raise HeaderMACError("header MAC mismatch: the header was modified")
        nonce = self._source.read_exact(PAYLOAD_NONCE_SIZE)
        if len(nonce) != PAYLOAD_NONCE_SIZE:
            raise HeaderError("file is truncated after the header")
        self._opener: ChunkOpener | None = ChunkOpener(payload_key(file_key, nonce))
        # Kept after the last chunk, for :meth:`reseal`; forgotten at close.
        self._resealer: ChunkOpener | None = self._opener
        self._payload_start = None if is_armored else self._source.position
        self._plain = b""
        self._offset = 0
        self._closed = False
        self._halves = Halves(threads)
        self._sealed = memoryview(bytearray(0))

    @property
    def payload_start(self) -> int | None:
        """Where the first payload chunk starts in a binary file (header and payload
        nonce before it); ``None`` for an armored file, whose chunks have no fixed
        offsets. Chunk ``i`` starts at ``payload_start + i * (64 KiB + 16)``."""
        return self._payload_start

    def resume(self, source: Readable, *, chunk: int) -> None:
        """Go on with chunk ``chunk`` of a binary file, read from ``source`` (whose
        first byte is that chunk's first byte): a resumed download, whose chunks
        before ``chunk`` were opened in an earlier run."""
        if self._payload_start is None or self._resealer is None or self._closed:
            raise ValueError("only an open binary age file can be resumed")
        self._source = BufferedSource(source)
        self._resealer.restart_at(chunk)
        self._opener = self._resealer
        self._error = None
        self._plain = b""
        self._offset = 0

    def reseal(self, plaintext: memoryview, *, first: int, final: bool) -> Iterator[bytes]:
        """The sealed chunks of this file, from chunk ``first``, for their plaintext:
        whole chunks, and with ``final`` the file's last (possibly short) one after
        them. A resumed download recomputes the file's hash from them."""
        if self._resealer is None:
            raise ValueError("reseal on a closed Decryptor")
        chunks = max(1, -(-len(plaintext) // CHUNK_SIZE)) if final else len(
            plaintext) // CHUNK_SIZE
        for index in range(chunks):
            piece = plaintext[index * CHUNK_SIZE:(index + 1) * CHUNK_SIZE]
            yield self._resealer.reseal(piece, first + index,
                                        last=final and index == chunks - 1)

    def open_at(self, first: int, sealed: memoryview, out: memoryview, *, final: bool) -> int:
        """Open ``sealed``, the file's chunks ``first``, ``first + 1``, … of a binary
        file, into ``out``; return the plaintext bytes. With ``final`` the last of them
        must be the file's final chunk, otherwise all are full middle chunks.

        For a reader that fetches the chunks itself (``decrypt -o`` from a regular
        file, a range per core): any run, in any order, from any thread, independent of
        :meth:`read`. The caller must open every chunk up to the final one before it
        trusts the file as complete, since a file cut at a chunk boundary is only caught
        where its end is opened. Raises :class:`PayloadError` at the first chunk that
        does not verify, having zeroed what it left in ``out``.
        """
        if self._payload_start is None or self._resealer is None:
            raise ValueError("open_at needs an open binary age file")
        return self._resealer.open_at(first, sealed, out, final=final)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def read(self, size: int = -1, /) -> bytes:
        """Return ``size`` bytes of plaintext (fewer only at the end), all if negative."""
        if size < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        parts: list[bytes] = []
        wanted = size
        while wanted:
            try:
                piece = self._take(wanted)
            except DecryptionError:
                if not parts:
                    raise
                break  # Hand over what verified; the error comes with the next read.
            if not piece:
                break
            parts.append(piece)
            wanted -= len(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Fill ``buffer`` with plaintext; return the count (0 at the end).

        A buffer of several chunks is filled a batch at a time, the chunks opened
        straight into it (in two threads if the decryptor has them): no copies.
        """
        view = memoryview(buffer).cast("B")
        if (len(view) >= 2 * CHUNK_SIZE and self._offset == len(self._plain)
                and self._opener is not None and self._error is None and not self._closed):
            return self._read_batch(view, self._opener)
        done = 0
        while done < len(view):
            try:
                piece = self._take(len(view) - done)
            except DecryptionError:
                if not done:
                    raise
                break  # Hand over what verified; the error comes with the next read.
            if not piece:
                break
            view[done : done + len(piece)] = piece
            done += len(piece)
        return done

    def _read_batch(self, view: memoryview, opener: ChunkOpener) -> int:
        """Open as many whole chunks as ``view`` holds, straight into it."""
        count = len(view) // CHUNK_SIZE
        if len(self._sealed) < count * ENCRYPTED_CHUNK_SIZE:
            self._sealed = memoryview(bytearray(count * ENCRYPTED_CHUNK_SIZE))
        sealed = self._sealed[:count * ENCRYPTED_CHUNK_SIZE]
        got = self._source.readinto_exact(sealed)
        # Whether the stream ends within this batch decides which chunk is the last.
        ends = got < len(sealed) or not self._source.peek(1)
        middle = got // ENCRYPTED_CHUNK_SIZE
        if ends and middle * ENCRYPTED_CHUNK_SIZE == got:
            middle = max(middle - 1, 0)
        done = opener.open_middle(sealed[:middle * ENCRYPTED_CHUNK_SIZE], view, self._halves)
        size = done * CHUNK_SIZE
        try:
            if done < middle:
                # Not a middle chunk: the file's final one with data after it, or damage.
                size += self._final(opener, sealed[done * ENCRYPTED_CHUNK_SIZE:
                                                   (done + 1) * ENCRYPTED_CHUNK_SIZE],
                                    view[size:], trailing=True)
            elif ends:
                size += self._final(opener, sealed[middle * ENCRYPTED_CHUNK_SIZE:got],
                                    view[size:], trailing=False)
        except DecryptionError as exc:
            self._error, self._opener = exc, None
            if not size:
                raise
        if self._error is not None:
            # Whatever the failed chunk left in the buffer was never verified.
            view[size:] = bytes(len(view) - size)
        return size

    def _final(self, opener: ChunkOpener, sealed: memoryview, out: memoryview, *,
               trailing: bool) -> int:
        """Open the file's final chunk into ``out``; data after it is an error."""
        plaintext = opener.open(bytes(sealed), last=True)
        out[:len(plaintext)] = plaintext
        self._opener = None
        if trailing:
            # The final chunk is authentic and released, but the stream fails instead
            # of ending (as the age reference implementation and CCTV vectors expect).
            self._error = PayloadError("trailing data after the end of the payload")
        return len(plaintext)

    def _take(self, size: int) -> bytes:
        """Return up to ``size`` bytes of the current chunk, opening the next if needed."""
        if self._offset == len(self._plain):
            self._plain, self._offset = self._next_chunk(), 0
        if self._offset == 0 and size >= len(self._plain):
            self._offset = len(self._plain)
            return self._plain
        piece = self._plain[self._offset : self._offset + size]
        self._offset += len(piece)
        return piece

    def _next_chunk(self) -> bytes:
        if self._closed:
            raise ValueError("read from a closed Decryptor")
        if self._error is not None:
            raise self._error
        if self._opener is None:
            return b""
        try:
            return self._open_next(self._opener)
        except DecryptionError as exc:
            # Stay failed: a caller that retries must not get later chunks.
            self._error, self._opener = exc, None
            raise

    def _open_next(self, opener: ChunkOpener) -> bytes:
        sealed = self._source.read_exact(ENCRYPTED_CHUNK_SIZE)
        if len(sealed) < ENCRYPTED_CHUNK_SIZE:
            # A short read means the stream ended, so this must be the last chunk.
            plaintext = opener.open(sealed, last=True)
        else:
            plaintext = opener.open_full(sealed)
            if not opener.finished:
                return plaintext
            if self._source.read_exact(1):
                # The chunk is authentic and complete, so it is released (as the
                # age reference implementation and the CCTV vectors expect), but
                # the stream fails instead of ending.
                self._error = PayloadError("trailing data after the end of the payload")
        self._opener = None
        return plaintext

    def close(self) -> None:
        """Forget the payload key and any buffered plaintext. The source stays open."""
        self._closed = True
        self._opener = self._resealer = None
        self._plain = b""
        self._offset = 0
        self._halves.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _unwrap(header: Header, identities: Sequence[Identity]) -> bytes:
    _check_scrypt_alone(header.stanzas)
    for identity in identities:
        file_key = identity.unwrap(header.stanzas)
        if file_key is not None:
            return file_key
    raise NoIdentityMatchError("no identity matched any of the file's recipients")


def _check_scrypt_alone(stanzas: Sequence[Stanza]) -> None:
    # A passphrase-encrypted file promises that only the passphrase holder wrote
    # it; the spec therefore forbids an scrypt stanza next to any other stanza.
    if len(stanzas) > 1 and any(s.type == _SCRYPT for s in stanzas):
        raise HeaderError("an scrypt stanza must be the only stanza")
