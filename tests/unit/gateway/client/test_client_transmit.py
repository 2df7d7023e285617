"""The one-pass sender of channel data, against a real paramiko server over a socket."""

from __future__ import annotations

import hashlib
import inspect
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import paramiko
import pytest
from paramiko.packet import Packetizer

from gateway.client.transmit import (
    RELIED_ON,
    SEND_MESSAGE_SOURCE,
    ChannelSender,
    Frame,
    SealingPacketizer,
)

_CLASSES = {"Packetizer": Packetizer, "Transport": paramiko.Transport,
            "Channel": paramiko.Channel}


def test_paramikos_send_message_is_the_one_it_was_written_against() -> None:
    # SealingPacketizer repeats its bookkeeping (sequence number, nonce, rekey counts).
    source = inspect.getsource(Packetizer.send_message).encode("utf-8")
    assert hashlib.sha256(source).hexdigest()[:8] == SEND_MESSAGE_SOURCE, (
        "paramiko's Packetizer.send_message changed: compare it with "
        "SealingPacketizer.send_message, then update SEND_MESSAGE_SOURCE")
    for name, expected in RELIED_ON.items():
        owner, _, member = name.partition(".")
        assert str(inspect.signature(getattr(_CLASSES[owner], member))) == expected, name


class _Server(paramiko.ServerInterface):  # type: ignore[misc]
    def get_allowed_auths(self, username: str) -> str:
        return "none"

    def check_auth_none(self, username: str) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED


_HOST_KEY = paramiko.ECDSAKey.generate()


@contextmanager
def _pair(*, window: int = 4 << 20, packet: int = 32768,
          ciphers: tuple[str, ...] = ("aes128-gcm@openssh.com",)
          ) -> Iterator[tuple[paramiko.Transport, paramiko.Channel, paramiko.Channel]]:
    """A client transport with the sealing packetizer, a paramiko server whose channel
    offers ``window`` and ``packet``, and the two ends of one channel."""
    near, far = socket.socketpair()
    server = paramiko.Transport(far, default_window_size=window,
                                default_max_packet_size=packet)
    server.add_server_key(_HOST_KEY)
    server.start_server(threading.Event(), server=_Server())
    client = paramiko.Transport(near, packetizer_class=SealingPacketizer)
    client.get_security_options().ciphers = ciphers
    try:
        client.connect()
        client.auth_none("partner")
        channel = client.open_session()
        accepted = server.accept(10)
        assert accepted is not None
        yield client, channel, accepted
    finally:
        client.close()
        server.close()


def _receive(channel: paramiko.Channel, size: int, into: list[bytes]) -> threading.Thread:
    def run() -> None:
        got = 0
        while got < size:
            block = channel.recv(1 << 20)
            if not block:
                break
            into.append(block)
            got += len(block)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _send(client: paramiko.Transport, channel: paramiko.Channel, far: paramiko.Channel,
          head: bytes, body: bytes) -> tuple[bytes, bytes]:
    """What the far end received, and what the sender said it sent of ``body``."""
    received: list[bytes] = []
    shown: list[bytes] = []
    thread = _receive(far, len(head) + len(body), received)
    ChannelSender(channel).send(head, memoryview(body),
                                lambda view: shown.append(bytes(view)))
    thread.join(30)
    return b"".join(received), b"".join(shown)


@pytest.mark.parametrize("body_size", [0, 1, 32_000, 32_767, 100_003, 3 << 20])
def test_what_is_sent_arrives_whole_through_windows_and_small_packets(
        body_size: int) -> None:
    head, body = b"H" * 29, bytes(range(256)) * (body_size // 256) + b"t" * (body_size % 256)
    # A 32 KiB window and packet: the head and body are split across many packets, some
    # taking the end of the head and the start of the body.
    with _pair(window=32768, packet=4096 * 8) as (client, channel, far):
        received, shown = _send(client, channel, far, head, body)
    assert received == head + body
    assert shown == body


def test_it_seals_its_frames_itself_and_paramiko_opens_them() -> None:
    with _pair() as (client, channel, far):
        sealed: list[Any] = []
        original = Packetizer.send_message

        def counted(self: Packetizer, data: object) -> None:
            sealed.append(data)
            original(self, data)

        # Frames must not reach paramiko's own send_message under AES-GCM.
        Packetizer.send_message = counted
        try:
            received, _ = _send(client, channel, far, b"h", b"x" * 200_000)
        finally:
            Packetizer.send_message = original
    assert received == b"h" + b"x" * 200_000
    assert not [data for data in sealed if isinstance(data, Frame)]


def test_other_ciphers_take_frames_through_paramikos_own_path() -> None:
    with _pair(ciphers=("aes128-ctr",)) as (client, channel, far):
        received, shown = _send(client, channel, far, b"head", b"y" * 300_000)
    assert received == b"head" + b"y" * 300_000
    assert shown == b"y" * 300_000


def test_it_starts_a_rekey_when_paramiko_would() -> None:
    # paramiko rekeys after 512 MiB each way; here after 256 KiB. The transport's thread
    # starts a rekey when it next receives: a small window makes the server's window
    # adjustments arrive all along.
    with _pair(window=32768) as (client, channel, far):
        client.packetizer.REKEY_BYTES = 256 << 10
        activated = []
        original = client._activate_outbound

        def counted() -> None:
            activated.append(1)
            original()

        client._activate_outbound = counted
        body = hashlib.sha256(b"seed").digest() * (4 << 15)  # 4 MiB
        received, _ = _send(client, channel, far, b"", body)
        assert received == body
        # Each rekey activates new keys; more than a few prove the counts are kept.
        assert len(activated) >= 4
        assert client.is_active()


def test_a_closed_channel_is_an_error_not_a_hang() -> None:
    with _pair() as (_client, channel, _far):
        channel.close()
        with pytest.raises(OSError, match="closed"):
            ChannelSender(channel).send(b"h", memoryview(b"body"))
