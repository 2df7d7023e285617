"""The SSH host key: an Ed25519 key in OpenSSH format, created once by ``blindpost init``.

Besides ``gateway.envelope``, only ``gateway.audit.note``, ``gateway.hostkey`` and
``gateway.sshkeys`` import ``cryptography.hazmat``: each needs one primitive (signing, key
generation, key parsing) and exposes nothing of it.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.errors import ConfigError
from gateway.sshkeys import fingerprint


def write_private_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 and write ``data``; never overwrite an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def generate_host_key(path: Path) -> str:
    """Write a new OpenSSH Ed25519 private key to ``path`` (0600); return its fingerprint."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    write_private_file(path, pem)
    return host_key_fingerprint(_public_line(key))


def public_host_key(path: Path) -> str:
    """The host key's public half as an OpenSSH line (``ssh-ed25519 AAAA…``)."""
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise ConfigError(f"{path}: SSH host key not found; run `blindpost init`") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the SSH host key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: the SSH host key is not an Ed25519 key")
    return _public_line(key)


def host_key_fingerprint(public_line: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key line."""
    return fingerprint(base64.b64decode(public_line.split()[1]))


def _public_line(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode("ascii")
