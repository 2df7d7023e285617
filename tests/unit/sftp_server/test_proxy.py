"""The PROXY protocol parser: v1 and v2, trusted peers only, never reading past the header."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import load_settings
from gateway.errors import ConfigError
from sftp_server.proxy import (
    V2_SIGNATURE,
    NoHeaderError,
    ProxyHeaderError,
    ProxyProtocol,
    parse_v1,
    read_header,
    v2_header,
)

SSH_BANNER = b"SSH-2.0-OpenSSH_9.6\r\n"


def _read(data: bytes, peer: str = "10.0.0.5") -> tuple[str, bytes]:
    """Feed ``data`` through a socket pair; return the address and what is left unread."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(data)
        theirs.shutdown(socket.SHUT_WR)
        address = read_header(ours, peer=peer)
        return address, ours.recv(4096)


@pytest.mark.parametrize(("header", "address"), [
    (b"PROXY TCP4 198.51.100.7 10.0.0.1 51000 2222\r\n", "198.51.100.7"),
    (b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 2222\r\n", "2001:db8::7"),
    (b"PROXY UNKNOWN\r\n", "10.0.0.5"),
    (b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", "10.0.0.5"),
    (v2_header("198.51.100.7", "10.0.0.1", 51000, 2222), "198.51.100.7"),
    (v2_header("2001:db8::7", "2001:db8::1", 51000, 2222), "2001:db8::7"),
    # LOCAL: the balancer's own health check speaks for itself.
    (V2_SIGNATURE + struct.pack("!BBH", 0x20, 0x00, 0), "10.0.0.5"),
    # TLVs after the addresses are skipped.
    (V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, 12 + 7)
     + ipaddress.IPv4Address("192.0.2.9").packed + bytes(8) + b"\x04\x00\x04abcd",
     "192.0.2.9"),
])
def test_headers_give_the_client_address_and_leave_the_ssh_stream(header: bytes,
                                                                  address: str) -> None:
    assert _read(header + SSH_BANNER) == (address, SSH_BANNER)


@pytest.mark.parametrize("data", [
    SSH_BANNER,                                            # a balancer that sends no header
    b"PROXY TCP4 198.51.100.7 10.0.0.1 51000\r\n",         # a field missing
    b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",            # family and address disagree
    b"PROXY TCP4 198.51.100.7 10.0.0.1 1 99999\r\n",       # port out of range
    b"PROXY TCP4 not-an-address 10.0.0.1 1 2\r\n",
    b"PROXY " + b"A" * 120 + b"\r\n",                      # longer than 107 bytes
    b"PROXY TCP4 198.51.100.7 10.0.0.1 1 2\n",             # LF only, then EOF
    V2_SIGNATURE + struct.pack("!BBH", 0x11, 0x11, 12) + bytes(12),   # version 1 in v2
    V2_SIGNATURE + struct.pack("!BBH", 0x2F, 0x11, 12) + bytes(12),   # unknown command
    V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x12, 12) + bytes(12),   # UDP
    V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, 4) + bytes(4),     # too short for TCP4
    V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, 5000),             # absurd length
])
def test_malformed_or_missing_headers_are_refused(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        _read(data)


def test_a_bare_health_check_is_told_apart() -> None:
    with pytest.raises(NoHeaderError):
        _read(b"")


def test_v1_must_be_ascii() -> None:
    with pytest.raises(ProxyHeaderError):
        parse_v1(b"PROXY TCP4 1.2.3.4 1.2.3.5 1 2\xff\r\n", peer="x")


@given(st.ip_addresses(), st.integers(0, 65535))
def test_v2_round_trip(address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                       port: int) -> None:
    other = "10.0.0.1" if address.version == 4 else "2001:db8::1"
    assert _read(v2_header(str(address), other, port, 2222))[0] == str(address)


def test_trusted_peers(tmp_path: object) -> None:
    settings = load_settings(data_dir=tmp_path, environ={},  # type: ignore[arg-type]
                             overrides={"sftp_proxy_protocol_from": "10.0.0.5, 10.1.0.0/24"})
    proxy = ProxyProtocol.from_settings(settings)
    assert proxy.trusts("10.0.0.5")
    assert proxy.trusts("10.1.0.77")
    assert proxy.trusts("::ffff:10.1.0.77")
    assert not proxy.trusts("10.0.0.6")
    assert not proxy.trusts("127.0.0.1")
    assert not ProxyProtocol(()).trusts("10.0.0.5")


def test_invalid_balancer_list_names_the_setting(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="sftp_proxy_protocol_from: expected addresses"):
        load_settings(data_dir=tmp_path, environ={},  # type: ignore[arg-type]
                      overrides={"sftp_proxy_protocol_from": "10.0.0.5; lb.example"})
