"""The transport: quiet banner, strict key exchange required, weak algorithms refused."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from tests.unit.sftp_server.harness import Installation

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    installation = Installation(tmp_path_factory.mktemp("transport"))
    installation.start()
    yield installation
    installation.close()


def _handshake(inst: Installation, **options: object) -> paramiko.Transport:
    transport = paramiko.Transport(socket.create_connection(("127.0.0.1", inst.port)),
                                   **options)  # type: ignore[arg-type]
    try:
        transport.start_client(timeout=10)
    except paramiko.SSHException:
        transport.close()
        raise
    return transport


def test_banner_names_no_version(inst: Installation) -> None:
    with socket.create_connection(("127.0.0.1", inst.port)) as sock:
        assert sock.recv(64) == b"SSH-2.0-Blindpost\r\n"


def test_modern_client_gets_gcm_and_strict_kex(inst: Installation) -> None:
    transport = _handshake(inst)
    try:
        assert transport.local_cipher.startswith("aes") and "gcm" in transport.local_cipher
        assert transport.agreed_on_strict_kex
    finally:
        transport.close()


def _negotiated_kex(inst: Installation, caplog: pytest.LogCaptureFixture,
                    **options: object) -> str:
    # paramiko forgets its kex engine once the exchange is done; its debug log keeps it.
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="paramiko.transport"):
        _handshake(inst, **options).close()
    return next(r.getMessage().removeprefix("Kex: ") for r in caplog.records
                if r.getMessage().startswith("Kex: "))


def test_post_quantum_key_exchange_is_preferred(inst: Installation,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """A client that offers the hybrid ML-KEM exchange (paramiko, OpenSSH 9.9+) gets it."""
    assert _negotiated_kex(inst, caplog) == "mlkem768x25519-sha256"
    assert _negotiated_kex(inst, caplog, disabled_algorithms={
        "kex": ["mlkem768x25519-sha256"]}) == "curve25519-sha256@libssh.org"


def test_client_without_strict_kex_is_refused(inst: Installation) -> None:
    with pytest.raises((paramiko.SSHException, EOFError, ConnectionResetError)):
        _handshake(inst, strict_kex=False)


@pytest.mark.parametrize(("kind", "keep"), [
    ("ciphers", ["aes128-cbc", "aes256-ctr"]),
    ("kex", ["diffie-hellman-group14-sha256", "ecdh-sha2-nistp256"]),
    ("macs", ["hmac-sha1", "hmac-sha2-256"]),
])
def test_weak_algorithms_are_refused(inst: Installation, kind: str, keep: list[str],
                                     tmp_path: Path) -> None:
    everything = getattr(paramiko.Transport, f"_preferred_{kind}")
    disabled = {kind: [name for name in everything if name not in keep]}
    if kind == "macs":
        disabled["ciphers"] = [c for c in paramiko.Transport._preferred_ciphers
                               if "gcm" in c]
    with pytest.raises((paramiko.SSHException, EOFError, ConnectionResetError)):
        _handshake(inst, disabled_algorithms=disabled)


def test_connections_over_the_per_source_limit_are_closed(tmp_path: Path) -> None:
    installation = Installation(tmp_path, sftp_max_connections_per_source=2)
    installation.start()
    try:
        held = [socket.create_connection(("127.0.0.1", installation.port)) for _ in range(2)]
        for sock in held:
            assert sock.recv(64).startswith(b"SSH-2.0-")
        with socket.create_connection(("127.0.0.1", installation.port)) as extra:
            extra.settimeout(5)
            assert extra.recv(64) == b""  # Closed without a banner.
        for sock in held:
            sock.close()
    finally:
        installation.close()
