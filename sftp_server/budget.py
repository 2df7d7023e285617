"""Memory budgets for data the server holds on a client's behalf: per upload, per SSH
session, per process.

Out-of-order writes wait in memory until the gap before them is filled
(:class:`~sftp_server.handles.ReorderBuffer`). A per-upload limit alone let one client
multiply it by its open handles and sessions: pipelined one-byte writes that each leave
a gap grew a server by half a gigabyte in a second and a half. So every held write is
charged, with its bookkeeping, to the upload's budget, which is charged to its session's,
which is charged to the process's; a write that would pass any of them is refused and
nothing is held.
"""

from __future__ import annotations

import threading

from gateway.errors import PolicyError

MIB = 1 << 20
# What holding one write costs beyond its bytes: the bytes object, its offset, a dict
# slot and a heap entry. tracemalloc measures about 92 (1-byte writes) to 126 bytes;
# the rest is margin for the dict's growth.
ENTRY_OVERHEAD = 160


class BufferFullError(PolicyError):
    """Holding more would pass a memory budget; ``scope`` and ``limit`` say which."""

    def __init__(self, scope: str, limit: int) -> None:
        super().__init__(f"the buffer for out-of-order writes of this {scope} "
                         f"({limit / MIB:g} MiB) is full")
        self.scope = scope
        self.limit = limit


class MemoryBudget:
    """Bytes that may be held at once by one scope, within its parent's budget."""

    def __init__(self, limit: int, *, scope: str, parent: MemoryBudget | None = None) -> None:
        self.limit = limit
        self.scope = scope
        self._parent = parent
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        return self._held

    def take(self, amount: int) -> None:
        """Charge ``amount`` bytes here and to every parent, or raise and charge nothing."""
        with self._lock:
            if self._held + amount > self.limit:
                raise BufferFullError(self.scope, self.limit)
            if self._parent is not None:
                self._parent.take(amount)
            self._held += amount

    def give_back(self, amount: int) -> None:
        """Return ``amount`` bytes taken earlier."""
        with self._lock:
            self._held -= amount
            if self._parent is not None:
                self._parent.give_back(amount)

    def child(self, limit: int, *, scope: str) -> MemoryBudget:
        """A budget of at most ``limit`` bytes, drawn from this one."""
        return MemoryBudget(limit, scope=scope, parent=self)
