"""What of a stored file has been served to an account: the basis of download limits.

A limit counts bytes, not opens. Counting complete reads of one handle let a partner
read a file with a limit of one any number of times: all but its last byte on one
handle, the last byte on another, neither of them "complete". So every open records the
ranges it served (:class:`ServedRanges`, merged in memory, then rows of
``served_ranges`` when it closes, shared by every worker and node), and the account has
downloaded the file once more each time the bytes served to it reach another multiple of
the file's size.

Every byte served is at least as many bytes as the file has, so a file read in pieces
over several handles and connections is a download once its last missing piece is
served, and an interrupted download resumed with only its missing ranges is one
download. Counting bytes rather than coverage also closes the next trick: leaving out a
byte that every age file has in the same place (the first) and reading the rest again
and again. Ranges one handle reads twice count once (that client already has them);
ranges read again on a new handle count again. What can leave the server uncounted is
bounded by one copy less a byte, in pieces.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.db.models import ServedRange

# A handle whose reads leave more separate ranges than this gets the narrowest gaps
# counted as served: tracking them costs memory and rows, and counting them can only
# make a limit stricter for a client that reads so oddly.
MAX_FRAGMENTS = 64


class ServedRanges:
    """The byte ranges one open file has served, merged, in offset order."""

    def __init__(self, max_fragments: int = MAX_FRAGMENTS) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._max = max_fragments

    def add(self, start: int, end: int) -> None:
        """Record that bytes ``[start, end)`` were served."""
        if end <= start:
            return
        # Ranges that overlap or touch [start, end) merge with it.
        first = bisect.bisect_left(self._ends, start)
        last = bisect.bisect_right(self._starts, end)
        if first < last:
            start, end = min(start, self._starts[first]), max(end, self._ends[last - 1])
        self._starts[first:last] = [start]
        self._ends[first:last] = [end]
        if len(self._starts) > self._max:
            self._fill_narrowest_gap()

    def _fill_narrowest_gap(self) -> None:
        gaps = [self._starts[i + 1] - self._ends[i] for i in range(len(self._starts) - 1)]
        i = gaps.index(min(gaps))
        self._ends[i] = self._ends[i + 1]
        del self._starts[i + 1], self._ends[i + 1]

    @property
    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))

    @property
    def total(self) -> int:
        """How many distinct bytes were served."""
        return sum(end - start for start, end in self.ranges)


def record(session: Session, *, transfer_id: str, account_id: int,
           ranges: Sequence[tuple[int, int]], now: datetime) -> int:
    """Add the ranges an open served; return the bytes served to the account before it.

    The caller holds the transfer row locked, so two opens that close at once both see
    each other.
    """
    before = session.scalar(select(func.coalesce(func.sum(
        ServedRange.end_byte - ServedRange.start_byte), 0)).where(
        ServedRange.transfer_id == transfer_id, ServedRange.account_id == account_id))
    session.add_all(ServedRange(transfer_id=transfer_id, account_id=account_id,
                                start_byte=start, end_byte=end, served_at=now)
                    for start, end in ranges)
    return int(before or 0)


def completes_a_download(*, before: int, added: int, size: int) -> bool:
    """Whether ``added`` more bytes, after ``before``, reach another multiple of ``size``."""
    return size > 0 and (before + added) // size > before // size
