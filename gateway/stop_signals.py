"""SIGTERM and SIGINT as a pipe that a long-running command's loop waits on.

A Python signal handler runs in the main thread between two bytecodes, possibly while
that thread holds a lock (a ``threading.Event``'s, a logging handler's); stopping from
inside the handler can then deadlock. So no Python code runs on a signal: the
interpreter's C-level handler writes the signal number to a pipe
(:func:`signal.set_wakeup_fd`), and the loop sees the pipe become readable. Nothing here
is shared with another process, so no dead process can leave it locked.
"""

from __future__ import annotations

import os
import select
import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _noted(_signum: int, _frame: FrameType | None) -> None:
    """The Python-level handler: nothing to do, the wakeup pipe already has the signal."""


class StopSignals:
    """Catch SIGTERM and SIGINT from now on; :meth:`wait` reports whether one arrived.

    Must be created in the main thread (Python delivers signals there only).
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._previous = {signum: signal.signal(signum, _noted) for signum in STOP_SIGNALS}
        self.received: signal.Signals | None = None

    def fileno(self) -> int:
        """The pipe's read end, readable once a stop signal arrived (for ``select``)."""
        return self._read

    def wait(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (``None``: for ever); return whether to stop.

        Another signal with a Python handler may end the wait early, returning False.
        """
        if self.received is None:
            readable, _, _ = select.select([self._read], [], [], timeout)
            if readable:
                self.poll()
        return self.received is not None

    def poll(self) -> bool:
        """Without waiting, note any stop signal the pipe holds; return whether to stop."""
        try:
            numbers = os.read(self._read, 64)
        except BlockingIOError:
            numbers = b""
        # Other signals with a Python handler write to the same pipe; only ours count.
        for number in numbers:
            if number in STOP_SIGNALS and self.received is None:
                self.received = signal.Signals(number)
        return self.received is not None

    @property
    def name(self) -> str:
        """The signal that asked to stop, e.g. ``SIGTERM`` (empty before one arrived)."""
        return self.received.name if self.received is not None else ""

    def close(self) -> None:
        """Give the signals back to their previous handlers."""
        for signum, handler in self._previous.items():
            # None: the handler was not set from Python; the default is the best guess.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._read)
        os.close(self._write)
