"""Whether bytes could be ciphertext: cheap tests that need no key.

age's payload is ChaCha20-Poly1305 output, indistinguishable from random bytes. The
gateway cannot check a pre-encrypted file's header MAC (it holds no key), so a real header
followed by plaintext would be stored as it is; these tests catch that payload instead.

:class:`BlockScan` tests *every* byte, in numpy passes that release the GIL (so that a
thread of its own runs them beside the session's writes, :mod:`gateway.payload_check`):

- text: no :data:`RUN_CELLS` (7) clean 64-byte cells in a row, aligned on the payload, a
  clean cell being one without a marked byte (0x00-0x08, 0x0E-0x1F or 0xFF; text in any
  ASCII-compatible encoding has none: CSV, JSON, XML, HL7, UTF-8, Latin-1 or cp1252
  prose). Every run of :data:`TEXT_RUN` (511) bytes or more without one holds 7 whole
  cells wherever it starts, so it is always found; runs of 448-510 bytes are found at
  some alignments; shorter ones never. Random bytes have a marked byte every 9 bytes: a
  cell is clean about once in 1,700, 7 given cells with a chance of 2.9e-23
  (:func:`clean_run_chance`), so a false alarm has a chance of about 5e-16 per GiB of
  ciphertext (one place per cell);
- in every :data:`BLOCK` (64 KiB) block, no more bytes 0x00 and 0xFF together than random
  data has with a chance of 1e-20 (an expected 512 in a full block): binary records,
  padding, small integers and UTF-16 text are full of them. A false alarm has a chance
  of about 2e-16 per GiB (16,384 blocks).

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
from collections.abc import Sequence
from types import ModuleType
from typing import Any

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
# The run-of-text test looks at aligned cells of CELL bytes: a cell is clean when it holds
# no marked byte (0x00-0x08, 0x0E-0x1F, 0xFF: bytes text never has; tab, line feed, vertical
# tab, form feed and carriage return are text). RUN_CELLS clean cells in a row are text.
CELL = 64
RUN_CELLS = 7
# Every run of TEXT_RUN bytes or more without a marked byte holds RUN_CELLS whole cells,
# wherever it starts, so it is always found; a run shorter than SHORTEST_FOUND never is.
TEXT_RUN = CELL * (RUN_CELLS + 1) - 1
SHORTEST_FOUND = CELL * RUN_CELLS
_MARKED = frozenset(range(0x09)) | frozenset(range(0x0E, 0x20)) | {0xFF}
_EXTREME_SHARE = 2 / 256
_BLOCK_LIMIT = binomial_limit(BLOCK, share=_EXTREME_SHARE)
Finding = tuple[int, str]


def clean_run_chance(cells: int = RUN_CELLS) -> float:
    """The chance that ``cells`` given aligned cells of random bytes are all clean."""
    return (1 - len(_MARKED) / 256) ** (CELL * cells)


def _numpy() -> ModuleType:
    """numpy, imported on the first pre-encrypted upload only: the client and the admin
    commands never load it (tests/unit/gateway/cli/test_startup.py)."""
    import numpy

    return numpy


def preload() -> None:
    """Import numpy now. An SFTP server calls it once it is serving, in a thread of its
    own: otherwise the first pre-encrypted upload in each server process waited for the
    import (0.14-0.16 s here, and up to 0.5 s on a busy machine)."""
    _numpy()


class BlockScan:
    """The every-byte tests over a stream of bytes fed in order, in batches of any size.

    Each batch is tested in a few numpy passes over whole cells (additions, comparisons,
    a search for nonzero words), which release the GIL, so a thread running them leaves
    the session's Python threads their speed; the Python around them is a few dozen calls
    per batch (a MiB or more makes it negligible). Bytes after the last whole cell wait
    for the next batch, or :meth:`finish`.

    :meth:`feed` returns the first finding (offset from the first byte fed, and reason),
    or None; :attr:`judged` is how many bytes both tests have passed for good.
    """

    def __init__(self) -> None:
        self._np = _numpy()
        self.fed = 0
        # The bytes after the last whole cell, tested with the next batch.
        self._carry = b""
        # The last RUN_CELLS whole cells, where a run found in the next batch may begin.
        self._last_cells = b""
        # Clean cells ending what was fed (fewer than RUN_CELLS, or it was refused).
        self._clean_tail = 0
        # The block being counted: its 0x00 and 0xFF bytes so far, and where it begins.
        self._block_hits = 0
        self._blocks_end = 0
        # Work buffers, reused from batch to batch (fresh ones cost a page fault per 4 KiB).
        self._input: bytearray | None = None
        self._source: Any = None
        self._marked: Any = None

    @property
    def judged(self) -> int:
        """Bytes in whole blocks counted, short of the clean cells that may yet grow into a
        run and the cell before them (where such a run may begin): no byte of a run found
        later lies before this."""
        cells_end = (self.fed - len(self._carry)) // CELL
        return min(self._blocks_end, max(0, (cells_end - self._clean_tail - 1) * CELL))

    def feed(self, data: bytes | bytearray | memoryview | Sequence[bytes | memoryview]
             ) -> Finding | None:
        """Test the next bytes (one piece, or several in order); return the first finding
        in them, or None."""
        np = self._np
        pieces = [data] if isinstance(data, bytes | bytearray | memoryview) else list(data)
        start = self.fed - len(self._carry)
        size = len(self._carry) + sum(len(piece) for piece in pieces)
        self.fed = start + size
        buffer, source, marked = self._buffers(size)
        # Copied by memoryview: a memcpy that keeps the GIL, where numpy's copy would give
        # it up and wait to take it back, once per piece.
        with memoryview(buffer) as into:
            at = 0
            for piece in (self._carry, *pieces):
                into[at:at + len(piece)] = piece
                at += len(piece)
        whole = size // CELL * CELL
        last_cells, carry = self._last_cells, self._carry
        self._last_cells = (last_cells + buffer[max(0, whole - RUN_CELLS * CELL):whole]
                            )[-(RUN_CELLS * CELL):]
        self._carry = bytes(buffer[whole:size])
        # The bytes are changed in place from here on: two batch-sized buffers, not three.
        source, marked = source[:whole], marked[:whole]
        np.add(source, 1, out=source)  # 0xFF becomes 0x00, 0x00-0x08 become 0x01-0x09.
        np.less(source, 2, out=marked)
        counted = self._count(marked, start)
        np.less(source, 10, out=marked)
        np.subtract(source, 0x0F, out=source)  # 0x0E-0x1F (now 0x0F-0x20) become 0x00-0x11.
        np.less(source, 0x12, out=source.view(np.bool_))
        np.bitwise_or(marked, source.view(np.bool_), out=marked)
        first_clean = self._find_run(marked, start)
        # The finding reads the bytes before the run again: the pieces are still as fed.
        run = None if first_clean is None else self._run_start(
            first_clean, last_cells + b"".join([carry, *pieces]), start - len(last_cells))
        findings = [finding for finding in (run, counted) if finding is not None]
        return min(findings) if findings else None

    def finish(self) -> Finding | None:
        """Judge the last, partial block (by the binomial bound for its length), with the
        bytes after the last whole cell; free the work buffers."""
        self._input = self._source = self._marked = None
        self._block_hits += self._carry.count(0) + self._carry.count(0xFF)
        length = self.fed - self._blocks_end
        if length == 0:
            return None
        return self._judge(self._blocks_end, length, self._block_hits)

    def _buffers(self, size: int) -> tuple[bytearray, Any, Any]:
        """The input (a bytearray, and numpy's view of it) and the marks, for ``size``
        bytes."""
        np = self._np
        if self._input is None or len(self._input) < size:
            self._input = bytearray(size)
            self._source = np.frombuffer(self._input, np.uint8)
            self._marked = np.empty(size, np.bool_)
        return self._input, self._source, self._marked

    def _find_run(self, marked: Any, start: int) -> int | None:
        """Where the first RUN_CELLS clean cells in a row begin, counting those that ended
        the last batch, if there are."""
        np = self._np
        count = len(marked) // CELL
        if count == 0:
            return None
        # Any marked byte in each 8 bytes, then in each 64: the second pass is an eighth
        # of the first, and random data leaves only a few clean cells to look at.
        words = marked.view(np.uint64) != 0
        clean = np.flatnonzero(words.view(np.uint64) == 0)
        tail, self._clean_tail = self._clean_tail, 0
        if tail:
            clean = np.concatenate((np.arange(-tail, 0), clean))
        if len(clean) == 0:
            return None
        if len(clean) >= RUN_CELLS:
            spans = clean[RUN_CELLS - 1:] - clean[:len(clean) - RUN_CELLS + 1]
            runs = np.flatnonzero(spans == RUN_CELLS - 1)
            if len(runs):
                return start + int(clean[runs[0]]) * CELL
        if clean[-1] == count - 1:
            # The clean cells that end the batch: those as far from their place as the last.
            shift = clean - np.arange(len(clean))
            self._clean_tail = len(clean) - int(np.searchsorted(shift, shift[-1]))
        return None

    @staticmethod
    def _run_start(first_clean: int, known: bytes, known_start: int) -> Finding:
        """The finding for a run whose first clean cell is at ``first_clean``: the run
        begins after the last marked byte of the cell before it (if there is one), read
        from ``known``, the bytes from ``known_start`` on."""
        before = known[:first_clean - known_start][-CELL:]
        at = first_clean
        for byte in reversed(before):
            if byte in _MARKED:
                break
            at -= 1
        return at, (f"it holds {first_clean - at + SHORTEST_FOUND} bytes or more in a row "
                    "without a control byte, as text does (random bytes have one every 9 "
                    "bytes)")

    def _count(self, extreme: Any, start: int) -> Finding | None:
        """Count 0x00 and 0xFF bytes (``extreme``, from ``start``) per block, aligned on
        the first byte fed."""
        np = self._np
        offset = 0
        while offset < len(extreme):
            block_end = self._blocks_end + BLOCK
            take = min(block_end - start - offset, len(extreme) - offset)
            self._block_hits += int(np.count_nonzero(extreme[offset:offset + take]))
            offset += take
            if start + offset == block_end:
                finding = self._judge(self._blocks_end, BLOCK, self._block_hits)
                if finding is not None:
                    return finding
                self._blocks_end, self._block_hits = block_end, 0
        return None

    @staticmethod
    def _judge(at: int, length: int, hits: int) -> Finding | None:
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
