"""The ciphertext check on pre-encrypted uploads: every byte's tests, the samples' tests,
and that only cleared bytes are stored."""

from __future__ import annotations

import io
import os
import random
import threading
import zlib

import pytest

from gateway import envelope, payload_check
from gateway.envelope.armor import ArmorWriter
from gateway.errors import StorageError, UsageError
from gateway.payload_check import SPACING, WINDOW, CheckThread, PayloadCheck
from gateway.randomness import (
    BLOCK,
    CELL,
    CHI_SQUARE_HIGH,
    CHI_SQUARE_LOW,
    SHORTEST_FOUND,
    TEXT_RUN,
    BlockScan,
    binomial_limit,
    chi_square,
    why_not_random,
)
from gateway.transfers import _PassThrough

TEXT = b"".join(b"%d,P%07d,1986-04-12,F\n" % (i, i * 7919) for i in range(5000))


def _header() -> bytes:
    sink = io.BytesIO()
    with envelope.Encryptor(sink, [envelope.generate_identity().recipient]) as encryptor:
        encryptor.write(b"")
    data = sink.getvalue()
    return data[:data.index(b"\n", data.index(b"\n--- ") + 1) + 1]


HEADER = _header()


def _cuts(length: int, pieces: int) -> list[tuple[int, int]]:
    cuts = sorted(random.sample(range(1, length), pieces - 1)) if pieces > 1 else []
    return list(zip([0, *cuts], [*cuts, length], strict=True))


def _check(data: bytes, *, armored: bool = False, pieces: int = 1) -> None:
    check = PayloadCheck(armored=armored)
    for start, end in _cuts(len(data), pieces):
        check.feed(data[start:end])
        assert check.cleared <= end
    check.finish()
    assert check.cleared == len(data)


def _payload(size: int, text_at: int, text: bytes = TEXT[:TEXT_RUN]) -> bytes:
    """Random bytes with ``text`` at ``text_at``, fenced by control bytes so that the run
    of text is exactly as long as ``text``."""
    payload = bytearray(os.urandom(size))
    payload[max(0, text_at - 1)] = 0x01
    payload[text_at:text_at + len(text)] = text
    if text_at + len(text) < size:
        payload[text_at + len(text)] = 0x01
    return bytes(payload)


def test_random_samples_pass_at_every_size() -> None:
    for size in (0, 10, 63, 64, 100, 4095, 4096, 20_000, WINDOW):
        assert why_not_random(os.urandom(size), first=True) is None


def test_chi_square_bounds_match_the_distribution() -> None:
    assert round(CHI_SQUARE_LOW) == 113 and round(CHI_SQUARE_HIGH) == 481
    statistics = [chi_square(os.urandom(WINDOW)) for _ in range(200)]
    assert min(statistics) > CHI_SQUARE_LOW and max(statistics) < CHI_SQUARE_HIGH
    assert 230 < sum(statistics) / len(statistics) < 280


def test_the_zero_limit_is_the_binomial_tail() -> None:
    assert binomial_limit(BLOCK) == 418  # Expected 256, standard deviation 16.
    assert binomial_limit(BLOCK, share=2 / 256) == 735  # 0x00 and 0xFF: expected 512.
    assert binomial_limit(1) == 2  # One zero byte alone proves nothing.
    assert binomial_limit(64) == 14


@pytest.mark.parametrize("size", [1, 100, TEXT_RUN, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 7])
def test_random_payloads_of_every_length_pass(size: int) -> None:
    for pieces in (1, 3):
        _check(HEADER + os.urandom(max(32, size)), pieces=min(pieces, size))


@pytest.mark.parametrize("text_at", [0, 1, BLOCK - TEXT_RUN, BLOCK - 200, BLOCK, 2 * BLOCK + 5,
                                     3 * BLOCK - TEXT_RUN])
@pytest.mark.parametrize("pieces", [1, 7, 300])
def test_a_run_of_text_is_found_wherever_it_is(text_at: int, pieces: int) -> None:
    """At the first byte, across block and write boundaries, up to the last byte."""
    payload = _payload(3 * BLOCK, text_at)
    with pytest.raises(UsageError, match=f"at byte {text_at} is not: it holds "
                                         r"\d+ bytes or more in a row without a control byte"):
        _check(HEADER + payload, pieces=pieces)


@pytest.mark.parametrize("alignment", range(0, CELL, 3))
def test_the_resolution_of_the_run_test(alignment: int) -> None:
    """What docs/security.md states: a run of TEXT_RUN bytes is found wherever it starts
    in a cell, and one of SHORTEST_FOUND - 1 never is."""
    assert (TEXT_RUN, SHORTEST_FOUND) == (511, 448)
    at = BLOCK - 4 * CELL + alignment
    with pytest.raises(UsageError, match=f"at byte {at} is not"):
        _check(HEADER + _payload(3 * BLOCK, at, TEXT[:TEXT_RUN]), pieces=5)
    _check(HEADER + _payload(3 * BLOCK, at, TEXT[:SHORTEST_FOUND - 1]), pieces=5)


@pytest.mark.parametrize("pieces", [1, 40])
def test_plaintext_in_the_middle_and_striped_is_refused(pieces: int) -> None:
    """The two crafted uploads of issue 21, between the sampled windows."""
    middle = bytearray(os.urandom(8 << 20))
    middle[(3 << 20) - 1:5 << 20] = b"\x01" + (TEXT * 20)[:2 << 20]
    with pytest.raises(UsageError, match=f"at byte {3 << 20} is not"):
        _check(HEADER + bytes(middle), pieces=pieces)
    striped = bytearray(os.urandom(8 << 20))
    for start in range(2 * WINDOW + 1000, len(striped), BLOCK):
        striped[start - 1:start + 4096] = b"\x01" + TEXT[start % 4096:start % 4096 + 4096]
    with pytest.raises(UsageError, match=f"at byte {2 * WINDOW + 1000} is not"):
        _check(HEADER + bytes(striped), pieces=pieces)


@pytest.mark.parametrize("value", [0x00, 0xFF])
def test_a_block_with_too_many_zero_or_ff_bytes_is_refused(value: int) -> None:
    payload = bytearray(os.urandom(5 * BLOCK))
    # Binary records: a small integer in each 8 bytes, as in an array of int64 (in the
    # fourth block, which no sample covers).
    start = 3 * BLOCK + 100
    payload[start:start + 8 * 30:8] = bytes([value]) * 30
    _check(HEADER + bytes(payload))
    payload[start:start + 8 * 400] = (b"\x07" + bytes([value]) * 7) * 400
    with pytest.raises(UsageError, match=f"at byte {3 * BLOCK} is not: its 65536-byte block "
                                         r"has \d+ bytes 0x00 or 0xFF, random data fewer than 735"):
        _check(HEADER + bytes(payload), pieces=5)
    # The last, partial block is judged by its own length.
    tail = bytes(os.urandom(3 * BLOCK)) + bytes([value]) * 40
    with pytest.raises(UsageError, match=f"at byte {3 * BLOCK} is not: its 40-byte block"):
        _check(HEADER + tail, pieces=3)


def test_compressed_plaintext_is_caught_only_in_the_samples() -> None:
    """Compressed data looks random byte by byte; the sampled tests see its statistics."""
    packed = zlib.compress(TEXT * 8, 9)[2:]  # Raw deflate: no zlib signature to find.
    assert len(packed) >= 2 * WINDOW
    with pytest.raises(UsageError, match="at byte 0 is not"):
        _check(HEADER + packed + os.urandom(SPACING))
    _check(HEADER + os.urandom(4 * WINDOW) + packed + os.urandom(4 * WINDOW))


def test_armored_payloads_are_decoded_before_checking() -> None:
    unsampled = os.urandom(3 * WINDOW) + b"\x01" + TEXT + os.urandom(2 * WINDOW)
    for payload, refused in ((os.urandom(200_000), False), (unsampled, True)):
        armored = io.BytesIO()
        writer = ArmorWriter(armored)
        writer.write(HEADER + payload)
        writer.close()
        if refused:
            with pytest.raises(UsageError, match=f"at byte {3 * WINDOW + 1} is not: it holds"):
                _check(armored.getvalue(), armored=True, pieces=30)
        else:
            _check(armored.getvalue(), armored=True, pieces=30)


def test_the_block_scan_sees_a_run_across_its_calls() -> None:
    scan = BlockScan()
    first = bytearray(os.urandom(BLOCK))
    first[-300:] = TEXT[:300]
    assert scan.feed(bytes(first)) is None
    second = TEXT[300:600] + os.urandom(BLOCK - 300)
    finding = scan.feed(second)
    assert finding is not None and finding[0] <= BLOCK - 300


class _Sink:
    """A pending object that remembers what it was given."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes | memoryview) -> int:
        self.data += data
        return len(data)


def _write_all(through: _PassThrough, upload: bytes, pieces: int) -> None:
    for start, end in _cuts(len(upload), pieces):
        buffer = bytearray(upload[start:end])
        through.write(memoryview(buffer))
        buffer[:] = bytes(len(buffer))  # The writer reuses its buffer.


@pytest.mark.parametrize("pieces", [1, 13, 400])
@pytest.mark.parametrize("batch", [1000, _PassThrough.BATCH])
def test_only_cleared_bytes_reach_the_pending_object(pieces: int, batch: int) -> None:
    """Not one byte of the run of text reaches the sink, however the writes and batches
    fall: the check holds back the cell before clean cells that may grow into a run."""
    text_at = 2 * BLOCK + 17
    upload = HEADER + _payload(5 * BLOCK + 123, text_at, TEXT[:3000])
    identity = envelope.generate_identity()
    sink = _Sink()
    through = _PassThrough(sink, [identity.recipient])  # type: ignore[arg-type]
    through.BATCH = batch
    with pytest.raises(UsageError, match="without a control byte"):  # noqa: PT012 -- writes, then close.
        _write_all(through, upload, pieces)
        through.close()
    through.cancel()
    assert TEXT[:16] not in sink.data
    assert bytes(sink.data) == upload[:len(sink.data)]
    assert len(sink.data) <= len(HEADER) + text_at
    sink = _Sink()
    good = HEADER + os.urandom(5 * BLOCK + 123)
    through = _PassThrough(sink, [identity.recipient])  # type: ignore[arg-type]
    through.BATCH = batch
    _write_all(through, good, pieces)
    through.close()
    assert bytes(sink.data) == good


class _Sources(_Sink):
    """A pending object that also notes what each write was a view of."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[object] = []

    def write(self, data: bytes | memoryview) -> int:
        self.sources.append(data.obj if isinstance(data, memoryview) else data)
        return super().write(data)


def test_views_of_bytes_are_checked_and_stored_without_a_copy() -> None:
    """An SFTP write arrives as a view of its request's bytes, which nothing can change:
    it goes to the check and the store as it is. (A writable buffer is copied:
    test_only_cleared_bytes_reach_the_pending_object reuses its buffers.)"""
    upload = HEADER + os.urandom(6 * BLOCK)
    sink = _Sources()
    through = _PassThrough(sink, [envelope.generate_identity().recipient])  # type: ignore[arg-type]
    through.write(upload[:len(HEADER)])
    with memoryview(upload) as view:
        for start in range(len(HEADER), len(upload), 100_000):
            through.write(view[start:start + 100_000])
    through.close()
    assert bytes(sink.data) == upload
    assert sum(1 for source in sink.sources if source is upload) >= 6


class _FullSink(_Sink):
    """A pending object whose disk fills after ``room`` bytes; notes which threads wrote."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room
        self.threads: set[str] = set()

    def write(self, data: bytes | memoryview) -> int:
        self.threads.add(threading.current_thread().name)
        if len(self.data) + len(data) > self.room:
            raise StorageError("cannot write object: [Errno 28] No space left on device")
        return super().write(data)


def test_the_check_thread_stores_and_a_store_failure_reaches_the_writer() -> None:
    """Cleared bytes are written by the check's thread, not the session's; a full disk
    there reaches the writer as the store's error (not a refusal of the payload), and
    the thread stops."""
    upload = HEADER + os.urandom(40 * BLOCK)
    sink = _FullSink(room=10 * BLOCK)
    through = _PassThrough(sink, [envelope.generate_identity().recipient])  # type: ignore[arg-type]
    through.BATCH = 4 * BLOCK
    with pytest.raises(StorageError, match="No space left"):  # noqa: PT012 -- writes, then close.
        _write_all(through, upload, 80)
        through.close()
    assert sink.threads == {"payload-check"}
    assert bytes(sink.data) == upload[:len(sink.data)]
    assert through._payload is not None
    assert not through._payload._thread.is_alive()


class _BlockingSink(_Sink):
    """A pending object whose first write waits until it is let go."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.go = threading.Event()

    def write(self, data: bytes | memoryview) -> int:
        self.entered.set()
        self.go.wait(10)
        return super().write(data)


def test_cancel_returns_once_the_check_thread_stopped_storing() -> None:
    """An abandoned upload's pending object is discarded after cancel(): by then the check
    thread must be done writing to it."""
    sink = _BlockingSink()
    through = _PassThrough(sink, [envelope.generate_identity().recipient])  # type: ignore[arg-type]
    through.BATCH = BLOCK
    through.write(HEADER + os.urandom(8 * BLOCK))
    through.write(os.urandom(8 * BLOCK))
    assert sink.entered.wait(10)
    cancelled = threading.Event()

    def cancel() -> None:
        through.cancel()
        cancelled.set()

    canceller = threading.Thread(target=cancel)
    canceller.start()
    assert not cancelled.wait(0.3), "cancel() returned while the thread was storing"
    sink.go.set()
    assert cancelled.wait(10)
    canceller.join()
    stored = len(sink.data)
    assert through._payload is not None
    assert not through._payload._thread.is_alive()
    assert len(sink.data) == stored


def test_a_refusal_stops_the_upload_at_a_later_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check runs on its own thread; the writer learns of a refusal at a later write,
    at most the allowed lag after the failing batch, and the thread ends."""
    monkeypatch.setattr(payload_check, "MAX_LAG", 4 * BLOCK)
    text_at = 3 * BLOCK
    upload = HEADER + _payload(200 * BLOCK, text_at, TEXT[:8192])
    sink = _Sink()
    through = _PassThrough(sink, [envelope.generate_identity().recipient])  # type: ignore[arg-type]
    through.BATCH = 8192
    written = 0
    with pytest.raises(UsageError, match=f"at byte {text_at} is not"):  # noqa: PT012
        for start in range(0, len(upload), 4096):
            through.write(upload[start:start + 4096])
            written = start + 4096  # How far the writer got before it was stopped.
    # The failing batch, the lag, a batch and a write: the writer got no further.
    assert written <= len(HEADER) + text_at + 8192 + 4 * BLOCK + 8192 + 4096
    assert len(sink.data) <= len(HEADER) + text_at
    assert through._payload is not None
    through._payload._thread.join(5)
    assert not through._payload._thread.is_alive()


class _SlowCheck(PayloadCheck):
    """A check that waits to be let go, to see the writer wait for it."""

    def __init__(self) -> None:
        super().__init__(armored=False)
        self.go = threading.Event()

    def feed(self, *pieces: bytes | memoryview) -> None:
        self.go.wait(10)
        super().feed(*pieces)


def test_the_writer_waits_when_the_check_falls_behind() -> None:
    check = _SlowCheck()
    thread = CheckThread(check, max_lag=3 * BLOCK)
    thread.feed([HEADER])
    thread.feed([os.urandom(3 * BLOCK)])
    waited = threading.Event()

    def third() -> None:
        thread.feed([os.urandom(BLOCK)])
        waited.set()

    writer = threading.Thread(target=third)
    writer.start()
    assert not waited.wait(0.2)  # The check holds 3 blocks unchecked: the writer waits.
    check.go.set()
    assert waited.wait(10)
    writer.join()
    thread.finish()
    assert thread.cleared == len(HEADER) + 4 * BLOCK


def test_cancel_ends_the_thread() -> None:
    thread = CheckThread(PayloadCheck(armored=False))
    thread.feed([HEADER, os.urandom(BLOCK)])
    thread.cancel()
    thread._thread.join(5)
    assert not thread._thread.is_alive()


class _BrokenCheck(PayloadCheck):
    def feed(self, *pieces: bytes | memoryview) -> None:
        raise RuntimeError("a fault of the check")


def test_a_fault_of_the_check_refuses_instead_of_hanging(caplog: pytest.LogCaptureFixture) -> None:
    thread = CheckThread(_BrokenCheck(armored=False))
    thread.feed([HEADER])
    with pytest.raises(UsageError, match="the payload check failed: RuntimeError"):
        thread.finish()
    assert "the payload check of an upload failed" in caplog.text
