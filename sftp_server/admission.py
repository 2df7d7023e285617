"""Admitting connections: overall, per-source and still-signing-in limits, for all workers.

A connection is *unauthenticated* from accept until it signs in. Slow handshakes cost an
attacker nothing, so those connections are held to less than the rest:

- at most ``sftp_max_unauthenticated_per_source`` at once from one address, well below
  the per-source limit, so a few addresses cannot fill the server;
- together, never the last ``sftp_reserve_percent`` of ``sftp_max_connections``: when
  many addresses hold handshakes open, there is still room for users.

An address from which someone signed in within :data:`RETURNING_SECONDS` is *returning*:
neither rule applies to it (only the per-source and overall limits do), so users who
signed in from their address before get in during such an attack, and an office behind
one address can sign many people in at once.

The listener's grace timer (from accept, not from the end of the handshake) ends each
unauthenticated connection after ``sftp_auth_timeout_seconds`` whatever it sends.

Counts live in shared memory so the limits hold across worker processes. Each worker
writes only its own row and reads the others without a lock: there is no cross-process
lock that a killed worker could leave held. The price is a race between workers
admitting at the same instant, which can pass a limit by at most ``workers - 1``
connections. Sources are counted in hashed slots (keyed per start, so an outsider cannot
aim at a slot); two addresses that share a slot only make the limits stricter for both,
or let an address share a returning one's standing.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any

from gateway.config import Settings

log = logging.getLogger(__name__)

SOURCE_SLOTS = 4096
# One row per worker: connections per source slot, unauthenticated connections per source
# slot, then the worker's total and its unauthenticated total.
_UNAUTHENTICATED = SOURCE_SLOTS
_TOTAL = 2 * SOURCE_SLOTS
_UNAUTHENTICATED_TOTAL = _TOTAL + 1
ROW = _TOTAL + 2
# How long an address that signed in keeps its access to the reserve.
RETURNING_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class LimitTable:
    """Shared counters: ``counts`` holds one row of :data:`ROW` ints per worker;
    ``signed_in`` the monotonic second at which each source slot last signed in (0:
    never), written by whichever worker saw the sign-in (the latest write wins)."""

    counts: Any  # multiprocessing RawArray("i", workers * ROW), shared with the workers
    signed_in: Any  # multiprocessing RawArray("i", SOURCE_SLOTS)
    hash_key: bytes
    workers: int

    @classmethod
    def create(cls, context: BaseContext, workers: int, hash_key: bytes) -> LimitTable:
        return cls(context.RawArray("i", workers * ROW), context.RawArray("i", SOURCE_SLOTS),
                   hash_key, workers)

    def connections(self) -> int:
        """Open connections in all workers (read without a lock: each count is one
        aligned int)."""
        return sum(self.counts[worker * ROW + _TOTAL] for worker in range(self.workers))

    def reset_row(self, row: int) -> None:
        """Forget the connections of a worker that died (nothing writes its row now)."""
        for index in range(row * ROW, (row + 1) * ROW):
            self.counts[index] = 0


@dataclass(frozen=True)
class Limits:
    """How many connections may be open, in all and while signing in."""

    total: int
    per_source: int
    unauthenticated_per_source: int
    unauthenticated_total: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        reserve = settings.sftp_max_connections * settings.sftp_reserve_percent // 100
        per_source = settings.sftp_max_connections_per_source
        return cls(settings.sftp_max_connections, per_source,
                   min(settings.sftp_max_unauthenticated_per_source, per_source),
                   max(1, settings.sftp_max_connections - reserve))


class Ticket:
    """One admitted connection's place in the counts, until :meth:`release`."""

    def __init__(self, admission: Admission, source: str, slot: int) -> None:
        self.source = source
        self._admission = admission
        self._slot = slot
        self._signed_in = False
        self._released = False

    def signed_in(self) -> None:
        """The connection signed in: it no longer counts as unauthenticated."""
        if not self._signed_in and not self._released:
            self._signed_in = True
            self._admission.signed_in(self._slot)

    def release(self) -> None:
        """The connection ended."""
        if not self._released:
            self._released = True
            self._admission.release(self._slot, unauthenticated=not self._signed_in)


class Admission:
    """Admits a connection only within every limit, across all workers."""

    def __init__(self, table: LimitTable, *, row: int, limits: Limits,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._table = table
        self._row = row * ROW
        self._limits = limits
        self._clock = clock
        # Guards this worker's own row against its own threads.
        self._lock = threading.Lock()

    def _slot(self, source: str) -> int:
        digest = hashlib.blake2b(source.encode(), key=self._table.hash_key, digest_size=4)
        return int.from_bytes(digest.digest(), "big") % SOURCE_SLOTS

    def _sum(self, offset: int) -> int:
        counts = self._table.counts
        return sum(counts[worker * ROW + offset] for worker in range(self._table.workers))

    def admit(self, source: str) -> Ticket | None:
        """A ticket for a new connection from ``source``, or None (logged) if refused."""
        slot = self._slot(source)
        with self._lock:
            refusal = self._refusal(slot)
            if refusal is None:
                for offset in (slot, _UNAUTHENTICATED + slot, _TOTAL, _UNAUTHENTICATED_TOTAL):
                    self._table.counts[self._row + offset] += 1
        if refusal is not None:
            log.warning("refusing a connection from %s: %s", source, refusal)
            return None
        return Ticket(self, source, slot)

    def _refusal(self, slot: int) -> str | None:
        limits = self._limits
        if self._sum(_TOTAL) >= limits.total:
            return "connection limit reached"
        if self._sum(slot) >= limits.per_source:
            return "connection limit for this address reached"
        if self._returning(slot):
            return None
        if self._sum(_UNAUTHENTICATED + slot) >= limits.unauthenticated_per_source:
            return "too many connections from this address still signing in"
        if self._sum(_UNAUTHENTICATED_TOTAL) >= limits.unauthenticated_total:
            return "the share of connections still signing in is full"
        return None

    def _returning(self, slot: int) -> bool:
        last = int(self._table.signed_in[slot])
        return last > 0 and self._clock() - last < RETURNING_SECONDS

    def signed_in(self, slot: int) -> None:
        with self._lock:
            for offset in (_UNAUTHENTICATED + slot, _UNAUTHENTICATED_TOTAL):
                self._table.counts[self._row + offset] -= 1
            self._table.signed_in[slot] = max(1, int(self._clock()))

    def release(self, slot: int, *, unauthenticated: bool) -> None:
        offsets = [slot, _TOTAL]
        if unauthenticated:
            offsets += [_UNAUTHENTICATED + slot, _UNAUTHENTICATED_TOTAL]
        with self._lock:
            for offset in offsets:
                self._table.counts[self._row + offset] -= 1
