"""The reorder buffer (and the payload check behind it), the error table and the
transport's algorithm choice."""

from __future__ import annotations

import io
import os
import random

import pytest
from paramiko import sftp

from gateway import envelope
from gateway.errors import (
    ConflictError,
    DatabaseError,
    GatewayError,
    GoneError,
    NotFoundError,
    PolicyError,
    StorageError,
    UsageError,
)
from gateway.payload_check import PayloadCheck
from sftp_server.budget import ENTRY_OVERHEAD, MemoryBudget
from sftp_server.errors import refusal_for, status_for
from sftp_server.handles import ReorderBuffer
from sftp_server.transport import ALLOWED_ALGORITHMS, disabled_algorithms


def _feed(buffer: ReorderBuffer, offset: int, data: bytes) -> bytes:
    return b"".join(buffer.accept(offset, data))


def _buffer(limit: int, *, entries: int = 4) -> ReorderBuffer:
    """A buffer that may hold ``limit`` bytes in up to ``entries`` early writes."""
    return ReorderBuffer(MemoryBudget(limit + entries * ENTRY_OVERHEAD, scope="upload"))


def test_in_order_writes_pass_straight_through() -> None:
    buffer = _buffer(10)
    assert _feed(buffer, 0, b"abc") + _feed(buffer, 3, b"def") == b"abcdef"
    assert buffer.first_gap() is None


def test_early_writes_wait_for_the_gap() -> None:
    buffer = _buffer(10)
    assert _feed(buffer, 3, b"def") == b""
    assert _feed(buffer, 6, b"gh") == b""
    assert buffer.first_gap() == 0
    assert _feed(buffer, 0, b"abc") == b"abcdefgh"
    assert buffer.held_bytes == 0


def test_writes_beyond_the_buffer_fail_clearly() -> None:
    buffer = _buffer(4, entries=1)
    _feed(buffer, 10, b"1234")
    with pytest.raises(PolicyError, match=r"out-of-order writes of this upload \(0.00\d+ MiB\) "
                                          "is full"):
        _feed(buffer, 20, b"5")


def test_each_held_write_is_charged_with_its_bookkeeping() -> None:
    """One-byte writes cost far more than one byte each; the budget counts that."""
    session = MemoryBudget(100 * (1 + ENTRY_OVERHEAD), scope="session")
    buffer = ReorderBuffer(session.child(1 << 20, scope="upload"))
    for offset in range(1, 201, 2):
        _feed(buffer, offset, b"x")
    with pytest.raises(PolicyError, match="this session"):
        _feed(buffer, 201, b"x")
    assert session.held == 100 * (1 + ENTRY_OVERHEAD)
    assert _feed(buffer, 0, b"y")[:2] == b"yx"
    assert session.held == 99 * (1 + ENTRY_OVERHEAD)
    buffer.discard()
    assert session.held == 0


def test_a_parent_budget_refuses_and_nothing_is_charged() -> None:
    process = MemoryBudget(1000, scope="server process")
    first, second = process.child(800, scope="session"), process.child(800, scope="session")
    first.take(600)
    with pytest.raises(PolicyError, match="server process"):
        second.take(500)
    assert (first.held, second.held, process.held) == (600, 0, 600)
    first.give_back(600)
    second.take(800)
    assert process.held == 800


@pytest.mark.parametrize(("first", "second"), [((0, b"abcd"), (2, b"xx")),
                                              ((4, b"ab"), (4, b"cd"))])
def test_overlapping_writes_are_refused(first: tuple[int, bytes],
                                        second: tuple[int, bytes]) -> None:
    buffer = _buffer(100)
    _feed(buffer, *first)
    with pytest.raises(UsageError, match="overlaps"):
        _feed(buffer, *second)


def test_overlap_found_when_released() -> None:
    buffer = _buffer(100)
    _feed(buffer, 2, b"zz")
    with pytest.raises(UsageError, match="overlaps"):
        _feed(buffer, 0, b"abcd")


@pytest.mark.parametrize(("error", "status"), [
    (NotFoundError("x"), sftp.SFTP_NO_SUCH_FILE), (GoneError("x"), sftp.SFTP_NO_SUCH_FILE),
    (UsageError("x"), sftp.SFTP_FAILURE),
    (PolicyError("x"), sftp.SFTP_PERMISSION_DENIED), (ConflictError("x"), sftp.SFTP_FAILURE),
    (StorageError("x"), sftp.SFTP_FAILURE), (GatewayError("x"), sftp.SFTP_FAILURE),
])
def test_status_table(error: GatewayError, status: int) -> None:
    assert status_for(error) == status


def test_only_a_gone_file_is_told_beyond_the_miss() -> None:
    assert refusal_for(GoneError("a.age is gone: it was withdrawn")).tell
    assert not refusal_for(NotFoundError("no such file")).tell


def test_internal_errors_are_not_described_to_clients() -> None:
    assert "secret.db" not in refusal_for(DatabaseError("cannot open secret.db")).message


def test_only_modern_algorithms_remain() -> None:
    import paramiko

    disabled = disabled_algorithms()
    for kind, allowed in ALLOWED_ALGORITHMS.items():
        offered = set(getattr(paramiko.Transport, f"_preferred_{kind}")) - set(disabled[kind])
        assert offered <= set(allowed)
    everything_offered = " ".join(
        name for kind in ALLOWED_ALGORITHMS
        for name in set(getattr(paramiko.Transport, f"_preferred_{kind}")) - set(disabled[kind]))
    for weak in ("sha1", "cbc", "3des", "md5", "group14", "nistp256-sha"):
        assert weak not in everything_offered
    assert "mlkem768x25519-sha256" in everything_offered



def _age_header() -> bytes:
    sink = io.BytesIO()
    with envelope.Encryptor(sink, [envelope.generate_identity().recipient]) as encryptor:
        encryptor.write(b"")
    data = sink.getvalue()
    return data[:data.index(b"\n", data.index(b"\n--- ") + 1) + 1]


def _check_in_arrival_order(writes: list[tuple[int, bytes]]) -> None:
    buffer, check = _buffer(1 << 21, entries=len(writes)), PayloadCheck(armored=False)
    for offset, data in writes:
        for chunk in buffer.accept(offset, data):
            check.feed(chunk)
    check.finish()


def test_out_of_order_writes_reach_the_payload_check_in_order() -> None:
    """Issue 21: a pre-encrypted upload whose writes arrive out of order (pipelined SFTP
    writes) is checked as the file it is, and plaintext in it is found where it is."""
    text = b"".join(b"%d,P%07d,1986-04-12,F\n" % (i, i) for i in range(200))
    payload = bytearray(os.urandom(600_000))
    upload = _age_header() + bytes(payload)
    writes = [(start, upload[start:start + 32768]) for start in range(0, len(upload), 32768)]
    _check_in_arrival_order(random.sample(writes, len(writes)))
    payload[299_999:300_000 + len(text)] = b"\x01" + text
    upload = _age_header() + bytes(payload)
    writes = [(start, upload[start:start + 32768]) for start in range(0, len(upload), 32768)]
    for order in (writes, random.sample(writes, len(writes))):
        with pytest.raises(UsageError, match=r"payload at byte 300000 is not: it holds \d+ "
                                             "bytes or more in a row"):
            _check_in_arrival_order(order)
