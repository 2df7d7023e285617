"""The ciphertext check on pre-encrypted uploads: its tests, and where it samples."""

from __future__ import annotations

import io
import os
import random

import pytest

from gateway import envelope
from gateway.envelope.armor import ArmorWriter
from gateway.errors import UsageError
from gateway.payload_check import SPACING, WINDOW, PayloadCheck
from gateway.randomness import CHI_SQUARE_HIGH, CHI_SQUARE_LOW, chi_square, why_not_random

TEXT = b"".join(b"%d,P%07d,1986-04-12,F\n" % (i, i * 7919) for i in range(5000))


def _header() -> bytes:
    sink = io.BytesIO()
    with envelope.Encryptor(sink, [envelope.generate_identity().recipient]) as encryptor:
        encryptor.write(b"")
    data = sink.getvalue()
    return data[:data.index(b"\n", data.index(b"\n--- ") + 1) + 1]


HEADER = _header()


def _check(data: bytes, *, armored: bool = False, pieces: int = 1) -> None:
    check = PayloadCheck(armored=armored)
    cuts = sorted(random.sample(range(1, len(data)), pieces - 1)) if pieces > 1 else []
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        check.feed(data[start:end])
    check.finish()


def test_random_samples_pass_at_every_size() -> None:
    for size in (0, 10, 63, 64, 100, 4095, 4096, 20_000, WINDOW):
        assert why_not_random(os.urandom(size), first=True) is None


def test_chi_square_bounds_match_the_distribution() -> None:
    assert round(CHI_SQUARE_LOW) == 113 and round(CHI_SQUARE_HIGH) == 481
    statistics = [chi_square(os.urandom(WINDOW)) for _ in range(200)]
    assert min(statistics) > CHI_SQUARE_LOW and max(statistics) < CHI_SQUARE_HIGH
    assert 230 < sum(statistics) / len(statistics) < 280


@pytest.mark.parametrize("pieces", [1, 7, 500])
def test_the_verdict_does_not_depend_on_how_the_upload_was_cut(pieces: int) -> None:
    _check(HEADER + os.urandom(300_000), pieces=pieces)
    with pytest.raises(UsageError, match="at byte 300000 is not"):
        _check(HEADER + os.urandom(300_000) + TEXT[:64 * 1024], pieces=pieces)


def test_samples_are_the_head_every_64_mib_and_the_tail() -> None:
    """Plaintext in a sampled window is found wherever it is; between samples it is not
    (the test is a cheap screen, not a proof)."""
    payload = bytearray(os.urandom(SPACING + 4 * WINDOW))
    payload[SPACING:SPACING + len(TEXT)] = TEXT
    with pytest.raises(UsageError, match=f"at byte {SPACING} is not"):
        _check(HEADER + bytes(payload), pieces=50)
    payload[SPACING:SPACING + len(TEXT)] = os.urandom(len(TEXT))
    payload[10 * WINDOW:10 * WINDOW + len(TEXT)] = TEXT
    _check(HEADER + bytes(payload), pieces=50)


def test_armored_payloads_are_decoded_before_sampling() -> None:
    for payload, refused in ((os.urandom(200_000), False), (TEXT, True)):
        armored = io.BytesIO()
        writer = ArmorWriter(armored)
        writer.write(HEADER + payload)
        writer.close()
        if refused:
            with pytest.raises(UsageError, match="not uniformly distributed"):
                _check(armored.getvalue(), armored=True, pieces=30)
        else:
            _check(armored.getvalue(), armored=True, pieces=30)
