"""A small SFTP version 3 client over an SSH channel, made for whole-file transfers.

paramiko's own ``SFTPClient`` sends 32 KiB requests and prefetches a whole file's
worth of reads at once, and it drops extended attributes on the floor. This client
speaks only what ``blindpost send`` and ``fetch`` need: it keeps a bounded window of
large requests in flight (as large as the server's ``limits@openssh.com`` allows),
returns extended attributes, and sends Blindpost's ``declare-recipients`` request. It
uses only the public ``Channel`` API (``sendall`` and ``recv``), and a :class:`Sender`
for the data of write requests when it is given one (``gateway.client.transmit``).
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.data_elements import Contents
from gateway.errors import GatewayError, NotFoundError, PolicyError, RemoteError
from gateway.sftp_extensions import DECLARE_CONTENTS, DECLARE_RECIPIENTS
from gateway.terminal import shown

VERSION = 3
# Packet types (draft-ietf-secsh-filexfer-02).
INIT, VERSION_REPLY, OPEN, CLOSE, READ, WRITE = 1, 2, 3, 4, 5, 6
OPENDIR, READDIR, REMOVE, STAT = 11, 12, 13, 17
STATUS, HANDLE, DATA, NAME, ATTRS = 101, 102, 103, 104, 105
EXTENDED, EXTENDED_REPLY = 200, 201
# Status codes.
OK, EOF, NO_SUCH_FILE, PERMISSION_DENIED = 0, 1, 2, 3
# Open flags.
OPEN_READ, OPEN_WRITE, OPEN_CREATE, OPEN_TRUNCATE = 0x1, 0x2, 0x8, 0x10
# Attribute flags.
_SIZE, _UIDGID, _PERMISSIONS, _TIMES, _EXTENDED = 0x1, 0x2, 0x4, 0x8, 0x80000000

# Without limits@openssh.com, the sizes every server accepts.
DEFAULT_REQUEST = 32 * 1024
# What an SSH channel packet may carry besides its data (paramiko keeps this much below
# the agreed maximum packet size), and what an SFTP data reply adds to the data: length,
# type, request id and the data's length.
_CHANNEL_OVERHEAD = 64
_DATA_REPLY_OVERHEAD = 13
# What an SFTP write request adds to its data besides the handle: length, type, request
# id, the handle's length, offset and the data's length.
_WRITE_OVERHEAD = 25
# The most we ask for at once, whatever the server allows.
MAX_REQUEST = 255 * 1024
# Requests in flight per transfer: 64 x 255 KiB keeps a fast link busy.
WINDOW = 64
# Reads are sent this many at a time, in one SSH packet: each packet costs both sides a
# pass through paramiko in Python and a system call, and sending one request per reply
# took about a sixth of a download's main thread.
READ_BATCH = 16
# A reply larger than this is a broken or hostile server.
MAX_PACKET = 1 << 20
# Received bytes are taken from the channel in blocks of up to this size (with the
# client's BlockPipe, one SSH packet's data per call, uncopied).
RECEIVE_BLOCK = 16 << 20
# The received data are kept as the blocks they came in, and a read reply is handed on
# as a view into its block: copying them again would be done holding the GIL, which
# the SSH transport's thread needs to receive the next packets.


class Channel(Protocol):
    """What the client needs of a paramiko ``Channel``."""

    def sendall(self, data: bytes | memoryview) -> None: ...
    def recv(self, nbytes: int) -> bytes: ...


@dataclass(frozen=True)
class Attributes:
    """File attributes as the server sent them; ``extended`` holds name/value pairs."""

    size: int | None = None
    permissions: int | None = None
    mtime: int | None = None
    extended: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """One name of a directory listing."""

    name: str
    attributes: Attributes


class SFTPStatusError(RemoteError):
    """The server answered a request with an error status; the message is the server's."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message or f"SFTP status {code}")
        self.code = code


def _status_error(code: int, message: str) -> GatewayError:
    """The gateway error for a status, so callers can tell "no such file" from the rest.

    The message is the server's own words: escaped and cut where it enters.
    """
    message = shown(message)
    if code == NO_SUCH_FILE:
        return NotFoundError(message or "no such file")
    if code == PERMISSION_DENIED:
        return PolicyError(message or "permission denied")
    return SFTPStatusError(code, message)


class _Received:
    """Received bytes not parsed yet, kept as the blocks they arrived in."""

    def __init__(self) -> None:
        self._blocks: deque[bytes] = deque()
        self._start = 0
        self.size = 0

    def add(self, block: bytes) -> None:
        self._blocks.append(block)
        self.size += len(block)

    def take(self, count: int) -> memoryview:
        """The next ``count`` bytes (at most :attr:`size`): a view unless they span blocks."""
        self.size -= count
        first = self._blocks[0]
        if self._start + count <= len(first):
            view = memoryview(first)[self._start:self._start + count]
            self._advance(count)
            return view
        # Joined from views of the blocks: one copy (slicing the blocks made two).
        pieces, left = [], count
        while left:
            piece = memoryview(self._blocks[0])[self._start:self._start + left]
            pieces.append(piece)
            left -= len(piece)
            self._advance(len(piece))
        return memoryview(b"".join(pieces))

    def _advance(self, count: int) -> None:
        self._start += count
        if self._start == len(self._blocks[0]):
            self._blocks.popleft()
            self._start = 0


class _Reader:
    """Decodes the fields of one packet."""

    def __init__(self, data: memoryview) -> None:
        self._data = data
        self._pos = 0

    def at_end(self) -> bool:
        return self._pos >= len(self._data)

    def uint32(self) -> int:
        (value,) = struct.unpack_from(">I", self._data, self._pos)
        self._pos += 4
        return int(value)

    def uint64(self) -> int:
        (value,) = struct.unpack_from(">Q", self._data, self._pos)
        self._pos += 8
        return int(value)

    def view(self) -> memoryview:
        """A string field, without copying it."""
        size = self.uint32()
        if self._pos + size > len(self._data):
            raise RemoteError("malformed SFTP reply from the server")
        value = self._data[self._pos:self._pos + size]
        self._pos += size
        return value

    def string(self) -> bytes:
        return self.view().tobytes()

    def text(self) -> str:
        return str(self.view(), "utf-8", "replace")

    def attributes(self) -> Attributes:
        flags = self.uint32()
        size = self.uint64() if flags & _SIZE else None
        if flags & _UIDGID:
            self.uint32()
            self.uint32()
        permissions = self.uint32() if flags & _PERMISSIONS else None
        mtime = None
        if flags & _TIMES:
            self.uint32()
            mtime = self.uint32()
        extended = {}
        if flags & _EXTENDED:
            for _ in range(self.uint32()):
                name = self.text()
                extended[name] = self.text()
        return Attributes(size, permissions, mtime, extended)


def _string(value: bytes | str) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return struct.pack(">I", len(raw)) + raw


class Sender(Protocol):
    """Sends a write request's header and data as channel data without joining them
    first; shows ``body_sent`` each part of the data as sent, as views that never
    change (``gateway.client.transmit.ChannelSender``)."""

    def send(self, head: bytes, body: memoryview,
             body_sent: Callable[[memoryview], None] | None = None) -> None: ...


class SFTPSession:
    """An SFTP session on an open ``sftp`` subsystem channel.

    Requests are answered in any order the server likes; replies to requests nobody
    waits for any more (after an abandoned transfer) are dropped.
    """

    def __init__(self, channel: Channel, *, max_packet: int | None = None,
                 send_packet: int | None = None, sender: Sender | None = None) -> None:
        self._channel = channel
        self._sender = sender
        # The largest SSH packet the server accepts on the channel, if known.
        self._send_packet = send_packet
        self._received = _Received()
        self._next_id = 0
        self._replies: dict[int, tuple[int, _Reader]] = {}
        self._ignored: set[int] = set()
        self.extensions = self._init()
        self.max_read = self.max_write = DEFAULT_REQUEST
        if "limits@openssh.com" in self.extensions:
            self._read_limits(max_packet)

    def _read_limits(self, max_packet: int | None) -> None:
        """Request sizes from the server's limits. With ``max_packet`` (the largest SSH
        packet the server agreed to send on the channel), a read asks for no more than
        one packet brings: each reply then arrives as one received block and is handed
        on as a view of it, where a reply spread over packets was copied twice, holding
        the GIL, to join its pieces (measured: about a sixth of the main thread's
        samples in a download)."""
        reply = self._call(EXTENDED, _string("limits@openssh.com"), expect=EXTENDED_REPLY)
        reply.uint64()
        read, write = reply.uint64(), reply.uint64()
        self.max_read = min(read, MAX_REQUEST) if read else DEFAULT_REQUEST
        self.max_write = min(write, MAX_REQUEST) if write else DEFAULT_REQUEST
        if max_packet is not None:
            fits = max_packet - _CHANNEL_OVERHEAD - _DATA_REPLY_OVERHEAD
            self.max_read = max(DEFAULT_REQUEST, min(self.max_read, fits))

    # -- packets ----------------------------------------------------------------------

    def _init(self) -> dict[str, str]:
        self._channel.sendall(struct.pack(">IBI", 5, INIT, VERSION))
        kind, body = self._read_packet()
        reader = _Reader(body)
        if kind != VERSION_REPLY or reader.uint32() != VERSION:
            raise RemoteError("the server does not speak SFTP version 3")
        extensions = {}
        while not reader.at_end():
            name = reader.text()
            extensions[name] = reader.text()
        return extensions

    def _fill(self, size: int) -> None:
        """Receive until at least ``size`` bytes are buffered."""
        while self._received.size < size:
            try:
                data = self._channel.recv(RECEIVE_BLOCK)
            except (OSError, EOFError) as exc:
                raise RemoteError(_lost(exc)) from None
            if not data:
                raise RemoteError("the gateway closed the connection")
            self._received.add(data)

    def _read_packet(self) -> tuple[int, memoryview]:
        self._fill(4)
        (size,) = struct.unpack(">I", self._received.take(4))
        if not 1 <= size <= MAX_PACKET:
            raise RemoteError("malformed SFTP reply from the server")
        self._fill(size)
        packet = self._received.take(size)
        return packet[0], packet[1:]

    def _send(self, kind: int, *parts: bytes | memoryview) -> int:
        request_id, packet = self._packet(kind, *parts)
        self._sendall(packet)
        return request_id

    def _packet(self, kind: int, *parts: bytes | memoryview,
                size: int = 0) -> tuple[int, bytes]:
        """The next request id, and the request that carries it (or, with ``size``, its
        start, the ``size`` bytes that follow it to be sent after it)."""
        request_id = self._next_id
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        length = sum(len(part) for part in parts) + 5 + size
        return request_id, b"".join((struct.pack(">IBI", length, kind, request_id), *parts))

    def _sendall(self, data: bytes) -> None:
        try:
            # As a memoryview: paramiko's sendall slices off what each SSH packet took,
            # which for bytes would copy the rest every time.
            self._channel.sendall(memoryview(data))
        except (OSError, EOFError) as exc:
            # paramiko raises EOFError for a transport that is already closed.
            raise RemoteError(_lost(exc)) from None

    def _send_data(self, head: bytes, body: memoryview,
                   body_sent: Callable[[memoryview], None] | None) -> None:
        """Send a request whose ``head`` is followed by ``body``; ``body_sent`` is shown
        ``body`` as sent (views that never change)."""
        if self._sender is None:
            packet = head + body
            if body_sent is not None:
                body_sent(memoryview(packet)[len(head):])
            self._sendall(packet)
            return
        try:
            self._sender.send(head, body, body_sent)
        except (OSError, EOFError) as exc:
            raise RemoteError(_lost(exc)) from None

    def _wait(self, request_id: int) -> tuple[int, _Reader]:
        """The reply to ``request_id``, keeping replies to others that arrive first."""
        while request_id not in self._replies:
            kind, body = self._read_packet()
            reader = _Reader(body)
            reply_id = reader.uint32()
            if reply_id in self._ignored:
                self._ignored.discard(reply_id)
            else:
                self._replies[reply_id] = (kind, reader)
        return self._replies.pop(request_id)

    def _ignore(self, request_id: int) -> None:
        """Drop the reply to ``request_id`` whenever it comes."""
        if self._replies.pop(request_id, None) is None:
            self._ignored.add(request_id)

    def _call(self, kind: int, payload: bytes, *, expect: int) -> _Reader:
        reply_kind, reader = self._wait(self._send(kind, payload))
        return _expect(reply_kind, reader, expect)

    # -- requests ---------------------------------------------------------------------

    def stat(self, path: str) -> Attributes:
        return self._call(STAT, _string(path), expect=ATTRS).attributes()

    def listdir(self, path: str, *, limit: int) -> list[Entry]:
        """The entries of a folder; more than ``limit`` of them is an error, so that a
        hostile server cannot fill the client's memory with a listing without end."""
        handle = self._call(OPENDIR, _string(path), expect=HANDLE).string()
        entries: list[Entry] = []
        try:
            while True:
                kind, reader = self._wait(self._send(READDIR, _string(handle)))
                if kind == STATUS and reader.uint32() == EOF:
                    return entries
                reply = _expect(kind, reader, NAME)
                count = reply.uint32()
                if len(entries) + count > limit:
                    raise RemoteError(f"the server lists more than {limit} entries in "
                                      f"{path}; refusing the listing")
                for _ in range(count):
                    name = reply.text()
                    reply.string()
                    entries.append(Entry(name, reply.attributes()))
        finally:
            self.close(handle)

    def open(self, path: str, flags: int) -> bytes:
        """Open ``path``; return the handle."""
        payload = _string(path) + struct.pack(">II", flags, 0)
        return self._call(OPEN, payload, expect=HANDLE).string()

    def remove(self, path: str) -> None:
        """Remove a file (on the gateway: withdraw it, audited)."""
        self._call(REMOVE, _string(path), expect=STATUS)

    def close(self, handle: bytes) -> None:
        """Close a handle: for an upload to the gateway, this commits the file."""
        self._call(CLOSE, _string(handle), expect=STATUS)

    def declare_recipients(self, handle: bytes, fingerprints: Sequence[str]) -> None:
        """Tell the gateway which keys a pre-encrypted upload is encrypted to."""
        if DECLARE_RECIPIENTS not in self.extensions:
            raise RemoteError("the server is not a Blindpost gateway (it does not offer "
                              f"{DECLARE_RECIPIENTS})")
        payload = (_string(DECLARE_RECIPIENTS) + _string(handle)
                   + struct.pack(">I", len(fingerprints))
                   + b"".join(_string(f) for f in fingerprints))
        self._call(EXTENDED, payload, expect=STATUS)

    def declare_contents(self, handle: bytes, contents: Contents) -> None:
        """Tell the gateway what a pre-encrypted upload holds (its columns and records,
        never a value); a gateway without the request is not told."""
        if DECLARE_CONTENTS not in self.extensions:
            return
        columns = contents.columns or ()
        payload = (_string(DECLARE_CONTENTS) + _string(handle) + _string(contents.format)
                   + struct.pack(">I", len(columns)) + b"".join(_string(c) for c in columns)
                   + struct.pack(">q", -1 if contents.records is None else contents.records))
        self._call(EXTENDED, payload, expect=STATUS)

    def read_small(self, path: str, *, limit: int) -> bytes:
        """The whole of a small file (at most ``limit`` bytes)."""
        handle = self.open(path, OPEN_READ)
        try:
            size = self.stat(path).size or 0
            if size > limit:
                raise RemoteError(f"{path} is larger than {limit} bytes")
            return b"".join(self.read_stream(handle, 0, size))
        finally:
            self.close(handle)

    def read_stream(self, handle: bytes, offset: int,
                    end: int) -> Generator[memoryview, None, None]:
        """Yield the bytes of ``[offset, end)`` in order, with reads pipelined.

        Each piece is a read-only view into what was received, not a copy. Closing the
        generator early drops the replies still on their way.
        """
        queue: deque[tuple[int, int, int]] = deque()
        next_offset = offset
        prefix = _string(handle)
        try:
            while queue or next_offset < end:
                if len(queue) <= WINDOW - READ_BATCH and next_offset < end:
                    # Top the window up with several requests in one SSH packet.
                    batch = []
                    while len(queue) < WINDOW and next_offset < end:
                        length = min(self.max_read, end - next_offset)
                        request_id, packet = self._packet(
                            READ, prefix, struct.pack(">QI", next_offset, length))
                        batch.append(packet)
                        queue.append((request_id, next_offset, length))
                        next_offset += length
                    self._sendall(b"".join(batch))
                request_id, at, length = queue.popleft()
                data = self._read_reply(request_id)
                if len(data) < length:
                    # A short read: ask for the rest before anything queued after it.
                    rest = _string(handle) + struct.pack(">QI", at + len(data),
                                                         length - len(data))
                    queue.appendleft((self._send(READ, rest), at + len(data),
                                      length - len(data)))
                yield data
        finally:
            for request_id, _, _ in queue:
                self._ignore(request_id)

    def _read_reply(self, request_id: int) -> memoryview:
        kind, reader = self._wait(request_id)
        if kind == DATA:
            data = reader.view()
            if data:
                return data
            raise RemoteError("the server returned an empty read")
        if kind == STATUS:
            code, message = reader.uint32(), reader.text()
            if code == EOF:
                raise RemoteError("the file ended before its announced size")
            raise _status_error(code, message)
        raise RemoteError(f"unexpected SFTP reply type {kind}")

    def writer(self, handle: bytes, *,
               sent: Callable[[memoryview], None] | None = None) -> Writer:
        """A pipelined writer into ``handle`` from offset 0; ``sent`` is shown the data
        of each write request, in order, as a view of the request (which never changes)."""
        return Writer(self, handle, self.write_size(len(handle)), sent=sent)

    def write_size(self, handle_size: int) -> int:
        """How much data each write request carries: at most :attr:`max_write`, and, if
        the server's SSH packet size is known, as much as fills whole packets. A 255 KiB
        request took three 120 KiB packets, the last of them small; filling two instead
        costs both sides about a quarter fewer packets (each handled in Python on the
        gateway) for 9% more requests."""
        if self._send_packet is None:
            return self.max_write
        overhead = _WRITE_OVERHEAD + handle_size
        per_packet = self._send_packet - _CHANNEL_OVERHEAD
        packets = (self.max_write + overhead) // per_packet
        filled = packets * per_packet - overhead
        return filled if filled >= DEFAULT_REQUEST else self.max_write


def _lost(exc: BaseException) -> str:
    return f"the connection to the gateway failed: {exc or type(exc).__name__}"


def _expect(kind: int, reader: _Reader, expected: int) -> _Reader:
    if kind == STATUS:
        code, message = reader.uint32(), reader.text()
        if code == OK and expected == STATUS:
            return reader
        raise _status_error(code, message)
    if kind != expected:
        raise RemoteError(f"unexpected SFTP reply type {kind}")
    return reader


class Writer:
    """Sequential writes into an open file, ``WINDOW`` requests in flight.

    :meth:`write` copies what it is given (the caller may reuse its buffer) and sends
    it in requests of ``size`` (:meth:`SFTPSession.write_size`); :meth:`finish` sends
    the rest and waits for every reply. The first error status is raised from whichever call
    sees it.
    """

    def __init__(self, session: SFTPSession, handle: bytes, size: int, *,
                 sent: Callable[[memoryview], None] | None = None) -> None:
        self._session = session
        self._size = size
        self._sent = sent
        self._prefix = _string(handle)
        self._pending = bytearray()
        self._offset = 0
        self._in_flight: deque[int] = deque()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        total, size = len(view), self._size
        if self._pending:
            # Complete the request begun by earlier writes first.
            taken = view[:size - len(self._pending)]
            self._pending += taken
            view = view[len(taken):]
            if len(self._pending) < size:
                return total
            with memoryview(self._pending) as pending:
                self._send(pending)
            self._pending.clear()
        # Whole requests go straight from the caller's buffer (sending copies them into
        # the SSH packet): gathering them here first copied every byte once more.
        while len(view) >= size:
            self._send(view[:size])
            view = view[size:]
        self._pending += view
        return total

    def finish(self) -> None:
        """Send what is buffered and wait until the server acknowledged everything."""
        if self._pending:
            self._send(memoryview(self._pending))
            self._pending.clear()
        while self._in_flight:
            self._acknowledge()

    def abandon(self) -> None:
        """Stop: replies still on their way are dropped."""
        for request_id in self._in_flight:
            self._session._ignore(request_id)
        self._in_flight.clear()

    @property
    def written(self) -> int:
        """The bytes sent so far (all of them once :meth:`finish` returned)."""
        return self._offset

    def _send(self, chunk: memoryview) -> None:
        if len(self._in_flight) >= WINDOW:
            self._acknowledge()
        request_id, head = self._session._packet(
            WRITE, self._prefix, struct.pack(">QI", self._offset, len(chunk)),
            size=len(chunk))
        self._session._send_data(head, chunk, self._sent)
        self._in_flight.append(request_id)
        self._offset += len(chunk)

    def _acknowledge(self) -> None:
        kind, reader = self._session._wait(self._in_flight.popleft())
        _expect(kind, reader, STATUS)
