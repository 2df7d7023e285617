"""A second process that reads and hashes leaves while verification builds the tree.

Verification of a large log spends most of its time per entry in two places: reading
rows from the database and building the tree (which must stay in one process, in
index order), and recognising each leaf's form and hashing it
(:func:`gateway.audit.leaves.usual_leaf_hashes`), which needs nothing but the rows. The
verifier hands batches of rows to this process and goes on reading; what comes back is,
per batch, the leaf hashes or "not all in the usual form", and the verifier then does
exactly what it does with hashes it computed itself: the tree, the checkpoints, the
stored nodes and the MACs are all checked in the verifier, and a batch that is not as
the log writes it is checked there entry by entry. Both paths therefore report the same
findings; the worker can only save time.

The two processes are our own code, started by the verifier (``python -m
gateway.audit.leaf_worker FD``, a subprocess, not :mod:`multiprocessing`, whose pipes
pickle), and speak a small framed binary protocol - no pickle, nothing that could run
code from a row. The bulk passes through memory both map (a ``memfd``, else an unlinked
temporary file, handed over as ``FD``), in two slots; the child's stdin and stdout
carry only a few bytes per batch:

* request, in a slot: ``<QIIII`` (first index, entry count, byte lengths of the three
  fields), then the time column texts, the tag columns and the leaves, each field
  UTF-8, joined by NUL (which no leaf in the usual form contains: a batch that splits
  into more parts is simply "not usual"); on stdin ``<BI``, the slot and the length;
* reply: 32 bytes per hash, in the same slot; on stdout ``<BI`` (1 when every leaf is
  usual, the number of hashes).

No key reaches the worker: entry MACs are checked in the verifier. Only the standard
library is used (an offline verifier on a client-only install runs this too).
"""

from __future__ import annotations

import mmap
import os
import select
import struct
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from gateway.audit.leaves import usual_leaf_hashes
from gateway.audit.tags import AuditTag

_REQUEST = struct.Struct("<QIIII")
REPLY = struct.Struct("<BI")
# On the pipe to the worker: which slot of the shared memory holds a request, its length.
_NOTICE = struct.Struct("<BI")
# Requests in flight (one being answered, one waiting) and the room for each: a batch of
# 10,000 usual leaves takes about 4 MB. A larger one is hashed by the verifier itself.
SLOTS = 2
SLOT_SIZE = 16 << 20
_HASH = 32
_TAGS = frozenset(tag.value for tag in AuditTag)


class WorkerGoneError(Exception):
    """The worker process ended or stopped answering: compute locally instead."""


def encode_request(rows: Sequence[Sequence[Any]]) -> bytes | None:
    """The request for entry rows ``(idx, time, tag, leaf, mac)`` with consecutive
    indexes, or None when they cannot be sent (not consecutive, a column that is not
    text): such a batch is checked entry by entry anyway."""
    first = rows[0][0]
    if rows[-1][0] != first + len(rows) - 1:
        return None
    try:
        fields = ["\x00".join(map(itemgetter(column), rows)).encode() for column in (1, 2, 3)]
    except (TypeError, UnicodeEncodeError):
        return None
    return b"".join([_REQUEST.pack(first, len(rows), *map(len, fields)), *fields])


def answer(request: bytes) -> bytes:
    """The reply to one request (what the worker process computes)."""
    first, count, *lengths = _REQUEST.unpack_from(request)
    at, fields = _REQUEST.size, []
    for length in lengths:
        fields.append(request[at:at + length].decode(errors="replace").split("\x00"))
        at += length
    hashes = None
    if all(len(field) == count for field in fields):
        times, tags, texts = fields
        hashes = usual_leaf_hashes(first, times, tags, texts, _TAGS)
    if hashes is None:
        return REPLY.pack(0, 0)
    return b"".join([REPLY.pack(1, len(hashes)), *hashes])


def _read_exactly(fd: int, size: int) -> bytes | None:
    """``size`` bytes from ``fd``, or None at end of file."""
    parts: list[bytes] = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            return None
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def serve(shared_fd: int, slots: int, slot_size: int, read_fd: int, write_fd: int) -> None:
    """Answer requests until end of file on ``read_fd``: each names a slot of the shared
    memory (``shared_fd``, ``slots`` of ``slot_size`` bytes) and the length of the request
    in it; the reply goes into the same slot and its header onto ``write_fd``."""
    with mmap.mmap(shared_fd, slots * slot_size) as shared:
        while (notice := _read_exactly(read_fd, _NOTICE.size)) is not None:
            slot, length = _NOTICE.unpack(notice)
            base = slot * slot_size
            reply = answer(shared[base:base + length])
            header, body = reply[:REPLY.size], reply[REPLY.size:]
            shared[base:base + len(body)] = body
            _write_all(write_fd, header)


def _shared_memory() -> int:
    """A descriptor of memory no other process can open by name: a memfd on Linux, else
    an unlinked temporary file (0600)."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("blindpost-leaves")
    with tempfile.TemporaryFile() as backing:
        return os.dup(backing.fileno())


class LeafWorker:
    """The verifier's side: a worker process, requests sent and replies taken in order.

    Requests and replies (megabytes a batch) pass through shared memory, one slot per
    request in flight; the pipes carry only a few bytes each way, so neither process
    ever waits on a full pipe.
    """

    def __init__(self) -> None:
        self._slots, self._slot_size = SLOTS, SLOT_SIZE
        self._shared_fd = _shared_memory()
        os.ftruncate(self._shared_fd, self._slots * self._slot_size)
        self._shared = mmap.mmap(self._shared_fd, self._slots * self._slot_size)
        # Our own interpreter and module, arguments a number: nothing from input.
        self._process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "gateway.audit.leaf_worker",
             *map(str, (self._shared_fd, self._slots, self._slot_size))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
            pass_fds=(self._shared_fd,))
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None
        assert stdout is not None
        self._stdin, self._stdout = stdin, stdout
        self._in, self._out = stdin.fileno(), stdout.fileno()
        self._sent = self._received = 0

    @property
    def outstanding(self) -> int:
        """Requests sent whose replies were not taken yet."""
        return self._sent - self._received

    def has_room(self, request: bytes, count: int) -> bool:
        """Whether ``request`` (for ``count`` entries) can be sent now."""
        return (self.outstanding < self._slots and
                max(len(request), count * _HASH) <= self._slot_size)

    def send(self, request: bytes) -> None:
        """Send a request (see :func:`encode_request` and :meth:`has_room`)."""
        base = (self._sent % self._slots) * self._slot_size
        self._shared[base:base + len(request)] = request
        try:
            _write_all(self._in, _NOTICE.pack(self._sent % self._slots, len(request)))
        except OSError as exc:
            raise WorkerGoneError from exc
        self._sent += 1

    def ready(self) -> bool:
        """Whether the oldest reply can be read without waiting."""
        return bool(select.select([self._out], [], [], 0)[0])

    def receive(self) -> list[bytes] | None:
        """The oldest reply: the leaf hashes, or None when not every leaf was usual."""
        header = _read_exactly(self._out, REPLY.size)
        if header is None:
            raise WorkerGoneError
        usual, count = REPLY.unpack(header)
        base = (self._received % self._slots) * self._slot_size
        self._received += 1
        if not usual:
            return None
        body = self._shared[base:base + count * _HASH]
        return [body[at:at + _HASH] for at in range(0, len(body), _HASH)]

    def close(self) -> None:
        """End the worker (it exits at the end of its input) and wait for it."""
        self._stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._stdout.close()
        self._shared.close()
        os.close(self._shared_fd)


def available() -> bool:
    """Whether a second process can help: a core free to run it (more than one core, and
    a load average that leaves one idle), and pipes that :func:`select.select` can watch
    (POSIX). Measured on a shared 2-core machine, the worker only adds its own cost when
    every core is already busy."""
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)
    return os.name == "posix" and cores > 1 and os.getloadavg()[0] < cores - 0.5


if __name__ == "__main__":
    descriptor, count, size = map(int, sys.argv[1:4])
    serve(descriptor, count, size, sys.stdin.fileno(), sys.stdout.fileno())
