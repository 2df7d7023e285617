"""One receive budget per worker process, shared out as the SFTP channels' windows.

An SSH client may send as much as its channel's window before the gateway takes any of
it, so an upload that waits (for an S3 part buffer, say) holds up to its window in
memory. A fixed window per channel makes that memory grow with the number of sessions,
and a window small enough for 200 sessions slows a lone upload (its speed is at most
the window over the round-trip time). So the process has one budget, and each open
SFTP channel's window is its share: ``clamp(budget / channels_open, minimum, maximum)``,
recomputed as channels open and close.

SSH cannot take back a window already granted. A channel's window shrinks by the
receiver granting less back as the application reads: :meth:`ChannelWindow.consumed`
grants only what keeps the bytes the channel may still hold (credit the client has not
used, plus what it sent that was not read yet) within the current share, and grants up
to the share again when it grows. The share is never below ``minimum``, so a channel
that holds nothing can always be granted something and no upload stalls; beyond
``budget / minimum`` channels the total may exceed the budget by that floor.

Only arithmetic lives here; :func:`sftp_server.paramiko_fence.budget_channel_window`
hooks it into a paramiko channel.
"""

from __future__ import annotations

import threading

# A window increase is sent once the room to grant is at least this fraction of the
# share (paramiko's own threshold is a tenth of the window): an adjustment per packet
# would cost a message each, and waiting for the whole window would stop the sender.
GRANT_FRACTION = 10


class ReceiveBudget:
    """Bytes the SFTP channels of one process may be sent ahead of being read."""

    def __init__(self, total: int, *, minimum: int, maximum: int) -> None:
        if not 0 < minimum <= maximum:
            raise ValueError(f"receive window bounds out of order: {minimum}, {maximum}")
        self.total = total
        self.minimum = minimum
        self.maximum = maximum
        self._lock = threading.Lock()
        self._channels = 0
        self._share = maximum
        self._update()

    @property
    def channels(self) -> int:
        """How many channels are open."""
        return self._channels

    @property
    def share(self) -> int:
        """Each open channel's window now (a new channel's, when none is open)."""
        return self._share

    def open(self, *, granted: int) -> ChannelWindow:
        """Count a channel whose client was granted ``granted`` bytes and read nothing."""
        with self._lock:
            self._channels += 1
            self._update()
        return ChannelWindow(self, granted=granted)

    def _close(self) -> None:
        with self._lock:
            self._channels -= 1
            self._update()

    def _update(self) -> None:
        # Under the lock (or in __init__); readers take the int as it is, atomically.
        self._share = max(self.minimum, min(self.maximum,
                                            self.total // max(1, self._channels)))


class ChannelWindow:
    """One channel's part of a :class:`ReceiveBudget`.

    ``held`` is what the client was granted and the application has not read yet: the
    credit the client still has plus the bytes received and buffered. Called by the one
    thread that reads the channel, and once from the thread that opened it.
    """

    def __init__(self, budget: ReceiveBudget, *, granted: int) -> None:
        self._budget = budget
        self._held = granted
        self._closed = False
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        return self._held

    def consumed(self, n: int) -> int:
        """The application read ``n`` bytes; return how many to grant the client back."""
        with self._lock:
            self._held -= n
            return self._grant()

    def top_up(self) -> int:
        """Return how many bytes to grant now to bring the channel up to its share."""
        with self._lock:
            return self._grant()

    def close(self) -> None:
        """The channel is closed: its share goes back to the others (once)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._budget._close()

    def _grant(self) -> int:
        if self._closed:
            return 0
        share = self._budget.share
        room = share - self._held
        # Above the share (it shrank since the grant): nothing, until reads bring the
        # channel below it. Holding nothing, the room is the whole share (at least the
        # minimum), past the threshold, so the channel cannot stall.
        if room < max(1, share // GRANT_FRACTION):
            return 0
        self._held += room
        return room
