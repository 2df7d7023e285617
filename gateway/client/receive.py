"""What an SSH channel received, kept as the packets it came in: no copies.

paramiko's ``Channel`` buffers received data in a ``BufferedPipe``, an ``array`` that
every packet is appended to (a copy) and every ``recv`` slices and converts to bytes
(another copy), both holding the GIL the decrypting threads need. :class:`BlockPipe`
keeps each packet's bytes as they are and hands whole packets to ``recv``, so a
download's bytes are copied once, into the decryptor's batch. It has the interface of
``BufferedPipe`` that ``Channel`` uses (``feed``, ``read``, ``read_ready``, ``empty``,
``close``, ``set_event``, ``len``); :func:`install` puts it in place of a channel's
``in_buffer``, and :data:`CHANNEL_USES` names what ``Channel`` is checked to use.

The gateway's SFTP server receives uploads through it too (:func:`install_if_fresh`):
there paramiko's pipe cost about a tenth of the server's CPU during an upload, the same
for ``blindpost send`` and OpenSSH's ``sftp put``.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import paramiko
from paramiko.buffered_pipe import BufferedPipe, PipeTimeout

# The BufferedPipe methods paramiko's Channel calls on its in_buffer (checked by the
# tests against the installed paramiko).
CHANNEL_USES = frozenset({"close", "feed", "read", "read_ready", "set_event"})


class BlockPipe:
    """A thread-safe queue of received byte blocks with ``BufferedPipe``'s interface."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._blocks: deque[bytes] = deque()
        # Where the first block's unread bytes start: a read of part of a block takes a
        # slice of what it asked for, and leaves the rest where it is, uncopied.
        self._start = 0
        self._size = 0
        self._closed = False
        self._event: threading.Event | None = None

    def set_event(self, event: threading.Event) -> None:
        with self._lock:
            self._event = event
            if self._closed or self._size:
                event.set()
            else:
                event.clear()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        block = data if isinstance(data, bytes) else bytes(data)
        with self._lock:
            if self._event is not None:
                self._event.set()
            self._blocks.append(block)
            self._size += len(block)
            self._ready.notify_all()

    def read_ready(self) -> bool:
        with self._lock:
            return self._size > 0

    def read(self, nbytes: int, timeout: float | None = None) -> bytes:
        """The next received block, or its first ``nbytes``; b"" once closed and empty.

        Raises ``PipeTimeout`` if nothing arrives within ``timeout`` seconds.
        """
        with self._lock:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._blocks and not self._closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise PipeTimeout
                self._ready.wait(left)
            if not self._blocks:
                return b""
            block, start = self._blocks[0], self._start
            if len(block) - start <= nbytes:
                self._blocks.popleft()
                self._start = 0
                if start:
                    block = block[start:]
            else:
                block = block[start:start + nbytes]
                self._start = start + nbytes
            self._size -= len(block)
            if not self._size and self._event is not None and not self._closed:
                self._event.clear()
            return block

    def empty(self) -> bytes:
        with self._lock:
            if self._start:
                self._blocks[0] = self._blocks[0][self._start:]
                self._start = 0
            out = b"".join(self._blocks)
            self._blocks.clear()
            self._size = 0
            if self._event is not None and not self._closed:
                self._event.clear()
            return out

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._ready.notify_all()
            if self._event is not None:
                self._event.set()

    def __len__(self) -> int:
        with self._lock:
            return self._size


def install(channel: paramiko.Channel) -> None:
    """Give ``channel`` a :class:`BlockPipe` before anything was received on it."""
    if not install_if_fresh(channel):
        raise RuntimeError("install a BlockPipe on a fresh channel only")


def install_if_fresh(channel: paramiko.Channel) -> bool:
    """Give ``channel`` a :class:`BlockPipe` if nothing was received on it yet (else it
    keeps paramiko's pipe, which works as well, only slower); say whether it did.

    Called from the transport's thread, which is the one that feeds the channel, so no
    data can arrive between the check and the swap.
    """
    if not isinstance(channel.in_buffer, BufferedPipe) or len(channel.in_buffer):
        return False
    channel.in_buffer = BlockPipe()
    return True
