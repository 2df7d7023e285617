"""Streaming encryption and decryption: round trips, tampering, truncation, misuse."""

from __future__ import annotations

import io
import itertools
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.envelope import (
    DecryptionError,
    Decryptor,
    Encryptor,
    HeaderError,
    HeaderMACError,
    Identity,
    NoIdentityMatchError,
    PayloadError,
    decrypt_bytes,
    encrypt_bytes,
    generate_identity,
    inspect,
)
from gateway.envelope.format import encode_header, parse_header
from gateway.envelope.source import BufferedSource

CHUNK = 64 * 1024
SEALED = CHUNK + 16
MAX_SIZE = 200 * 1024  # spans three chunk boundaries
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_IDENTITY = generate_identity(post_quantum=False)


def _plaintext(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _payload_start(ciphertext: bytes) -> int:
    source = BufferedSource(io.BytesIO(ciphertext))
    header = parse_header(source)
    return len(header.mac_input) + 1 + 43 + 1 + 16  # "--- ", MAC, LF, then the nonce


def _released(
    ciphertext: bytes, identity: Identity = _IDENTITY, step: int = 10_000
) -> tuple[bytes, DecryptionError | None]:
    """Everything a reader gets before the first error, and that error."""
    parts: list[bytes] = []
    try:
        with Decryptor(io.BytesIO(ciphertext), [identity]) as decryptor:
            while chunk := decryptor.read(step):
                parts.append(chunk)
    except DecryptionError as exc:
        return b"".join(parts), exc
    return b"".join(parts), None


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 7])
@pytest.mark.parametrize("armor", [False, True])
def test_round_trip_sizes(identity: Identity, size: int, armor: bool) -> None:
    data = os.urandom(size)
    ciphertext = encrypt_bytes(data, [identity.recipient], armor=armor)
    assert decrypt_bytes(ciphertext, [identity]) == data


@PROPERTY
@given(
    seed=st.integers(0, 2**32),
    size=st.integers(0, MAX_SIZE),
    cuts=st.lists(st.integers(0, MAX_SIZE), max_size=8),
    step=st.integers(1, 3 * CHUNK),
)
def test_round_trip_any_write_split_and_read_size(
    seed: int, size: int, cuts: list[int], step: int
) -> None:
    data = _plaintext(seed, size)
    sink = io.BytesIO()
    with Encryptor(sink, [_IDENTITY.recipient]) as encryptor:
        bounds = [0, *sorted(c for c in cuts if c <= size), size]
        for start, end in itertools.pairwise(bounds):
            assert encryptor.write(memoryview(data)[start:end]) == end - start
    released, error = _released(sink.getvalue(), step=step)
    assert error is None
    assert released == data


def test_payload_size_is_exact() -> None:
    for size, chunks in [(0, 1), (1, 1), (CHUNK, 1), (CHUNK + 1, 2), (2 * CHUNK, 2)]:
        ciphertext = encrypt_bytes(bytes(size), [_IDENTITY.recipient])
        assert len(ciphertext) - _payload_start(ciphertext) == size + 16 * chunks


@PROPERTY
@given(
    seed=st.integers(0, 2**32),
    size=st.integers(0, MAX_SIZE),
    where=st.floats(0, 1),
    bit=st.integers(0, 7),
)
def test_any_bit_flip_is_rejected_without_releasing_the_damaged_chunk(
    seed: int, size: int, where: float, bit: int
) -> None:
    data = _plaintext(seed, size)
    ciphertext = bytearray(encrypt_bytes(data, [_IDENTITY.recipient]))
    start = _payload_start(bytes(ciphertext))
    position = min(int(where * len(ciphertext)), len(ciphertext) - 1)
    ciphertext[position] ^= 1 << bit
    released, error = _released(bytes(ciphertext))
    assert error is not None
    if position < start:
        assert released == b""  # damage in the header or nonce: nothing at all
    else:
        assert isinstance(error, PayloadError)
        assert released == data[: (position - start) // SEALED * CHUNK]


@PROPERTY
@given(seed=st.integers(0, 2**32), size=st.integers(0, MAX_SIZE), where=st.floats(0, 1))
def test_any_truncation_is_rejected(seed: int, size: int, where: float) -> None:
    data = _plaintext(seed, size)
    ciphertext = encrypt_bytes(data, [_IDENTITY.recipient])
    start = _payload_start(ciphertext)
    length = min(int(where * len(ciphertext)), len(ciphertext) - 1)
    released, error = _released(ciphertext[:length])
    assert error is not None
    if length < start:
        assert released == b""
    else:
        assert released == data[: (length - start) // SEALED * CHUNK]


@PROPERTY
@given(
    seed=st.integers(0, 2**32),
    size=st.integers(0, MAX_SIZE),
    extra=st.binary(min_size=1, max_size=SEALED + 10),
)
def test_any_extension_is_rejected(seed: int, size: int, extra: bytes) -> None:
    data = _plaintext(seed, size)
    released, error = _released(encrypt_bytes(data, [_IDENTITY.recipient]) + extra)
    assert isinstance(error, PayloadError)
    if size and size % CHUNK == 0:
        # A full final chunk still authenticates as final and is released (as the
        # CCTV vectors require); the trailing bytes then fail the stream.
        assert released == data
    else:
        # A short final chunk is read together with the extra bytes and fails.
        assert released == data[: size - size % CHUNK]


def test_final_chunk_is_written_only_at_close() -> None:
    sink = io.BytesIO()
    encryptor = Encryptor(sink, [_IDENTITY.recipient])
    after_header = len(sink.getvalue())
    encryptor.write(bytes(CHUNK))
    assert len(sink.getvalue()) == after_header  # a full chunk might still be the last
    encryptor.write(b"x")
    assert len(sink.getvalue()) == after_header + SEALED
    encryptor.close()
    assert len(sink.getvalue()) == after_header + SEALED + 1 + 16
    assert decrypt_bytes(sink.getvalue(), [_IDENTITY]) == bytes(CHUNK) + b"x"


def test_exception_in_with_block_leaves_an_invalid_file() -> None:
    sink = io.BytesIO()
    encryptor = Encryptor(sink, [_IDENTITY.recipient])

    def upload() -> None:
        with encryptor:
            encryptor.write(b"partial upload")
            raise RuntimeError("connection lost")

    with pytest.raises(RuntimeError):
        upload()
    assert encryptor.closed
    with pytest.raises(PayloadError):
        decrypt_bytes(sink.getvalue(), [_IDENTITY])


def test_closed_streams_refuse_use() -> None:
    encryptor = Encryptor(io.BytesIO(), [_IDENTITY.recipient])
    encryptor.close()
    encryptor.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        encryptor.write(b"late")
    decryptor = Decryptor(io.BytesIO(encrypt_bytes(b"x", [_IDENTITY.recipient])), [_IDENTITY])
    decryptor.close()
    with pytest.raises(ValueError, match="closed"):
        decryptor.read()


def test_decryptor_stays_failed() -> None:
    ciphertext = bytearray(encrypt_bytes(bytes(3 * CHUNK), [_IDENTITY.recipient]))
    ciphertext[_payload_start(bytes(ciphertext)) + SEALED + 5] ^= 1
    decryptor = Decryptor(io.BytesIO(bytes(ciphertext)), [_IDENTITY])
    assert decryptor.read(CHUNK) == bytes(CHUNK)
    for _ in range(2):
        with pytest.raises(PayloadError):
            decryptor.read(CHUNK)


def test_read_returns_verified_bytes_before_raising() -> None:
    ciphertext = encrypt_bytes(bytes(2 * CHUNK), [_IDENTITY.recipient])
    decryptor = Decryptor(io.BytesIO(ciphertext[:-100]), [_IDENTITY])
    assert decryptor.read(10 * CHUNK) == bytes(CHUNK)
    with pytest.raises(PayloadError):
        decryptor.read(10 * CHUNK)


def test_readinto() -> None:
    data = os.urandom(CHUNK + 5)
    decryptor = Decryptor(io.BytesIO(encrypt_bytes(data, [_IDENTITY.recipient])), [_IDENTITY])
    buffer = bytearray(40_000)
    out = bytearray()
    while count := decryptor.readinto(buffer):
        out += buffer[:count]
    assert out == data


def test_wrong_identity_and_several_recipients(hybrid_identity: Identity) -> None:
    other = generate_identity()
    ciphertext = encrypt_bytes(b"hello", [other.recipient, hybrid_identity.recipient])
    assert decrypt_bytes(ciphertext, [_IDENTITY, hybrid_identity]) == b"hello"
    with pytest.raises(NoIdentityMatchError):
        decrypt_bytes(ciphertext, [generate_identity()])


def test_header_mac_protects_the_header() -> None:
    sink = io.BytesIO()
    Encryptor(sink, [_IDENTITY.recipient]).close()
    ciphertext = sink.getvalue()
    header = parse_header(BufferedSource(io.BytesIO(ciphertext)))
    forged = encode_header([*header.stanzas], bytes(16))  # MAC under another key
    with pytest.raises(HeaderMACError):
        decrypt_bytes(forged + ciphertext[len(forged) :], [_IDENTITY])


def test_truncated_after_header_is_a_header_error() -> None:
    ciphertext = encrypt_bytes(b"", [_IDENTITY.recipient])
    with pytest.raises(HeaderError):
        decrypt_bytes(ciphertext[: _payload_start(ciphertext) - 1], [_IDENTITY])


def test_inspect_reads_only_the_header(hybrid_identity: Identity) -> None:
    recipients = [hybrid_identity.recipient, generate_identity().recipient]
    binary = inspect(io.BytesIO(encrypt_bytes(b"x", recipients)))
    assert binary.stanza_types == ("mlkem768x25519", "mlkem768x25519")
    assert binary.stanza_count == 2
    assert binary.is_post_quantum
    assert not binary.armored
    armored = inspect(io.BytesIO(encrypt_bytes(b"x", [_IDENTITY.recipient], armor=True)))
    assert armored.armored
    assert armored.stanza_types == ("X25519",)
    assert not armored.is_post_quantum
    with pytest.raises(HeaderError):
        inspect(io.BytesIO(b"not an age file"))


def _released_in_batches(ciphertext: bytes, size: int,
                         threads: int) -> tuple[bytes, DecryptionError | None]:
    """What :func:`_released` gets, read with ``readinto`` into ``size``-byte buffers."""
    out = bytearray()
    buffer = bytearray(size)
    try:
        with Decryptor(io.BytesIO(ciphertext), [_IDENTITY], threads=threads) as decryptor:
            while count := decryptor.readinto(buffer):
                out += buffer[:count]
    except DecryptionError as exc:
        return bytes(out), exc
    return bytes(out), None


@PROPERTY
@given(size=st.integers(0, 9 * CHUNK + 7), cut=st.integers(-SEALED - 20, 40),
       flip=st.one_of(st.none(), st.integers(0, 10 * SEALED)),
       buffer=st.sampled_from([2 * CHUNK, 3 * CHUNK + 1, 8 * CHUNK]),
       threads=st.sampled_from([1, 2]))
def test_batched_reads_release_what_chunk_reads_release(
        size: int, cut: int, flip: int | None, buffer: int, threads: int) -> None:
    """Opening chunks a batch at a time (in two threads) releases the same verified
    bytes and fails the same way as opening them one by one: truncation, trailing
    data and damage anywhere."""
    ciphertext = bytearray(encrypt_bytes(_plaintext(size, size), [_IDENTITY.recipient]))
    start = _payload_start(bytes(ciphertext))
    if flip is not None and start + flip < len(ciphertext):
        ciphertext[start + flip] ^= 0x40
    if cut < 0:
        del ciphertext[max(start, len(ciphertext) + cut):]
    else:
        ciphertext += os.urandom(cut)
    expected, error = _released(bytes(ciphertext), step=CHUNK)
    got, got_error = _released_in_batches(bytes(ciphertext), buffer, threads)
    assert got == expected
    assert type(got_error) is type(error)


@PROPERTY
@given(size=st.integers(0, 20 * CHUNK), step=st.sampled_from([1000, CHUNK, 5 * CHUNK + 3,
                                                              1 << 20]))
def test_two_thread_encryption_round_trips(size: int, step: int) -> None:
    data = _plaintext(size, size)
    sink = io.BytesIO()
    with Encryptor(sink, [_IDENTITY.recipient], threads=2) as encryptor:
        for at in range(0, size, step):
            encryptor.write(data[at:at + step])
    assert decrypt_bytes(sink.getvalue(), [_IDENTITY]) == data
    assert _released_in_batches(sink.getvalue(), 4 * CHUNK, 2) == (data, None)


@pytest.mark.parametrize("size", [0, 5, CHUNK, 5 * CHUNK + 100])
def test_resume_and_reseal_give_the_file_back(size: int) -> None:
    """A download resumed at chunk k decrypts the rest; resealing the plaintext of the
    chunks before k gives the very bytes of the file (to hash them again)."""
    data = _plaintext(size, size)
    ciphertext = encrypt_bytes(data, [_IDENTITY.recipient])
    start = _payload_start(ciphertext)
    with Decryptor(io.BytesIO(ciphertext), [_IDENTITY], threads=2) as decryptor:
        assert decryptor.payload_start == start
        whole = b"".join(decryptor.reseal(memoryview(data), first=0, final=True))
        assert whole == ciphertext[start:]
        for chunk in range(size // CHUNK):
            prefix = b"".join(decryptor.reseal(memoryview(data[:chunk * CHUNK]), first=0,
                                               final=False))
            assert prefix == ciphertext[start:start + chunk * SEALED]
            decryptor.resume(io.BytesIO(ciphertext[start + chunk * SEALED:]), chunk=chunk)
            buffer = bytearray(3 * CHUNK)
            rest = bytearray()
            while count := decryptor.readinto(buffer):
                rest += buffer[:count]
            assert rest == data[chunk * CHUNK:]
        decryptor.resume(io.BytesIO(ciphertext[start + SEALED:]), chunk=0)
        with pytest.raises(PayloadError):
            decryptor.read()


def test_armored_files_have_no_chunk_offsets() -> None:
    armored = encrypt_bytes(b"rows", [_IDENTITY.recipient], armor=True)
    with Decryptor(io.BytesIO(armored), [_IDENTITY]) as decryptor:
        assert decryptor.payload_start is None
        with pytest.raises(ValueError, match="only an open binary age file"):
            decryptor.resume(io.BytesIO(b""), chunk=0)


def test_chunks_opened_at_their_index_refuse_an_empty_final_chunk_after_others() -> None:
    from gateway.envelope.stream import ChunkOpener, ChunkSealer

    key = os.urandom(32)
    sealer = ChunkSealer(key)
    out = memoryview(bytearray(2 * SEALED))
    size = sealer.seal_into(memoryview(os.urandom(CHUNK)), out, last=False)
    size += sealer.seal_into(memoryview(b""), out[size:], last=True)
    opener = ChunkOpener(key)
    plain = memoryview(bytearray(CHUNK))
    with pytest.raises(PayloadError, match="empty chunk"):
        opener.open_at(0, out[:size], plain, final=True)
    # The first chunk on its own opens (as a middle chunk); the empty one alone may
    # only be the whole of an empty file.
    assert opener.open_at(0, out[:SEALED], plain, final=False) == CHUNK
    with pytest.raises(PayloadError, match="empty chunk"):
        opener.open_at(1, out[SEALED:size], plain, final=True)


@given(size=st.integers(0, MAX_SIZE), seed=st.integers(0, 2**32 - 1))
@PROPERTY
def test_plain_size_undoes_sealed_size(size: int, seed: int) -> None:
    from gateway.envelope import plain_size, sealed_size

    data = _plaintext(seed, size)
    sealed = encrypt_bytes(data, [_IDENTITY.recipient])
    payload_start = len(sealed) - sealed_size(size)
    assert sealed[payload_start - 17:payload_start - 16] == b"\n"  # header, then nonce
    assert plain_size(sealed_size(size)) == size


def test_plain_size_refuses_sizes_no_payload_has() -> None:
    from gateway.envelope import plain_size

    assert plain_size(15) is None  # Shorter than one tag.
    assert plain_size(SEALED + 16) is None  # An empty chunk after a full one.
    assert plain_size(SEALED + 15) is None  # A last chunk shorter than a tag.
    assert plain_size(16) == 0
    assert plain_size(SEALED + 17) == CHUNK + 1


@pytest.mark.parametrize("batch_chunks", [1, 4])
def test_small_batches_reach_the_sink_a_batch_at_a_time(batch_chunks: int) -> None:
    """An upload's encryptor holds ``batch_chunks`` sealed chunks at most, and the file
    is the same age file whatever the batch."""

    class Sink(io.BytesIO):
        largest = 0

        def write(self, data: object) -> int:
            written = super().write(data)  # type: ignore[arg-type]
            self.largest = max(self.largest, written)
            return written

    data = _plaintext(7, 10 * CHUNK + 5)
    sink = Sink()
    with Encryptor(sink, [_IDENTITY.recipient], batch_chunks=batch_chunks) as encryptor:
        for start in range(0, len(data), 255 * 1024):
            encryptor.write(data[start:start + 255 * 1024])
    assert sink.largest == batch_chunks * SEALED
    assert decrypt_bytes(sink.getvalue(), [_IDENTITY]) == data
    with pytest.raises(ValueError, match="batch_chunks"):
        Encryptor(io.BytesIO(), [_IDENTITY.recipient], batch_chunks=0)
