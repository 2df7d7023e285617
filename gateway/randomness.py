"""Whether bytes could be ciphertext: cheap tests that need no key.

age's payload is ChaCha20-Poly1305 output, indistinguishable from random bytes. The
gateway cannot check a pre-encrypted file's header MAC (it holds no key), so a real header
followed by plaintext would be stored as it is; these tests catch that payload instead.

:class:`BlockScan` tests *every* byte, with C-speed primitives only (``bytes.translate``,
``bytes.find``, ``bytes.count``: about the cost of the SHA-256 every upload already pays):

- no run of :data:`TEXT_RUN` bytes without a control byte or 0xFF (text in any
  ASCII-compatible encoding: CSV, JSON, XML, HL7, UTF-8 or Latin-1 prose; random bytes
  have one every 8 bytes on average, and such a run by chance is rarer than 1e-28);
- in every :data:`BLOCK` (64 KiB) block, no more bytes 0x00 and 0xFF together than random
  data has with a chance of 1e-20 (an expected 512 in a full block): binary records,
  padding, small integers and UTF-16 text are full of them.

:func:`why_not_random` is stronger but slower (a Python-level byte histogram), so it runs
on samples. Each test has a false-alarm rate far below one in a billion for real ciphertext:

- byte frequencies, by a chi-square test with 255 degrees of freedom, in both tails (text
  and deflate or bzip2 output are too uneven; a counter or a repeated pattern too even);
- compressibility: zlib's fastest level must not shrink the sample by 1% or more;
- for samples too short for those, the share of printable ASCII (text is nearly all of
  it, random bytes about 38%);
- the signatures of compressed formats whose output passes the tests above (xz, zstd).

Compressed plaintext (zip, gzip, xz, zstd) looks random byte by byte: only the sampled tests
and the signatures catch it, at the sampled places. A determined uploader can always pass
them (by encrypting to a key they publish): they
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


def binomial_limit(count: int, *, share: float = 1 / 256, alarm: float = 1e-20) -> int:
    """The smallest number of hits of a byte value (``share`` of random bytes) in ``count``
    random bytes whose chance is below ``alarm``: the exact binomial upper tail."""
    log_p, log_q = math.log(share), math.log1p(-share)
    top = min(count, int(count * share * 4) + 200)
    tail = 0.0
    for hits in range(top, -1, -1):
        tail += math.exp(math.lgamma(count + 1) - math.lgamma(hits + 1)
                         - math.lgamma(count - hits + 1) + hits * log_p + (count - hits) * log_q)
        if tail >= alarm:
            return hits + 1
    return 0


BLOCK = 64 * 1024
TEXT_RUN = 512
# Control bytes other than tab, line feed and carriage return, which text never has.
_CONTROL = frozenset(range(0x20)) - {0x09, 0x0A, 0x0D} | {0x7F}
# One pass of bytes.translate marks every byte for both tests: 0x00 and 0xFF become 0x01
# (counted per block; they break a run of text too), other control bytes 0x02, the rest
# 0x00. A run of text is then a run of zero bytes, found by bytes.find.
_MARKS = bytes(1 if value in (0x00, 0xFF) else 2 if value in _CONTROL else 0
               for value in range(256))
_TEXT_NEEDLE = bytes(TEXT_RUN)
_EXTREME_SHARE = 2 / 256
_BLOCK_LIMIT = binomial_limit(BLOCK, share=_EXTREME_SHARE)


class BlockScan:
    """The every-byte tests over a stream of bytes fed in order, in pieces of any size.

    :meth:`feed` returns the first finding (offset from the first byte fed, and reason),
    or None; :attr:`judged` is how many bytes both tests have passed for good.
    """

    def __init__(self) -> None:
        self.fed = 0
        # The marked end of what was fed, so that a run across two pieces is seen.
        self._run_tail = b""
        # The block being counted: its bytes so far, and its 0x00 and 0xFF bytes.
        self._block_length = 0
        self._block_hits = 0
        self._blocks_end = 0

    @property
    def judged(self) -> int:
        """Bytes in whole blocks counted, and not in a run of text that may yet grow."""
        return min(self._blocks_end, max(0, self.fed - (TEXT_RUN - 1)))

    def feed(self, data: bytes) -> tuple[int, str] | None:
        """Test the next ``data``; return the first finding in it, or None."""
        start, self.fed = self.fed, self.fed + len(data)
        marked = data.translate(_MARKS)
        run = self._find_run(marked, start)
        self._run_tail = (self._run_tail + marked[:TEXT_RUN - 1])[-(TEXT_RUN - 1):] \
            if len(marked) < TEXT_RUN - 1 else marked[-(TEXT_RUN - 1):]
        extreme = self._count(marked)
        findings = [finding for finding in (run, extreme) if finding is not None]
        return min(findings) if findings else None

    def finish(self) -> tuple[int, str] | None:
        """Judge the last, partial block (by the binomial bound for its length)."""
        if self._block_length == 0:
            return None
        return self._judge(self._blocks_end, self._block_length, self._block_hits)

    def _find_run(self, marked: bytes, start: int) -> tuple[int, str] | None:
        joint = self._run_tail + marked[:TEXT_RUN - 1]
        at = joint.find(_TEXT_NEEDLE)
        if at >= 0:
            at += start - len(self._run_tail)
        else:
            at = marked.find(_TEXT_NEEDLE)
            if at < 0:
                return None
            at += start
        return at, (f"it holds {TEXT_RUN} bytes in a row without a control byte, as text "
                    "does (random bytes have one every 8 bytes)")

    def _count(self, marked: bytes) -> tuple[int, str] | None:
        """Count 0x00 and 0xFF per block (aligned on the first byte fed)."""
        offset = 0
        while offset < len(marked):
            take = min(BLOCK - self._block_length, len(marked) - offset)
            self._block_hits += marked.count(1, offset, offset + take)
            self._block_length += take
            offset += take
            if self._block_length == BLOCK:
                finding = self._judge(self._blocks_end, BLOCK, self._block_hits)
                if finding is not None:
                    return finding
                self._blocks_end += BLOCK
                self._block_length = self._block_hits = 0
        return None

    @staticmethod
    def _judge(at: int, length: int, hits: int) -> tuple[int, str] | None:
        limit = _BLOCK_LIMIT if length == BLOCK else \
            binomial_limit(length, share=_EXTREME_SHARE)
        if hits < limit:
            return None
        return at, (f"its {length}-byte block has {hits} bytes 0x00 or 0xFF, random data "
                    f"fewer than {limit}")


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
