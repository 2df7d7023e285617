"""The numpy every-byte scan (gateway.randomness.BlockScan) equals a plain Python reading of
its two tests, byte by byte, on the edges where a vectorised scan goes wrong: runs across
writes, cells and blocks, a run that continues a batch's clean tail, short final blocks."""

from __future__ import annotations

import itertools
import os
import random

import pytest

from gateway.randomness import (
    _BLOCK_LIMIT,
    _MARKED,
    BLOCK,
    CELL,
    RUN_CELLS,
    BlockScan,
    binomial_limit,
    clean_run_chance,
)

TEXT = b"".join(b"%d,P%07d,1986-04-12,F\n" % (i, i * 7919) for i in range(3000))


def reference(data: bytes) -> tuple[int | None, int | None]:
    """Where each test first fails on ``data``, read byte by byte: (run, block)."""
    clean = [not any(byte in _MARKED for byte in data[at:at + CELL])
             for at in range(0, len(data) - CELL + 1, CELL)]
    run = None
    for cell in range(len(clean) - RUN_CELLS + 1):
        if all(clean[cell:cell + RUN_CELLS]):
            run = cell * CELL
            while run > 0 and data[run - 1] not in _MARKED:
                run -= 1
            break
    block = None
    for at in range(0, len(data), BLOCK):
        piece = data[at:at + BLOCK]
        limit = _BLOCK_LIMIT if len(piece) == BLOCK else binomial_limit(len(piece),
                                                                        share=2 / 256)
        if piece.count(0) + piece.count(0xFF) >= limit:
            block = at
            break
    return run, block


def scan(data: bytes, cuts: list[int]) -> tuple[int, str] | None:
    """The scan's first finding, fed ``data`` cut at ``cuts`` (a batch of two pieces
    between every other cut, to test batches as well as single pieces)."""
    blockscan = BlockScan()
    edges = [0, *cuts, len(data)]
    pieces = [data[start:end] for start, end in itertools.pairwise(edges)]
    for number in range(0, len(pieces), 2):
        batch = pieces[number:number + 2]
        finding = blockscan.feed(batch if len(batch) == 2 else batch[0])
        if finding is not None:
            return finding
        assert blockscan.judged <= blockscan.fed
    return blockscan.finish()


def _random(size: int) -> bytearray:
    return bytearray(os.urandom(size))


def _text_at(data: bytearray, at: int, length: int) -> bytearray:
    """``length`` bytes of text at ``at``, fenced by a control byte on each side."""
    if at:
        data[at - 1] = 0x01
    data[at:at + length] = TEXT[:length]
    if at + length < len(data):
        data[at + length] = 0x02
    return data


def _extreme_block(data: bytearray, at: int, count: int) -> bytearray:
    """``count`` zero bytes spread from ``at`` (one in 8: an array of small integers)."""
    data[at:at + 8 * count:8] = bytes(count)
    return data


CASES = {
    "random": _random(3 * BLOCK + 100),
    "random, short": _random(1000),
    "run at the start": _text_at(_random(2 * BLOCK), 0, 600),
    "run at the very end": _text_at(_random(2 * BLOCK + 37), 2 * BLOCK + 37 - 520, 520),
    "run across a block edge": _text_at(_random(3 * BLOCK), BLOCK - 300, 700),
    "run across a cell edge, shortest always found": _text_at(_random(BLOCK), 5000 + 1, 511),
    "run just long enough when aligned": _text_at(_random(BLOCK), 64 * 100, 448),
    "run one byte too short when aligned": _text_at(_random(BLOCK), 64 * 100, 447),
    "run of 500 off a cell edge": _text_at(_random(BLOCK), 64 * 100 + 40, 500),
    "zero bytes in the second block": _extreme_block(_random(3 * BLOCK), BLOCK + 8, 900),
    "zero bytes in a short last block": _extreme_block(_random(2 * BLOCK + 2000),
                                                        2 * BLOCK, 100),
    "zero bytes across a block edge, under the limit in each":
        _extreme_block(_random(3 * BLOCK), BLOCK - 8 * 80, 160),
}


@pytest.mark.parametrize("name", CASES)
def test_the_scan_equals_the_reference(name: str) -> None:
    data = bytes(CASES[name])
    run, block = reference(data)
    expected = min((found for found in (run, block) if found is not None), default=None)
    # Every cut tested alone, then many at once, including cuts inside a cell and at the
    # edges of blocks and cells.
    single = [1, CELL - 1, CELL, CELL + 1, 1000, BLOCK - 1, BLOCK, BLOCK + 1, len(data) - 1]
    layouts = [[], *[[cut] for cut in single if 0 < cut < len(data)],
               sorted(random.sample(range(1, len(data)), 40)),
               list(range(7, len(data), 301))]
    for cuts in layouts:
        finding = scan(data, cuts)
        if run is None or block is None:
            # One test fails, or none: the scan finds exactly it.
            assert (finding[0] if finding else None) == expected, (name, cuts)
        else:
            # Both fail: a batch reports the first finding in it, so the block test (judged
            # at the block's end) may come second.
            assert finding is not None and finding[0] in (run, block), (name, cuts)


def test_a_run_that_continues_a_clean_tail_is_found_where_it_began() -> None:
    """Six clean cells end a batch, one more starts the next: a run of seven."""
    data = _text_at(_random(BLOCK), 10 * CELL - 5, 7 * CELL + 5)
    blockscan = BlockScan()
    assert blockscan.feed(bytes(data[:16 * CELL])) is None
    assert blockscan.judged <= 10 * CELL - 5  # The clean tail and the cell before it wait.
    finding = blockscan.feed(bytes(data[16 * CELL:]))
    assert finding is not None and finding[0] == 10 * CELL - 5


def test_judged_never_passes_a_run_found_later() -> None:
    data = _text_at(_random(4 * BLOCK), 2 * BLOCK + 3 * CELL + 9, 1000)
    blockscan = BlockScan()
    for start in range(0, len(data), 4096):
        finding = blockscan.feed(bytes(data[start:start + 4096]))
        if finding is not None:
            assert finding[0] == 2 * BLOCK + 3 * CELL + 9
            break
        assert blockscan.judged <= 2 * BLOCK + 3 * CELL + 9
    else:
        pytest.fail("the run was not found")


def test_the_false_alarm_rates_stated_hold() -> None:
    """The rates docs/security.md and the module state, for random bytes."""
    per_place = clean_run_chance()
    assert 1e-23 < per_place < 1e-22
    # One chance per cell: a TiB of ciphertext has 2**34 of them.
    assert per_place * 2**34 < 1e-9
    # A random cell is clean about once in 1,700.
    assert 1 / 3000 < clean_run_chance(1) < 1 / 1500
