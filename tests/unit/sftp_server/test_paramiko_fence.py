"""The fence around paramiko's private internals: each relied-on member is checked, and
nothing outside the fence overrides one."""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil

import paramiko
import pytest
from paramiko import Message, SFTPServer
from paramiko.auth_handler import AuthHandler

import sftp_server
from sftp_server.paramiko_fence import RELIED_ON, check_paramiko


def test_the_installed_paramiko_has_every_relied_on_member() -> None:
    assert check_paramiko() == []


def test_a_changed_signature_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def changed(self, username, method): ...  # type: ignore[no-untyped-def]

    monkeypatch.setattr(AuthHandler, "_send_auth_result", changed)
    assert check_paramiko() == [
        "paramiko.AuthHandler._send_auth_result changed: (self, username, method) instead of "
        f"(self, username, method, result) (paramiko {paramiko.__version__})"]


def test_a_missing_member_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SFTPServer, "_read_all", None)
    assert check_paramiko() == [
        f"paramiko.SFTPServer._read_all is gone (paramiko {paramiko.__version__})"]


def _private_overrides(cls: type) -> list[str]:
    """Private methods ``cls`` itself defines that a paramiko class also defines."""
    found = []
    for name in vars(cls):
        if not name.startswith("_") or name.startswith("__"):
            continue
        for base in cls.__mro__[1:]:
            if base.__module__.startswith("paramiko") and name in vars(base):
                found.append(f"{cls.__module__}.{cls.__qualname__}.{name}")
    return found


def test_only_the_fence_overrides_private_paramiko_methods() -> None:
    overrides = []
    for module_info in pkgutil.iter_modules(sftp_server.__path__):
        module = importlib.import_module(f"sftp_server.{module_info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__:
                overrides += _private_overrides(cls)
    fenced = {o for o in overrides if o.startswith("sftp_server.paramiko_fence.")}
    assert set(overrides) == fenced
    # And every override inside the fence is one it declares.
    declared = {name.split(".", 1)[1] for name in RELIED_ON}
    assert {o.rsplit(".", 1)[1] for o in fenced} <= declared


def test_ssh_packets_are_capped_whatever_the_client_asks() -> None:
    """Uploads come in 120 KiB packets (not paramiko's 32 KiB), and a client asking for
    256 KiB packets gets 120 KiB ones: larger ones cost the gateway 4x the CPU."""
    import socket

    from sftp_server.transport import MAX_SSH_PACKET, BlindpostTransport

    ours, theirs = socket.socketpair()
    try:
        transport = BlindpostTransport(ours)
        assert MAX_SSH_PACKET == 120 << 10
        assert transport._sanitize_packet_size(None) == MAX_SSH_PACKET
        assert transport._sanitize_packet_size(256 << 10) == MAX_SSH_PACKET
        assert transport._sanitize_packet_size(32 << 10) == 32 << 10
    finally:
        ours.close()
        theirs.close()


def test_channel_receive_window_is_the_setting() -> None:
    """What a client may send ahead is ``sftp_channel_window_kib``, not paramiko's 2 MiB:
    an upload waiting for an S3 part buffer holds that much in memory."""
    import socket

    from gateway.config import Settings
    from sftp_server.transport import DEFAULT_WINDOW, BlindpostTransport

    ours, theirs = socket.socketpair()
    try:
        assert DEFAULT_WINDOW == Settings().sftp_channel_window_kib << 10 == 1 << 20
        assert BlindpostTransport(ours).default_window_size == DEFAULT_WINDOW
        assert BlindpostTransport(ours, window=512 << 10).default_window_size == 512 << 10
    finally:
        ours.close()
        theirs.close()


def _write_message(handle: bytes, offset: int, data: bytes, *, cut: int = 0) -> Message:
    body = Message()
    body.add_int(7)
    body.add_string(handle)
    body.add_int64(offset)
    body.add_string(data)
    raw = body.asbytes()
    msg = Message(raw[:len(raw) - cut])
    msg.get_int()  # paramiko's loop reads the request id before handing the message on.
    return msg


def test_write_request_gives_the_data_as_a_view_of_the_packet() -> None:
    from sftp_server.paramiko_fence import FencedSFTPServer

    data = os.urandom(255 * 1024)
    msg = _write_message(b"h-1", 1 << 40, data)
    handle, offset, view = FencedSFTPServer.write_request(msg)
    assert (handle, offset, view.tobytes()) == (b"h-1", 1 << 40, data)
    assert view.obj is msg.asbytes()  # Not a copy.
    with pytest.raises(paramiko.sftp.SFTPError, match="shorter than its data length"):
        FencedSFTPServer.write_request(_write_message(b"h-1", 0, data, cut=1))


class _Channel:
    """What the SFTP server sends on: whether a request is waiting, and each send."""

    def __init__(self) -> None:
        self.waiting = True
        self.sent: list[bytes] = []

    def recv_ready(self) -> bool:
        return self.waiting

    def recv(self, n: int) -> bytes:
        return b"\0" * n

    def send(self, data: bytes | memoryview) -> int:
        self.sent.append(bytes(data))
        return len(data)


def _replies(sent: list[bytes]) -> list[tuple[int, int, int]]:
    """(type, request id, status code) of every reply in what was sent."""
    data, replies = b"".join(sent), []
    while data:
        size = int.from_bytes(data[:4], "big")
        replies.append((data[4], int.from_bytes(data[5:9], "big"),
                        int.from_bytes(data[9:13], "big")))
        data = data[4 + size:]
    return replies


def test_ok_replies_wait_for_the_next_send_or_read_and_keep_their_order() -> None:
    from sftp_server.paramiko_fence import HELD_REPLIES, FencedSFTPServer

    channel = _Channel()
    server = FencedSFTPServer.__new__(FencedSFTPServer)  # Only its sending parts.
    server.sock, server.ultra_debug, server._held_replies = channel, False, []
    status, ok, failure = paramiko.sftp.CMD_STATUS, paramiko.sftp.SFTP_OK, \
        paramiko.sftp.SFTP_FAILURE
    server.hold_ok(1)
    server.hold_ok(2)
    assert channel.sent == [], "held while the next request is waiting"
    server.send_status(3, failure, "disk full")
    assert len(channel.sent) == 2, "the held replies in one send, then the next reply"
    assert _replies(channel.sent) == [(status, 1, ok), (status, 2, ok), (status, 3, failure)]
    # Word for word what paramiko sends for SSH_FX_OK.
    server.send_status(4, ok)
    server.hold_ok(4)
    server.send_held()
    assert channel.sent[-1] == channel.sent[-2]

    channel.sent.clear()
    for number in range(HELD_REPLIES):
        server.hold_ok(number)
    assert len(channel.sent) == 1, "at most HELD_REPLIES wait"
    server.hold_ok(99)
    channel.waiting = False
    assert server._read_all(4) == b"\0" * 4
    assert _replies(channel.sent)[-1] == (status, 99, ok), "sent before waiting for input"
    server.hold_ok(100)
    assert _replies(channel.sent)[-1] == (status, 100, ok), "nothing waiting: sent at once"
