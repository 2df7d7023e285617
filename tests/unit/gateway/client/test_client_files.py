"""Output files on the user's machine: private, atomic, durable; nothing on failure."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from gateway.client import files
from gateway.client.files import (
    BackgroundWriter,
    OutputWriter,
    ReadAhead,
    atomic_output,
    write_private_text,
)


@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize("durable", [True, False])
def test_atomic_output_appears_whole_and_private(tmp_path: Path, durable: bool,
                                                 background: bool) -> None:
    target = tmp_path / "extract.csv"
    data = os.urandom(5 << 20)
    buffer = bytearray(1 << 20)
    with atomic_output(target, durable=durable, background=background) as sink:
        # Writes larger and smaller than a slot, from one reused buffer (as callers do).
        for start in range(0, len(data), 700_001):
            piece = data[start:start + 700_001]
            buffer[:len(piece)] = piece
            sink.write(memoryview(buffer)[:len(piece)])
        assert not target.exists()
    assert target.read_bytes() == data
    assert (target.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["extract.csv"]


def test_failure_leaves_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "extract.csv"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(target) as sink:  # noqa: PT012
        sink.write(b"new partial")  # The failure comes after a write, as in real use.
        raise RuntimeError
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["extract.csv"]


def test_write_errors_are_raised() -> None:
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(OSError, match="No space left"):
            OutputWriter(fd).write(b"x" * (1 << 20))
    finally:
        os.close(fd)


def test_background_write_errors_are_raised_by_a_later_write_or_finish() -> None:
    fd = os.open("/dev/full", os.O_WRONLY)
    sink = BackgroundWriter(fd)
    try:
        with pytest.raises(OSError, match="No space left"):  # noqa: PT012
            # The first write only queues; a later one (or finish) meets the error.
            for _ in range(100):
                sink.write(b"x" * 1000)
            sink.finish(durable=False)
    finally:
        sink.stop()
        os.close(fd)


def test_fill_writes_the_slot_it_filled(tmp_path: Path) -> None:
    target = tmp_path / "out"
    chunks = [os.urandom(200_000) for _ in range(20)]
    pending = iter(chunks)

    def read(buffer: memoryview) -> int:
        piece = next(pending, b"")
        buffer[:len(piece)] = piece
        return len(piece)

    with atomic_output(target, background=True) as sink:
        while sink.fill(read, memoryview(bytearray(256 * 1024))):
            pass
    assert target.read_bytes() == b"".join(chunks)


def test_background_failure_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "extract.csv"
    with pytest.raises(RuntimeError), atomic_output(target, background=True) as sink:  # noqa: PT012
        sink.write(os.urandom(3 << 20))
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_write_private_text_replaces(tmp_path: Path) -> None:
    path = tmp_path / "state" / "fetched.json"
    write_private_text(path, "one")
    write_private_text(path, "two")
    assert path.read_text() == "two"
    assert (path.parent.stat().st_mode & 0o777) == 0o700


def test_read_ahead_yields_blocks_in_order_and_raises_read_errors() -> None:
    data = os.urandom(3 << 20)
    stream = io.BytesIO(data)
    ahead = ReadAhead(stream.readinto, block=256 * 1024)
    try:
        assert b"".join(bytes(view) for view in ahead) == data
    finally:
        ahead.close()

    def broken(buffer: memoryview) -> int:
        raise OSError(5, "Input/output error")

    failing = ReadAhead(broken, block=1024)
    try:
        with pytest.raises(OSError, match="Input/output error"):
            list(failing)
    finally:
        failing.close()


def test_read_ahead_stops_when_the_caller_gives_up() -> None:
    ahead = ReadAhead(io.BytesIO(os.urandom(10 << 20)).readinto, block=64 * 1024)
    for _ in zip(range(3), ahead, strict=False):
        pass
    ahead.close()  # Returns: the thread ends although most of the input is unread.


def test_early_writeback_starts_the_disk_writes_behind_the_writer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    advised: list[tuple[int, int, int]] = []
    monkeypatch.setattr(os, "posix_fadvise",
                        lambda fd, offset, length, advice: advised.append(
                            (offset, length, advice)))
    step = files.WRITEBACK_STEP
    with (tmp_path / "out").open("wb") as handle:
        handle.write(b"k" * 100)  # Kept from an earlier run: not advised again.
        handle.flush()
        writer = OutputWriter(handle.fileno(), early_writeback=True)
        block = bytes(step // 3 + 1)
        for _ in range(7):
            writer.write(block)
        plain = OutputWriter(handle.fileno())
        plain.write(bytes(step))
    assert advised == [(100, 3 * len(block), os.POSIX_FADV_DONTNEED),
                       (100 + 3 * len(block), 3 * len(block), os.POSIX_FADV_DONTNEED)]
    assert (tmp_path / "out").stat().st_size == 100 + 7 * len(block) + step
