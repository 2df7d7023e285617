"""Counters an SFTP node keeps per worker process, in shared memory.

Store errors happen in worker processes, but ``/metrics`` is served by the process that
supervises them; each worker adds to its own slot of a shared array and the supervisor
sums the slots. Only this process-level wiring lives here: what the counters mean is in
:mod:`sftp_server.metrics`.
"""

from __future__ import annotations

import threading
from multiprocessing.context import SpawnContext
from typing import Any


class NodeCounters:
    """One store-error count per worker process, summed by the supervisor."""

    def __init__(self, context: SpawnContext, workers: int) -> None:
        self.slots: Any = context.Array("q", workers)  # multiprocessing.Array of int64

    def store_errors(self) -> int:
        """The node's store errors since start (all workers)."""
        with self.slots.get_lock():
            return int(sum(self.slots))


class _Slot:
    """This process's slot, set once by :func:`bind`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: NodeCounters | None = None
        self._index = 0

    def bind(self, counters: NodeCounters, index: int) -> None:
        with self._lock:
            self._counters, self._index = counters, index

    def add(self) -> None:
        with self._lock:
            counters = self._counters
        if counters is not None:
            with counters.slots.get_lock():
                counters.slots[self._index] += 1


_SLOT = _Slot()


def bind(counters: NodeCounters, index: int) -> None:
    """Make this process count into ``counters``' slot ``index``."""
    _SLOT.bind(counters, index)


def count_store_error() -> None:
    """Record that a request failed because the object store failed."""
    _SLOT.add()
