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
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    return fingerprint(base64.b64decode(public.split()[1]))
