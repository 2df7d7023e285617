"""The ranges one open has served: merged, bounded, never less than what was read."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from gateway.served import MAX_FRAGMENTS, ServedRanges, completes_a_download


def test_overlapping_and_touching_ranges_merge() -> None:
    served = ServedRanges()
    for start, end in [(10, 20), (30, 40), (20, 25), (5, 12), (39, 50), (100, 100)]:
        served.add(start, end)
    assert served.ranges == [(5, 25), (30, 50)]
    assert served.total == 40


def test_too_many_fragments_fill_the_narrowest_gap() -> None:
    served = ServedRanges(max_fragments=3)
    for start in (0, 10, 13, 30):
        served.add(start, start + 1)
    assert served.ranges == [(0, 1), (10, 14), (30, 31)]


@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 300)), max_size=300))
def test_ranges_stay_sorted_bounded_and_cover_every_read(reads: list[tuple[int, int]]) -> None:
    served = ServedRanges()
    read: set[int] = set()
    for start, length in reads:
        served.add(start, start + length)
        read.update(range(start, start + length))
    ranges = served.ranges
    assert len(ranges) <= MAX_FRAGMENTS
    assert all(a_end < b_start for (_, a_end), (b_start, _) in itertools.pairwise(ranges))
    covered = {byte for start, end in ranges for byte in range(start, end)}
    assert read <= covered
    assert served.total == len(covered)


def test_a_download_is_each_multiple_of_the_size() -> None:
    assert completes_a_download(before=0, added=100, size=100)
    assert not completes_a_download(before=0, added=99, size=100)
    assert completes_a_download(before=99, added=1, size=100)
    assert not completes_a_download(before=100, added=99, size=100)
    assert completes_a_download(before=150, added=50, size=100)
