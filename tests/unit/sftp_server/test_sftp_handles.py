"""The reorder buffer, the error table and the transport's algorithm choice."""

from __future__ import annotations

import pytest
from paramiko import sftp

from gateway.errors import (
    ConflictError,
    DatabaseError,
    GatewayError,
    NotFoundError,
    PolicyError,
    StorageError,
    UsageError,
)
from sftp_server.errors import refusal_for, status_for
from sftp_server.handles import ReorderBuffer
from sftp_server.transport import ALLOWED_ALGORITHMS, disabled_algorithms


def _feed(buffer: ReorderBuffer, offset: int, data: bytes) -> bytes:
    return b"".join(buffer.accept(offset, data))


def test_in_order_writes_pass_straight_through() -> None:
    buffer = ReorderBuffer(limit=10)
    assert _feed(buffer, 0, b"abc") + _feed(buffer, 3, b"def") == b"abcdef"
    assert buffer.first_gap() is None


def test_early_writes_wait_for_the_gap() -> None:
    buffer = ReorderBuffer(limit=10)
    assert _feed(buffer, 3, b"def") == b""
    assert _feed(buffer, 6, b"gh") == b""
    assert buffer.first_gap() == 0
    assert _feed(buffer, 0, b"abc") == b"abcdefgh"
    assert buffer.held_bytes == 0


def test_writes_beyond_the_buffer_fail_clearly() -> None:
    buffer = ReorderBuffer(limit=4)
    _feed(buffer, 10, b"1234")
    with pytest.raises(PolicyError, match="reorder buffer"):
        _feed(buffer, 20, b"5")


@pytest.mark.parametrize(("first", "second"), [((0, b"abcd"), (2, b"xx")),
                                              ((4, b"ab"), (4, b"cd"))])
def test_overlapping_writes_are_refused(first: tuple[int, bytes],
                                        second: tuple[int, bytes]) -> None:
    buffer = ReorderBuffer(limit=100)
    _feed(buffer, *first)
    with pytest.raises(UsageError, match="overlaps"):
        _feed(buffer, *second)


def test_overlap_found_when_released() -> None:
    buffer = ReorderBuffer(limit=100)
    _feed(buffer, 2, b"zz")
    with pytest.raises(UsageError, match="overlaps"):
        _feed(buffer, 0, b"abcd")


@pytest.mark.parametrize(("error", "status"), [
    (NotFoundError("x"), sftp.SFTP_NO_SUCH_FILE), (UsageError("x"), sftp.SFTP_FAILURE),
    (PolicyError("x"), sftp.SFTP_PERMISSION_DENIED), (ConflictError("x"), sftp.SFTP_FAILURE),
    (StorageError("x"), sftp.SFTP_FAILURE), (GatewayError("x"), sftp.SFTP_FAILURE),
])
def test_status_table(error: GatewayError, status: int) -> None:
    assert status_for(error) == status


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
