"""The PROXY protocol (v1 text and v2 binary), from trusted load balancers only.

A TCP load balancer hides the client's address; with the PROXY protocol it sends the
address in a header before the SSH stream, so lockouts and audit events name the real
client. A header is only believed from the addresses in ``sftp_proxy_protocol_from``,
and required from them (so a balancer misconfigured to omit it cannot make every client
look like the balancer); from anywhere else a connection is plain SSH and a header would
simply fail the SSH handshake. Spec: haproxy.org/download/2.9/doc/proxy-protocol.txt.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from gateway.config import Settings, parse_networks

V1_PREFIX = b"PROXY "
V1_MAX = 107  # The longest v1 line, CRLF included.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_MAX_BODY = 1024  # Addresses plus TLVs; real balancers send far less.
_V2_VERSION = 0x2
_V2_LOCAL, _V2_PROXY = 0x0, 0x1
# Address family (high nibble) and transport (low nibble): TCP over IPv4 or IPv6.
_V2_TCP4, _V2_TCP6 = 0x11, 0x21


class ProxyHeaderError(Exception):
    """The connection did not start with a valid PROXY header."""


class NoHeaderError(ProxyHeaderError):
    """The balancer closed without sending anything: its TCP health check."""


@dataclass(frozen=True)
class ProxyProtocol:
    """Which peers are load balancers whose PROXY headers are trusted."""

    balancers: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> ProxyProtocol:
        return cls(parse_networks(settings.sftp_proxy_protocol_from,
                                  key="sftp_proxy_protocol_from"))

    def trusts(self, peer: str) -> bool:
        """Whether ``peer`` is a load balancer that must send a PROXY header."""
        if not self.balancers:
            return False
        address = ipaddress.ip_address(peer)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.balancers)


def read_header(sock: socket.socket, *, peer: str) -> str:
    """Read a v1 or v2 header from ``sock``; return the client's address.

    Reads exactly the header's bytes, never into the SSH stream behind it. A v2 LOCAL
    header (the balancer's own health check) and v1 ``UNKNOWN`` give ``peer`` itself.
    Raise :class:`ProxyHeaderError` for anything else.
    """
    first = sock.recv(len(V2_SIGNATURE))
    if not first:
        raise NoHeaderError("closed before sending a PROXY header (a health check)")
    start = first + _read_exact(sock, len(V2_SIGNATURE) - len(first))
    if start == V2_SIGNATURE:
        return _read_v2(sock, peer=peer)
    if start.startswith(V1_PREFIX):
        return _read_v1(sock, start, peer=peer)
    raise ProxyHeaderError("no PROXY protocol header from the load balancer")


def _read_exact(sock: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ProxyHeaderError("connection closed inside the PROXY header")
        data += chunk
    return bytes(data)


def _read_v1(sock: socket.socket, start: bytes, *, peer: str) -> str:
    line = bytearray(start)
    while not line.endswith(b"\r\n"):
        if len(line) >= V1_MAX:
            raise ProxyHeaderError("PROXY v1 header longer than 107 bytes")
        line += _read_exact(sock, 1)
    return parse_v1(bytes(line), peer=peer)


def parse_v1(line: bytes, *, peer: str) -> str:
    """The source address of a v1 line ``PROXY TCP4 SRC DST SPORT DPORT\\r\\n``."""
    try:
        fields = line[:-2].decode("ascii").split(" ")
    except UnicodeDecodeError as exc:
        raise ProxyHeaderError("PROXY v1 header is not ASCII") from exc
    if len(fields) >= 2 and fields[0] == "PROXY" and fields[1] == "UNKNOWN":
        return peer
    if len(fields) != 6 or fields[0] != "PROXY" or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("malformed PROXY v1 header")
    try:
        source = ipaddress.ip_address(fields[2])
        ipaddress.ip_address(fields[3])
        ports = [int(text) for text in fields[4:]]
    except ValueError as exc:
        raise ProxyHeaderError("malformed PROXY v1 header") from exc
    if source.version != (4 if fields[1] == "TCP4" else 6) or not all(
            0 <= port <= 65535 for port in ports):
        raise ProxyHeaderError("malformed PROXY v1 header")
    return str(source)


def _read_v2(sock: socket.socket, *, peer: str) -> str:
    version_command, family, length = struct.unpack("!BBH", _read_exact(sock, 4))
    if length > V2_MAX_BODY:
        raise ProxyHeaderError("PROXY v2 header too long")
    body = _read_exact(sock, length)
    return parse_v2(version_command, family, body, peer=peer)


def parse_v2(version_command: int, family: int, body: bytes, *, peer: str) -> str:
    """The source address of a v2 header, from its fields after the signature."""
    if version_command >> 4 != _V2_VERSION:
        raise ProxyHeaderError("unsupported PROXY protocol version")
    command = version_command & 0x0F
    if command == _V2_LOCAL:
        return peer
    if command != _V2_PROXY:
        raise ProxyHeaderError("unknown PROXY v2 command")
    if family == _V2_TCP4 and len(body) >= 12:
        return str(ipaddress.IPv4Address(body[:4]))
    if family == _V2_TCP6 and len(body) >= 36:
        return str(ipaddress.IPv6Address(body[:16]))
    raise ProxyHeaderError("PROXY v2 header without a TCP address")


def v2_header(source: str, destination: str, source_port: int, destination_port: int) -> bytes:
    """Build a v2 PROXY header, as a load balancer sends it (tests and benchmarks)."""
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    family = _V2_TCP4 if src.version == 4 else _V2_TCP6
    body = src.packed + dst.packed + struct.pack("!HH", source_port, destination_port)
    return V2_SIGNATURE + struct.pack("!BBH", _V2_VERSION << 4 | _V2_PROXY, family,
                                      len(body)) + body
