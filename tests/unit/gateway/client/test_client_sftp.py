"""The small SFTP client against a scripted server: short reads, replies out of order,
extended attributes, error statuses. (Against the real gateway: tests/integration.)"""

from __future__ import annotations

import struct
from collections import deque

import pytest

from gateway.client import sftp
from gateway.errors import NotFoundError, PolicyError, RemoteError


def _string(value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack(">I", len(raw)) + raw


class ScriptedServer:
    """A fake channel: answers requests from one in-memory file.

    ``short`` caps every read reply (servers may return less than asked); ``reverse``
    answers each batch of pipelined requests last-first; ``block`` is the most that one
    ``recv`` returns, so small blocks split packets across them.
    """

    def __init__(self, data: bytes, *, short: int | None = None, reverse: bool = False,
                 write_error_at: int | None = None, block: int = 1000) -> None:
        self.data = data
        self.block = block
        self.received: list[bytes] = []
        self.sends: list[bytes] = []
        self.written = bytearray()
        self._short, self._reverse, self._write_error_at = short, reverse, write_error_at
        self._out = bytearray()
        self._pending: deque[bytes] = deque()

    def sendall(self, data: bytes) -> None:
        """Take every request in ``data`` (the client may send several at once)."""
        data = bytes(data)
        self.sends.append(data)
        while data:
            (size,) = struct.unpack_from(">I", data)
            self.request(data[:4 + size])
            data = data[4 + size:]

    def request(self, packet: bytes) -> None:
        body = packet[4:]
        kind = body[0]
        if kind == sftp.INIT:
            self._out += self._packet(sftp.VERSION_REPLY, struct.pack(">I", 3)
                                      + _string("x@test") + _string("1"))
            return
        (request_id,) = struct.unpack_from(">I", body, 1)
        self._pending.append(self._answer(kind, request_id, body[5:]))

    def _answer(self, kind: int, request_id: int, rest: bytes) -> bytes:
        rid = struct.pack(">I", request_id)
        if kind == sftp.OPEN:
            return self._packet(sftp.HANDLE, rid + _string(b"h1"))
        if kind == sftp.READ:
            offset, length = struct.unpack_from(">QI", rest, 6)
            chunk = self.data[offset:offset + min(length, self._short or length)]
            if not chunk:
                return self._packet(sftp.STATUS, rid + struct.pack(">I", sftp.EOF)
                                    + _string("eof") + _string(""))
            return self._packet(sftp.DATA, rid + _string(chunk))
        if kind == sftp.WRITE:
            offset, length = struct.unpack_from(">QI", rest, 6)
            if self._write_error_at is not None and offset >= self._write_error_at:
                return self._status(rid, sftp.PERMISSION_DENIED, "quota exceeded")
            assert offset == len(self.written)
            self.written += rest[18:18 + length]
            return self._status(rid, sftp.OK, "")
        if kind == sftp.STAT:
            attrs = (struct.pack(">IQ", 0x1 | 0x80000000, len(self.data))
                     + struct.pack(">I", 1) + _string("ciphertext-sha256@blindpost")
                     + _string("ab" * 32))
            return self._packet(sftp.ATTRS, rid + attrs)
        if kind == sftp.CLOSE:
            return self._status(rid, sftp.OK, "")
        return self._status(rid, sftp.NO_SUCH_FILE, "no such file")

    def _status(self, rid: bytes, code: int, message: str) -> bytes:
        return self._packet(sftp.STATUS, rid + struct.pack(">I", code) + _string(message)
                            + _string(""))

    @staticmethod
    def _packet(kind: int, payload: bytes) -> bytes:
        return struct.pack(">IB", len(payload) + 1, kind) + payload

    def recv(self, size: int) -> bytes:
        if not self._out:
            replies = list(self._pending)
            self._pending.clear()
            for reply in reversed(replies) if self._reverse else replies:
                self._out += reply
        taken = bytes(self._out[:min(size, self.block)])
        del self._out[:len(taken)]
        self.received.append(taken)
        return taken


@pytest.mark.parametrize(("short", "reverse"), [(None, False), (7000, False), (None, True),
                                                (3333, True)])
def test_read_stream_yields_the_bytes_in_order(short: int | None, reverse: bool) -> None:
    data = bytes(range(256)) * 2000
    server = ScriptedServer(data, short=short, reverse=reverse)
    session = sftp.SFTPSession(server)
    handle = session.open("/f", sftp.OPEN_READ)
    assert b"".join(session.read_stream(handle, 1000, len(data))) == data[1000:]
    session.close(handle)


def test_read_replies_within_one_received_block_are_views_of_it() -> None:
    data = bytes(range(256)) * 2000
    server = ScriptedServer(data, block=1 << 20)
    session = sftp.SFTPSession(server)
    pieces = list(session.read_stream(b"h1", 0, len(data)))
    assert b"".join(pieces) == data
    assert all(any(piece.obj is block for block in server.received) for piece in pieces)


def test_reads_go_out_in_batches_that_keep_the_window_full() -> None:
    """The first send fills the window; after that a send tops it up once READ_BATCH
    replies came in, all of them in one SSH packet."""
    data = bytes(range(256)) * 4000  # 1,024,000 bytes: 250 reads of 4096.
    server = ScriptedServer(data, block=1 << 20)
    session = sftp.SFTPSession(server)
    session.max_read = 4096
    server.sends.clear()
    assert b"".join(session.read_stream(b"h1", 0, len(data))) == data
    requests = [len(_requests(send)) for send in server.sends]
    assert sum(requests) == 250
    assert requests[0] == sftp.WINDOW
    assert all(count == sftp.READ_BATCH for count in requests[1:-1])
    assert 0 < requests[-1] <= sftp.READ_BATCH


def _requests(data: bytes) -> list[bytes]:
    packets = []
    while data:
        (size,) = struct.unpack_from(">I", data)
        packets.append(data[:4 + size])
        data = data[4 + size:]
    return packets


def test_a_file_shorter_than_announced_is_an_error() -> None:
    session = sftp.SFTPSession(ScriptedServer(b"x" * 100))
    with pytest.raises(RemoteError, match="ended before its announced size"):
        b"".join(session.read_stream(b"h1", 0, 200))


def test_an_abandoned_stream_drops_its_late_replies() -> None:
    session = sftp.SFTPSession(ScriptedServer(b"y" * 1_000_000))
    stream = session.read_stream(b"h1", 0, 1_000_000)
    next(stream)
    stream.close()
    assert session.stat("/f").extended == {"ciphertext-sha256@blindpost": "ab" * 32}


@pytest.mark.parametrize("piece", [10_000, 32 * 1024, 100_000, 300_000])
def test_pipelined_writes_arrive_whole_and_errors_surface(piece: int) -> None:
    server = ScriptedServer(b"")
    session = sftp.SFTPSession(server)
    writer = session.writer(b"h1")
    payload = bytes(range(256)) * 1000
    for start in range(0, len(payload), piece):
        # A reused buffer, as the encryptor's: the writer must be done with it.
        buffer = bytearray(payload[start:start + piece])
        writer.write(memoryview(buffer))
        buffer[:] = bytes(len(buffer))
    writer.finish()
    assert bytes(server.written) == payload

    failing = sftp.SFTPSession(ScriptedServer(b"", write_error_at=50_000))
    broken = failing.writer(b"h1")
    with pytest.raises(PolicyError, match="quota exceeded"):  # noqa: PT012  # write or finish
        broken.write(b"z" * 200_000)
        broken.finish()


def test_the_writer_shows_each_request_s_data_in_order_as_it_stays() -> None:
    server = ScriptedServer(b"")
    session = sftp.SFTPSession(server)
    seen: list[memoryview] = []
    writer = session.writer(b"h1", sent=seen.append)
    payload = bytes(range(256)) * 1000
    buffer = bytearray(70_000)
    for start in range(0, len(payload), len(buffer)):
        piece = payload[start:start + len(buffer)]
        buffer[:len(piece)] = piece
        writer.write(memoryview(buffer)[:len(piece)])
        buffer[:] = bytes(len(buffer))  # Reused by the caller: the views must not change.
    writer.finish()
    assert b"".join(seen) == payload == bytes(server.written)
    assert writer.written == len(payload)


def test_statuses_become_gateway_errors() -> None:
    session = sftp.SFTPSession(ScriptedServer(b""))
    with pytest.raises(NotFoundError, match="no such file"):
        session.listdir("/missing", limit=10)
    with pytest.raises(RemoteError, match="not a Blindpost gateway"):
        session.declare_recipients(b"h1", ["SHA256:x"])


class LimitedServer(ScriptedServer):
    """A server that offers limits@openssh.com (255 KiB reads and writes) and sends each
    reply in SSH packets of at most ``block`` bytes of data, as paramiko does."""

    def request(self, packet: bytes) -> None:
        body = packet[4:]
        if body[0] == sftp.INIT:
            self._out += self._packet(sftp.VERSION_REPLY, struct.pack(">I", 3)
                                      + _string("limits@openssh.com") + _string("1"))
            return
        if body[0] == sftp.EXTENDED:
            rid = bytes(body[1:5])
            self._pending.append(self._packet(sftp.EXTENDED_REPLY, rid + struct.pack(
                ">QQQQ", 256 * 1024 + 1024, 255 * 1024, 255 * 1024, 64)))
            return
        super().request(packet)

    def recv(self, size: int) -> bytes:
        # One reply at a time, cut into packets: a packet never holds two replies' bytes.
        if not self._out and self._pending:
            self._out += self._pending.popleft()
        taken = bytes(self._out[:min(size, self.block)])
        del self._out[:len(taken)]
        self.received.append(taken)
        return taken


def test_reads_fit_in_one_packet_so_replies_are_not_copied() -> None:
    packet = 120 * 1024
    server = LimitedServer(bytes(range(256)) * 4000, block=packet - 64)
    session = sftp.SFTPSession(server, max_packet=packet)
    assert session.max_write == 255 * 1024
    assert session.max_read == packet - 64 - 13
    pieces = list(session.read_stream(b"h1", 0, len(server.data)))
    assert b"".join(pieces) == server.data
    assert all(any(piece.obj is block for block in server.received) for piece in pieces)
    # Without the packet size the server's limit decides, and replies span packets.
    assert sftp.SFTPSession(LimitedServer(b"")).max_read == 255 * 1024


def test_writes_fill_whole_ssh_packets_when_the_packet_size_is_known() -> None:
    packet = 120 * 1024
    server = LimitedServer(b"")
    sent: list[int] = []
    send = server.sendall
    server.sendall = lambda data: (sent.append(len(data)), send(data))[1]  # type: ignore[method-assign]
    session = sftp.SFTPSession(server, send_packet=packet)
    writer = session.writer(b"h1")
    payload = bytes(range(256)) * 3000
    writer.write(payload)
    writer.finish()
    assert bytes(server.written) == payload
    writes = sent[-(-len(payload) // writer._size):]
    # Two packets' worth of channel data each (paramiko keeps 64 bytes of a packet free).
    assert writes[0] == 2 * (packet - 64)
    assert all(size <= 2 * (packet - 64) for size in writes)
    assert writer._size <= session.max_write
    # Without the packet size: the server's limit.
    assert sftp.SFTPSession(LimitedServer(b"")).writer(b"h1")._size == 255 * 1024
