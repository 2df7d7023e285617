"""One SSH connection to the gateway: host key check, SSH key, one-time code, SFTP.

Everything a run of ``blindpost send`` or ``fetch`` does goes over one connection, so
one one-time code serves the whole run. The host key is checked before any credential
is sent. The algorithms are the modern ones the gateway itself allows.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import paramiko

from gateway.client import receive, transmit
from gateway.client.hostkeys import Endpoint, HostKeyCheck, fingerprint
from gateway.client.sftp import SFTPSession
from gateway.errors import AuthenticationError, RemoteError, UsageError

log = logging.getLogger(__name__)

ALLOWED_ALGORITHMS: dict[str, tuple[str, ...]] = {
    "kex": ("mlkem768x25519-sha256", "curve25519-sha256@libssh.org"),
    "ciphers": ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com"),
    "macs": ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com"),
    "keys": ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521", "rsa-sha2-512", "rsa-sha2-256"),
    "pubkeys": ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                "ecdsa-sha2-nistp521", "rsa-sha2-512", "rsa-sha2-256"),
    "compression": ("none",),
}
CONNECT_SECONDS = 30.0
# How long a reply may take before the gateway counts as gone.
REPLY_SECONDS = 300.0
# A large window keeps a fast link busy with fewer round trips.
WINDOW_BYTES = 16 << 20
# Packets as large as possible (fewer Python-level packets on both sides), but below
# glibc malloc's 128 KiB mmap threshold: with 256 KiB packets the gateway's buffers
# for each packet were fresh mappings more often than not, and serving a download
# cost it about 4 times the CPU (1.4 s instead of 0.35 s per 256 MiB, measured with
# both on one 2-core machine), which the client then waited for.
MAX_PACKET_BYTES = 120 << 10


@dataclass(frozen=True)
class Credentials:
    """Who signs in: an account, its SSH key, and where its one-time code comes from."""

    user: str
    key: paramiko.PKey
    one_time_code: Callable[[], str]


def load_ssh_key(path: Path, *, passphrase: Callable[[], str] | None = None) -> paramiko.PKey:
    """Read an OpenSSH private key; ask ``passphrase`` if it is encrypted."""
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException:
        if passphrase is None:
            raise UsageError(f"{path}: the SSH key is encrypted and there is no terminal "
                             "to ask for its passphrase") from None
    except FileNotFoundError:
        raise UsageError(f"{path}: no such SSH key file") from None
    except (OSError, ValueError, paramiko.SSHException) as exc:
        raise UsageError(f"{path}: not a usable SSH private key ({exc})") from None
    try:
        return paramiko.PKey.from_path(path, passphrase().encode("utf-8"))
    except paramiko.SSHException:
        raise UsageError(f"{path}: wrong passphrase for the SSH key") from None


def _disabled_algorithms() -> dict[str, list[str]]:
    return {kind: [name for name in getattr(paramiko.Transport, f"_preferred_{kind}")
                   if name not in allowed]
            for kind, allowed in ALLOWED_ALGORITHMS.items()}


class Connection:
    """A signed-in SSH connection with its SFTP session; a context manager."""

    def __init__(self, transport: paramiko.Transport, sftp: SFTPSession) -> None:
        self._transport = transport
        self.sftp = sftp

    def close(self) -> None:
        """Hang up. An upload still open is then discarded by the gateway."""
        self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def connect(endpoint: Endpoint, *, credentials: Credentials, host_keys: HostKeyCheck,
            notice: Callable[[str], None]) -> Connection:
    """Connect, check the host key, sign in with the key and one code, start SFTP."""
    try:
        sock = socket.create_connection((endpoint.host, endpoint.port), CONNECT_SECONDS)
    except OSError as exc:
        raise RemoteError(f"cannot connect to {endpoint}: {exc.strerror or exc}") from None
    # Requests go out as soon as they are written (Nagle's algorithm off): a batch of
    # reads otherwise waited for the gateway to acknowledge the previous one, and a 256
    # MiB download took twice as long.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # The data of write requests is framed and sealed in one pass (gateway.client.transmit).
    transport = paramiko.Transport(sock, disabled_algorithms=_disabled_algorithms(),
                                   default_window_size=WINDOW_BYTES,
                                   default_max_packet_size=MAX_PACKET_BYTES,
                                   packetizer_class=transmit.OnePassPacketizer)
    try:
        return _session(transport, endpoint, credentials, host_keys, notice)
    except BaseException:
        transport.close()
        raise


def _session(transport: paramiko.Transport, endpoint: Endpoint, credentials: Credentials,
             host_keys: HostKeyCheck, notice: Callable[[str], None]) -> Connection:
    try:
        transport.start_client(timeout=CONNECT_SECONDS)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise RemoteError(f"SSH negotiation with {endpoint} failed: {exc}") from None
    message = host_keys.verify(endpoint, transport.get_remote_server_key())
    if message:
        notice(message)
    _sign_in(transport, credentials, notice)
    try:
        channel = transport.open_session(window_size=WINDOW_BYTES,
                                         max_packet_size=MAX_PACKET_BYTES)
        receive.install(channel)
        channel.settimeout(REPLY_SECONDS)
        channel.invoke_subsystem("sftp")
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise RemoteError(f"the gateway refused an SFTP session: {exc}") from None
    return Connection(transport, SFTPSession(channel, max_packet=MAX_PACKET_BYTES,
                                             send_packet=channel.out_max_packet_size,
                                             sender=transmit.ChannelSender(channel)))


def shown_instructions(instructions: str) -> str:
    """The gateway's instruction text as plain lines for the terminal: a control
    character from the server could otherwise drive the user's terminal."""
    return "\n".join("".join(ch if ch.isprintable() else "?" for ch in line)
                     for line in instructions.strip().splitlines())


def _sign_in(transport: paramiko.Transport, credentials: Credentials,
             notice: Callable[[str], None]) -> None:
    """The key, then a code for each prompt; the gateway asks again after a wrong one."""
    user, key = credentials.user, credentials.key
    try:
        remaining = transport.auth_publickey(user, key)
    except paramiko.AuthenticationException:
        raise AuthenticationError(f"the gateway refused the SSH key {fingerprint(key)} for "
                                  f"{user!r} (unknown account or key, or the account is "
                                  "disabled or locked)") from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise RemoteError(f"sign-in failed: {exc}") from None
    if not remaining:
        return
    if "keyboard-interactive" not in remaining:
        raise RemoteError(f"the gateway asks for {', '.join(remaining)} after the key; "
                          "Blindpost gateways ask for a one-time code")
    asked = 0

    def answer(_title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
        nonlocal asked
        if not prompts:
            return []
        # The gateway speaks in the instruction: an enrolment (several lines, with the
        # secret) or, when it asks again, why ("wrong code", "code already used"). The
        # first one-line instruction only repeats what the prompt asks.
        if instructions.strip() and (asked or "\n" in instructions.strip()):
            notice(shown_instructions(instructions))
        asked += 1
        return [credentials.one_time_code().strip()] * len(prompts)

    try:
        transport.auth_interactive(user, answer)
    except paramiko.AuthenticationException:
        raise AuthenticationError("the gateway refused the one-time code (wrong, already "
                                  "used, or the account is locked)") from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise RemoteError(f"sign-in failed: {exc}") from None

