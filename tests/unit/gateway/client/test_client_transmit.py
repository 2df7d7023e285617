"""The one-pass sender of channel data, against a real paramiko server over a socket."""

from __future__ import annotations

import hashlib
import inspect
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import paramiko
import pytest
from paramiko.packet import Packetizer

from gateway.client.transmit import (
    MAX_PACKET,
    READ_MESSAGE_SOURCE,
    RELIED_ON,
    SEND_MESSAGE_SOURCE,
    ChannelSender,
    Frame,
    OnePassPacketizer,
)

_CLASSES = {"Packetizer": Packetizer, "Transport": paramiko.Transport,
            "Channel": paramiko.Channel}


@pytest.mark.parametrize(("method", "pinned"), [
    ("send_message", SEND_MESSAGE_SOURCE), ("read_message", READ_MESSAGE_SOURCE)])
def test_paramikos_packetizer_is_the_one_it_was_written_against(method: str,
                                                                 pinned: str) -> None:
    # OnePassPacketizer repeats its bookkeeping (sequence numbers, nonces, rekey counts).
    source = inspect.getsource(getattr(Packetizer, method)).encode("utf-8")
    assert hashlib.sha256(source).hexdigest()[:8] == pinned, (
        f"paramiko's Packetizer.{method} changed: compare it with "
        f"OnePassPacketizer.{method}, then update the pinned hash")
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
          ciphers: tuple[str, ...] = ("aes128-gcm@openssh.com",), server_one_pass: bool = False
          ) -> Iterator[tuple[paramiko.Transport, paramiko.Channel, paramiko.Channel]]:
    """A client transport with the one-pass packetizer, a paramiko server (with
    paramiko's own packetizer unless ``server_one_pass``) whose channel offers
    ``window`` and ``packet``, and the two ends of one channel."""
    near, far = socket.socketpair()
    server = paramiko.Transport(far, default_window_size=window,
                                default_max_packet_size=packet,
                                packetizer_class=OnePassPacketizer if server_one_pass
                                else Packetizer)
    server.far_socket = far  # type: ignore[attr-defined]
    server.add_server_key(_HOST_KEY)
    server.start_server(threading.Event(), server=_Server())
    client = paramiko.Transport(near, packetizer_class=OnePassPacketizer)
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


@pytest.mark.parametrize("server_one_pass", [False, True])
@pytest.mark.parametrize("body_size", [0, 1, 32_000, 32_767, 100_003, 3 << 20])
def test_what_is_sent_arrives_whole_through_windows_and_small_packets(
        body_size: int, server_one_pass: bool) -> None:
    head, body = b"H" * 29, bytes(range(256)) * (body_size // 256) + b"t" * (body_size % 256)
    # A 32 KiB window and packet: the head and body are split across many packets, some
    # taking the end of the head and the start of the body. The server opens them with
    # paramiko's packetizer or with the one-pass one.
    with _pair(window=32768, packet=4096 * 8, server_one_pass=server_one_pass) as (
            client, channel, far):
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


def _counting(transport: paramiko.Transport, method: str) -> list[int]:
    """Calls of ``transport``'s ``method`` from now on, one entry each."""
    calls: list[int] = []
    original = getattr(transport, method)

    def counted() -> None:
        calls.append(1)
        original()

    setattr(transport, method, counted)
    return calls


def test_it_starts_a_rekey_when_paramiko_would() -> None:
    # paramiko rekeys after 512 MiB each way; here after 256 KiB. The transport's thread
    # starts a rekey when it next receives: a small window makes the server's window
    # adjustments arrive all along.
    with _pair(window=32768) as (client, channel, far):
        client.packetizer.REKEY_BYTES = 256 << 10
        activated = _counting(client, "_activate_outbound")
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


def _received_by_client(channel: paramiko.Channel, far: paramiko.Channel,
                        data: bytes) -> bytes:
    received: list[bytes] = []
    thread = _receive(channel, len(data), received)
    far.sendall(data)
    thread.join(30)
    return b"".join(received)


def test_what_paramiko_sends_the_one_pass_packetizer_opens() -> None:
    data = os.urandom(3 << 20)
    with _pair() as (client, channel, far):
        assert isinstance(client.packetizer, OnePassPacketizer)
        assert _received_by_client(channel, far, data) == data
        # And the connection is still up after it, at both ends.
        assert far.transport.is_active() and client.is_active()


def test_it_asks_for_a_rekey_after_receiving_what_paramiko_would() -> None:
    with _pair() as (client, channel, far):
        client.packetizer.REKEY_BYTES = 256 << 10
        activated = _counting(client, "_activate_inbound")
        data = os.urandom(4 << 20)
        assert _received_by_client(channel, far, data) == data
        assert len(activated) >= 4
        assert client.is_active()


@pytest.mark.parametrize(("raw", "error"), [
    # A length past MAX_PACKET is refused before anything is read for it.
    ((MAX_PACKET + 16).to_bytes(4, "big"), "invalid packet length"),
    ((0xFFFFFFF0).to_bytes(4, "big"), "invalid packet length"),
    # A length that is not whole blocks.
    ((33).to_bytes(4, "big") + bytes(49), "invalid packet length"),
    # A well-formed length, then what does not verify.
    ((32).to_bytes(4, "big") + bytes(48), "InvalidTag"),
])
def test_a_bad_packet_ends_the_connection(raw: bytes, error: str) -> None:
    with _pair() as (client, _channel, far):
        far.transport.far_socket.sendall(raw)
        deadline = time.monotonic() + 10
        while client.is_active() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not client.is_active()
        assert error in repr(client.get_exception())
