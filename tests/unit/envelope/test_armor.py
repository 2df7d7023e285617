"""ASCII armor: the writer's exact output and the reader's strictness.

The CCTV vectors cover the rejection cases; these tests cover sizes around line and
bulk-decoding boundaries, which the vectors (all small) do not reach.
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.envelope import ArmorError
from gateway.envelope.armor import ArmorReader, ArmorWriter
from gateway.envelope.source import BufferedSource


def _armor(data: bytes, *, pieces: int = 1) -> bytes:
    sink = io.BytesIO()
    writer = ArmorWriter(sink)
    step = max(1, len(data) // pieces)
    for start in range(0, len(data), step):
        writer.write(data[start : start + step])
    writer.close()
    return sink.getvalue()


def _dearmor(text: bytes, step: int = 70_000) -> bytes:
    reader = ArmorReader(BufferedSource(io.BytesIO(text)))
    parts = []
    while part := reader.read(step):
        parts.append(part)
    return b"".join(parts)


@pytest.mark.parametrize("size", [0, 1, 47, 48, 49, 96, 48 * 1024, 48 * 1025 + 5, 200_000])
def test_output_is_strict_pem(size: int) -> None:
    text = _armor(os.urandom(size))
    lines = text.split(b"\n")
    assert lines[0] == b"-----BEGIN AGE ENCRYPTED FILE-----"
    assert lines[-2:] == [b"-----END AGE ENCRYPTED FILE-----", b""]
    body = lines[1:-2]
    assert all(len(line) == 64 for line in body[:-1])
    assert not body or 0 < len(body[-1]) <= 64


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    size=st.integers(0, 150_000),
    pieces=st.integers(1, 5),
    step=st.integers(1, 100_000),
    crlf=st.booleans(),
)
def test_round_trip(seed: int, size: int, pieces: int, step: int, crlf: bool) -> None:
    data = random.Random(seed).randbytes(size)
    text = _armor(data, pieces=pieces)
    if crlf:
        text = text.replace(b"\n", b"\r\n")
    assert _dearmor(text, step) == data


def test_surrounding_whitespace_is_allowed() -> None:
    assert _dearmor(b" \t\r\n" + _armor(b"hello") + b"\n\n  ") == b"hello"


@pytest.mark.parametrize(
    "damage",
    [
        lambda t: t.replace(b"\n", b"\r\n", 1),  # mixed line endings
        lambda t: t[:100] + b" " + t[100:],  # space inside the body
        lambda t: t.replace(b"-----END AGE ENCRYPTED FILE-----\n", b""),
        lambda t: t + b"trailing",
        lambda t: t.replace(b"BEGIN AGE", b"BEGIN PGP"),
        lambda t: t[:35] + t[35:].replace(b"\n", b"\n\n", 1),  # empty line
    ],
)
def test_damaged_armor_is_rejected(damage: Callable[[bytes], bytes]) -> None:
    text = _armor(os.urandom(100_000))
    with pytest.raises(ArmorError):
        _dearmor(damage(text))


def test_short_line_before_the_last_is_rejected() -> None:
    lines = _armor(os.urandom(200)).split(b"\n")
    lines[1] = lines[1][:60]
    with pytest.raises(ArmorError):
        _dearmor(b"\n".join(lines))
