"""The SSH transport: modern algorithms only, strict key exchange, a quiet banner.

Algorithms are chosen by naming what is *allowed* and disabling the rest of paramiko's
lists through ``disabled_algorithms``, so an algorithm added by a later paramiko stays
off until someone allows it here.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import paramiko
from paramiko.common import DISCONNECT_SERVICE_NOT_AVAILABLE
from paramiko.ssh_exception import SSHException

from gateway.client.transmit import OnePassPacketizer
from gateway.errors import ConfigError
from sftp_server.auth import LoginGate, VerifyingAuthHandler
from sftp_server.paramiko_fence import FencedTransport, preferred_algorithms

ALLOWED_ALGORITHMS: dict[str, tuple[str, ...]] = {
    # Hybrid post-quantum first (OpenSSH 9.9+ clients offer it), then X25519.
    "kex": ("mlkem768x25519-sha256", "curve25519-sha256@libssh.org"),
    # AES-GCM only. SSH lets the client's preference decide, and OpenSSH clients list
    # AES-CTR before AES-GCM, so offering CTR would put most sessions on it (about 1.8x
    # slower here). A client that lacks GCM could be given "aes256-ctr": it is safe with
    # the encrypt-then-MAC SHA-2 MACs below, the only MACs allowed (a MAC must still be
    # negotiated even though GCM does not use it).
    "ciphers": ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com"),
    "macs": ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com"),
    "keys": ("ssh-ed25519",),
    # Client keys: SHA-2 signatures only (paramiko never lists SHA-1 "ssh-rsa" here).
    "pubkeys": ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                "ecdsa-sha2-nistp521", "rsa-sha2-512", "rsa-sha2-256"),
    "compression": ("none",),
}

# RFC 4253 requires "SSH-2.0-" and a software name; the version would only help attackers.
SERVER_VERSION = "SSH-2.0-Blindpost"
UNAVAILABLE_TEXT = ("Blindpost is temporarily unavailable (its database cannot be reached); "
                    "try again in a moment")


def disabled_algorithms() -> dict[str, list[str]]:
    """Everything paramiko knows that :data:`ALLOWED_ALGORITHMS` does not name."""
    return {kind: [name for name in preferred_algorithms(kind) if name not in allowed]
            for kind, allowed in ALLOWED_ALGORITHMS.items()}


class StrictKexRefused(SSHException):  # type: ignore[misc]  # paramiko ships no type hints.
    """The client did not agree to strict key exchange."""


# SSH packets of at most 120 KiB both ways. paramiko's default for what clients send is
# 32 KiB: an upload then costs both sides four times the packets, each handled in
# Python. Larger packets than this, which a client may ask to receive, cost more than
# they save: above glibc malloc's 128 KiB mmap threshold each packet's buffers were fresh
# mappings more often than not, and serving a download took about 4 times the CPU
# (measured with 256 KiB packets).
MAX_SSH_PACKET = 120 << 10
# The largest receive window of a channel when no setting says otherwise
# (sftp_channel_window_kib's default).
DEFAULT_WINDOW = 1 << 20


class BlindpostTransport(FencedTransport):
    """A server-side transport with Blindpost's algorithms and authentication handler."""

    max_packet_cap = MAX_SSH_PACKET

    def __init__(self, sock: socket.socket, *, window: int = DEFAULT_WINDOW) -> None:
        # ``window``: each channel's receive window when it opens. paramiko's 2 MiB sat in
        # memory for every upload waiting for an S3 part buffer: the client fills the
        # window whether or not the server takes the data. The listener opens channels
        # with the smallest window and raises an SFTP session's to its share of the
        # process's receive budget (sftp_server/receive_budget.py).
        # Read replies are framed and sealed in one pass (gateway.client.transmit).
        super().__init__(sock, disabled_algorithms=disabled_algorithms(), strict_kex=True,
                         default_max_packet_size=MAX_SSH_PACKET, default_window_size=window,
                         packetizer_class=OnePassPacketizer)
        self.local_version = SERVER_VERSION

    def on_kex_init(self) -> None:
        # Strict kex closes the Terrapin prefix-truncation attack (CVE-2023-48795); a
        # client that does not agree to it gets no further than the first KEXINIT.
        if self.server_mode and not self.initial_kex_done and not self.agreed_on_strict_kex:
            raise StrictKexRefused("client does not support strict key exchange "
                                   "(kex-strict-c-v00@openssh.com); refusing it")

    def make_auth_handler(self) -> VerifyingAuthHandler:
        # The first NEWKEYS, before any sign-in request: the client's version string is
        # known, and the gate records it before it can audit a failure.
        gate = self.server_object
        if isinstance(gate, LoginGate):
            gate.set_client_version(self.remote_version)
        return VerifyingAuthHandler(self)

    def disconnect_unavailable(self) -> None:
        """Hang up saying why (the database cannot be reached); OpenSSH prints the reason."""
        self.send_disconnect(DISCONNECT_SERVICE_NOT_AVAILABLE, UNAVAILABLE_TEXT)
        self.close()


def quiet_paramiko() -> None:
    """Keep paramiko's own INFO lines out of the log.

    paramiko narrates authentication in its words, which mislead here: "Auth rejected
    (publickey)" for every key that verified (the code is still to come). The gateway
    logs each step in its own (:mod:`gateway.auth`); paramiko's warnings and errors stay.
    """
    logging.getLogger("paramiko").setLevel(logging.WARNING)


def load_host_key(path: Path) -> paramiko.PKey:
    """The Ed25519 host key written by ``blindpost init``."""
    try:
        return paramiko.Ed25519Key.from_private_key_file(str(path))
    except FileNotFoundError:
        raise ConfigError(f"{path}: SSH host key not found; run `blindpost init`") from None
    except (OSError, SSHException) as exc:
        raise ConfigError(f"{path}: cannot load the SSH host key ({exc})") from exc
