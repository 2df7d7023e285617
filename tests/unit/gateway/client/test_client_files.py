"""Output files on the user's machine: private, atomic, durable; nothing on failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.client.files import OutputWriter, atomic_output, write_private_text


@pytest.mark.parametrize("durable", [True, False])
def test_atomic_output_appears_whole_and_private(tmp_path: Path, durable: bool) -> None:
    target = tmp_path / "extract.csv"
    data = os.urandom(5 << 20)
    with atomic_output(target, durable=durable) as sink:
        for start in range(0, len(data), 300_000):
            sink.write(memoryview(data)[start:start + 300_000])
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


def test_write_private_text_replaces(tmp_path: Path) -> None:
    path = tmp_path / "state" / "fetched.json"
    write_private_text(path, "one")
    write_private_text(path, "two")
    assert path.read_text() == "two"
    assert (path.parent.stat().st_mode & 0o777) == 0o700
