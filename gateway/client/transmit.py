"""SSH packets sent and received in one pass (``blindpost send``, ``fetch``, the gateway).

paramiko sends channel data through a ``Message`` (a ``BytesIO``), joins it to its
length and padding twice over, slices off the length to encrypt the rest, joins the
length back on, and slices what the socket did not take: about six copies of every
byte around the one pass that encrypts it, all holding the GIL. For ``blindpost send``
that was about 0.2 s of CPU per 256 MiB, on a machine whose cores the gateway and the
client share. Receiving, it joins the packet's first block to the rest, slices the
payload out of the opened packet and its type off the payload, copies that into a
``Message`` and the channel data out of it again: four copies more than opening it.

Here each SSH packet sent is built once, with its length, padding length, channel-data
header, data and padding in one ``bytes`` (the only copy of the data), then sealed
with AES-GCM straight into the buffer it is written from; each packet received is read
whole, opened, and its channel data sliced out once (:class:`ChannelData`).
:class:`OnePassPacketizer` is given to ``paramiko.Transport`` as its packetizer; it
seals the :class:`Frame` s that :class:`ChannelSender` hands it, opens every packet
under AES-GCM, and leaves every other message sent, and every packet under another
cipher or with compression, to paramiko. It also refuses a packet longer than
:data:`MAX_PACKET` before reading it. The sequence numbers, the GCM nonces, the counts
that start a rekey and the write lock are paramiko's own, kept as its ``send_message``
and ``read_message`` keep them: :data:`SEND_MESSAGE_SOURCE` and
:data:`READ_MESSAGE_SOURCE` pin the sources they were written against, so an upgrade
that changes one fails one test, naming it.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Any

import paramiko
from paramiko.common import MSG_CHANNEL_DATA, cMSG_CHANNEL_DATA, xffffffff
from paramiko.message import Message
from paramiko.packet import Packetizer

# The SHA-256 (first 8 hex digits) of paramiko's Packetizer.send_message and
# read_message, whose bookkeeping OnePassPacketizer repeats (paramiko is pinned, see
# pyproject.toml).
SEND_MESSAGE_SOURCE = "34dee385"
READ_MESSAGE_SOURCE = "d5d2c676"
# The other members used, and the signatures they were written against.
RELIED_ON: dict[str, str] = {
    "Packetizer.send_message": "(self, data)",
    "Packetizer.write_all": "(self, out)",
    "Packetizer.read_message": "(self)",
    "Packetizer.read_all": "(self, n, check_rekey=False)",
    "Packetizer._inc_iv_counter": "(self, iv)",
    "Packetizer._trigger_rekey": "(self)",
    "Transport._send_user_message": "(self, data)",
    "Channel._wait_for_send_window": "(self, size)",
}

# AES-GCM: the packet (but its length) is padded to 16-byte blocks, the tag is 16 bytes.
_BLOCK = 16
_TAG = 16
# A channel-data payload before its data: message type, recipient channel, data length.
_CHANNEL_DATA = struct.Struct(">BII")
_HEAD = struct.Struct(">IB")
_LENGTH = struct.Struct(">I")
# The longest packet read (OpenSSH's PACKET_MAX_SIZE): paramiko reads whatever length a
# peer's packet claims, up to 4 GiB, before it checks anything.
MAX_PACKET = 256 << 10


# Buffers that packets are sealed into, shared by a process's transports: a packet holds
# one while it is written (as long as paramiko held its copies), and an idle session none,
# where one kept per transport stayed with every session of a gateway. At most this many
# wait free. (list.pop and append are atomic.)
_FREE_BUFFERS = 16
_free: list[bytearray] = []


def _take_buffer(size: int) -> bytearray:
    try:
        buffer = _free.pop()
    except IndexError:
        return bytearray(size)
    return buffer if len(buffer) >= size else bytearray(size)


def _give_back(buffer: bytearray) -> None:
    if len(_free) < _FREE_BUFFERS:
        _free.append(buffer)


class Frame:
    """One SSH packet of channel data, built whole: packet length, padding length,
    payload, padding (random, as paramiko pads for AES-GCM)."""

    __slots__ = ("packet", "payload_size")

    def __init__(self, channel_id: int, parts: list[bytes | memoryview], size: int) -> None:
        padding = 3 + _BLOCK - ((_CHANNEL_DATA.size + size + 4) % _BLOCK)
        self.payload_size = _CHANNEL_DATA.size + size
        self.packet = b"".join((
            _HEAD.pack(self.payload_size + padding + 1, padding),
            _CHANNEL_DATA.pack(cMSG_CHANNEL_DATA[0], channel_id, size),
            *parts,
            os.urandom(padding),
        ))

    def asbytes(self) -> bytes:
        """The payload alone, for paramiko's own path (as a ``Message`` gives it)."""
        return self.packet[_HEAD.size:_HEAD.size + self.payload_size]


class ChannelData:
    """A received SSH_MSG_CHANNEL_DATA as paramiko's transport and channel read it (the
    channel's number, then the data), the data one slice of the opened packet, where
    paramiko's ``Message`` cost four copies of it."""

    __slots__ = ("_channel", "_data", "seqno")

    def __init__(self, channel: int, data: bytes, seqno: int) -> None:
        self._channel = channel
        self._data = data
        self.seqno = seqno

    def get_int(self) -> int:
        return self._channel

    def get_binary(self) -> bytes:
        return self._data


class OnePassPacketizer(Packetizer):  # type: ignore[misc]
    """paramiko's packetizer, sealing :class:`Frame` s and opening received packets in
    one pass under AES-GCM (each received packet is read whole, opened, and its channel
    data sliced out once)."""

    def read_message(self) -> tuple[int, Any]:
        state: Any = self
        if (not state._Packetizer__aead_in or state._Packetizer__compress_engine_in is not None
                or state._Packetizer__dump_packets):
            return super().read_message()  # type: ignore[no-any-return]
        head = self.read_all(4, check_rekey=True)
        (length,) = _LENGTH.unpack(head)
        if not 16 <= length <= MAX_PACKET or length % _BLOCK:
            raise paramiko.SSHException(f"invalid packet length {length}")
        sealed = self.read_all(length + _TAG)
        # The packet length is the associated data, as RFC 5647 has it; a packet that
        # does not verify raises InvalidTag, which ends the transport as paramiko's does.
        iv = state._Packetizer__iv_in
        packet = state._Packetizer__block_engine_in.decrypt(iv, sealed, head)
        state._Packetizer__iv_in = self._inc_iv_counter(iv)
        end = length - packet[0]  # The payload is packet[1:end], then the padding.
        if end < 2:
            raise paramiko.SSHException("invalid packet padding")
        kind = packet[1]
        seqno = state._Packetizer__sequence_number_in
        msg: Any
        start = 1 + _CHANNEL_DATA.size  # Where a channel-data message's data begins.
        if kind == MSG_CHANNEL_DATA and end >= start:
            _, channel, size = _CHANNEL_DATA.unpack_from(packet, 1)
            if start + size > end:
                raise paramiko.SSHException("channel data longer than its packet")
            msg = ChannelData(channel, packet[start:start + size], seqno)
        else:
            msg = Message(packet[2:end])
            msg.seqno = seqno
        next_seq = (seqno + 1) & xffffffff
        if next_seq == 0 and not self._initial_kex_done:
            raise paramiko.SSHException("Sequence number rolled over during initial kex!")
        state._Packetizer__sequence_number_in = next_seq
        raw = length + state._Packetizer__mac_size_in + 4
        state._Packetizer__received_bytes += raw
        state._Packetizer__received_packets += 1
        if state._Packetizer__need_rekey:
            # A rekey was asked for: the peer gets some packets to comply, then no more.
            state._Packetizer__received_bytes_overflow += raw
            state._Packetizer__received_packets_overflow += 1
            if (state._Packetizer__received_packets_overflow >= self.REKEY_PACKETS_OVERFLOW_MAX
                    or state._Packetizer__received_bytes_overflow
                    >= self.REKEY_BYTES_OVERFLOW_MAX):
                raise paramiko.SSHException("Remote transport is ignoring rekey requests")
        elif (state._Packetizer__received_packets >= self.REKEY_PACKETS
              or state._Packetizer__received_bytes >= self.REKEY_BYTES):
            state._Packetizer__received_bytes_overflow = 0
            state._Packetizer__received_packets_overflow = 0
            self._trigger_rekey()
        return kind, msg

    def send_message(self, data: object) -> None:
        # paramiko's private state, by its mangled names (untyped).
        state: Any = self
        if (not isinstance(data, Frame) or not state._Packetizer__aead_out
                or state._Packetizer__compress_engine_out is not None
                or state._Packetizer__dump_packets):
            super().send_message(data)
            return
        packet = data.packet
        size = len(packet) + _TAG
        with state._Packetizer__write_lock:
            buffer = _take_buffer(size)
            sealed = memoryview(buffer)[:size]
            plain = memoryview(packet)
            sealed[:4] = plain[:4]
            # The packet length is the associated data, as RFC 5647 has it.
            iv = state._Packetizer__iv_out
            state._Packetizer__block_engine_out.encrypt_into(iv, plain[4:], plain[:4],
                                                             sealed[4:])
            state._Packetizer__iv_out = self._inc_iv_counter(iv)
            next_seq = (state._Packetizer__sequence_number_out + 1) & xffffffff
            if next_seq == 0 and not self._initial_kex_done:
                raise paramiko.SSHException("Sequence number rolled over during initial kex!")
            state._Packetizer__sequence_number_out = next_seq
            try:
                self.write_all(sealed)
            finally:
                sealed.release()
                _give_back(buffer)
            state._Packetizer__sent_bytes += size
            state._Packetizer__sent_packets += 1
            if ((state._Packetizer__sent_packets >= self.REKEY_PACKETS
                 or state._Packetizer__sent_bytes >= self.REKEY_BYTES)
                    and not state._Packetizer__need_rekey):
                state._Packetizer__received_bytes_overflow = 0
                state._Packetizer__received_packets_overflow = 0
                self._trigger_rekey()


class ChannelSender:
    """Sends data on ``channel`` as :class:`Frame` s (through its transport's
    :class:`OnePassPacketizer`, or paramiko's own, which take them the same way)."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self._channel = channel

    def send(self, head: bytes, body: memoryview,
             body_sent: Callable[[memoryview], None] | None = None) -> None:
        """Send ``head`` then ``body``, each SSH packet as large as the channel's window
        and packet size allow. ``body_sent`` is shown each packet's part of ``body``, in
        order, as a view of the packet (which never changes).

        Raises ``OSError`` if the channel is closed before everything went.
        """
        channel = self._channel
        total = len(head) + len(body)
        done = 0
        while done < total:
            with channel.lock:
                if channel.closed:
                    raise OSError("the channel is closed")
                size = channel._wait_for_send_window(total - done)
            if not size:
                raise OSError("the channel is closed")
            parts: list[bytes | memoryview] = []
            if done < len(head):
                parts.append(head[done:done + size])
            body_from = max(0, done - len(head))
            body_to = done + size - len(head)
            if body_to > 0:
                parts.append(body[body_from:body_to])
            frame = Frame(channel.remote_chanid, parts, size)
            if body_sent is not None and body_to > 0:
                end = len(frame.packet) - (frame.packet[4])
                body_sent(memoryview(frame.packet)[end - (body_to - body_from):end])
            # paramiko sends without the channel's lock held, or a rekey could deadlock.
            channel.transport._send_user_message(frame)
            done += size
