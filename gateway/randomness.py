"""Whether a sample of bytes could be ciphertext: cheap tests that need no key.

age's payload is ChaCha20-Poly1305 output, indistinguishable from random bytes. The
gateway cannot check a pre-encrypted file's header MAC (it holds no key), so a real header
followed by plaintext would be stored as it is; these tests catch that payload instead.
Each has a false-alarm rate far below one in a billion for real ciphertext:

- byte frequencies, by a chi-square test with 255 degrees of freedom, in both tails (text
  and deflate or bzip2 output are too uneven; a counter or a repeated pattern too even);
- compressibility: zlib's fastest level must not shrink the sample by 1% or more;
- for samples too short for those, the share of printable ASCII (text is nearly all of
  it, random bytes about 38%);
- the signatures of compressed formats whose output passes the tests above (xz, zstd).

A determined uploader can always pass them (by encrypting to a key they publish): they
catch mistakes and naive tools, not an adversary who controls the client.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter

# Samples at least this long get the statistical tests (16 expected per byte value).
MIN_STATISTICAL = 4096
# Samples shorter than this are not judged at all.
MIN_TEXT = 64
# Standard deviations from the mean at which a statistic counts as impossible for random
# input: a normal tail probability of about 6e-16.
_Z = 8.0
_DEGREES = 255
_MIN_SAVING = 0.01
_TEXT_BYTES = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}
_SIGNATURES = {b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd",
               b"7z\xbc\xaf\x27\x1c": "7z", b"PK\x03\x04": "zip"}


def _chi_square_bounds(degrees: int, z: float) -> tuple[float, float]:
    """The chi-square values ``z`` standard deviations below and above the mean
    (Wilson-Hilferty's normal approximation, accurate here to a fraction of a percent)."""
    a = 2 / (9 * degrees)
    spread = z * math.sqrt(a)
    return degrees * (1 - a - spread) ** 3, degrees * (1 - a + spread) ** 3


CHI_SQUARE_LOW, CHI_SQUARE_HIGH = _chi_square_bounds(_DEGREES, _Z)


def chi_square(sample: bytes | bytearray) -> float:
    """Pearson's chi-square statistic of the byte values in ``sample`` against uniform."""
    expected = len(sample) / 256
    counts = Counter(sample)
    return sum((counts.get(value, 0) - expected) ** 2 for value in range(256)) / expected


def why_not_random(sample: bytes | bytearray, *, first: bool = False) -> str | None:
    """Why ``sample`` cannot be ciphertext, or None if it could be.

    ``first`` says the sample starts the payload, where a compressed file would put
    its signature.
    """
    if first:
        for signature, name in _SIGNATURES.items():
            if sample.startswith(signature):
                return f"it starts with the {name} signature"
    if len(sample) >= MIN_STATISTICAL:
        return _statistical(sample)
    if len(sample) >= MIN_TEXT:
        return _textual(sample)
    return None


def _statistical(sample: bytes | bytearray) -> str | None:
    statistic = chi_square(sample)
    if not CHI_SQUARE_LOW <= statistic <= CHI_SQUARE_HIGH:
        return (f"its byte values are not uniformly distributed (chi-square {statistic:.0f}, "
                f"random data stays within {CHI_SQUARE_LOW:.0f}-{CHI_SQUARE_HIGH:.0f})")
    saved = 1 - len(zlib.compress(sample, 1)) / len(sample)
    if saved >= _MIN_SAVING:
        return f"it compresses by {saved:.0%}"
    return None


def _textual(sample: bytes | bytearray) -> str | None:
    share = len(_TEXT_BYTES) / 256
    text = sum(1 for byte in sample if byte in _TEXT_BYTES)
    limit = len(sample) * share + _Z * math.sqrt(len(sample) * share * (1 - share))
    if text > limit:
        return f"it looks like text ({text} of {len(sample)} bytes are printable)"
    return None
