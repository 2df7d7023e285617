"""SSH public keys of accounts: parsing, validation and fingerprints.

Besides ``gateway.envelope``, only ``gateway.audit.note``, ``gateway.hostkey`` and
``gateway.sshkeys`` import ``cryptography.hazmat``: each needs one primitive (signing, key
generation, key parsing) and exposes nothing of it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from gateway.errors import UsageError

# Ed25519 and ECDSA are fine; RSA only with a modern size (sha2 signatures are negotiated
# by the transport, the key type string stays "ssh-rsa").
ALLOWED_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                     "ecdsa-sha2-nistp521", "ssh-rsa")
MIN_RSA_BITS = 3072


@dataclass(frozen=True)
class PublicKey:
    """A validated SSH public key."""

    key_type: str
    blob: bytes
    comment: str

    @property
    def data_b64(self) -> str:
        return base64.b64encode(self.blob).decode("ascii")

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.blob)

    def openssh(self) -> str:
        """The key as one ``authorized_keys`` line."""
        return f"{self.key_type} {self.data_b64} {self.comment}".rstrip()


def fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob (``SHA256:…``, unpadded base64)."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")
    return f"SHA256:{digest}"


def _blob_type(blob: bytes) -> str:
    if len(blob) < 4:
        raise UsageError("malformed SSH public key: truncated key data")
    (length,) = struct.unpack(">I", blob[:4])
    if length > 64 or len(blob) < 4 + length:
        raise UsageError("malformed SSH public key: bad key type field")
    return blob[4:4 + length].decode("ascii", errors="replace")


def parse_public_key(line: str) -> PublicKey:
    """Parse one ``authorized_keys``-style line (``TYPE BASE64 [COMMENT]``).

    Raises :class:`UsageError` naming what is wrong: a malformed line, an unsupported or
    weak key type, or key data that does not match its declared type.
    """
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise UsageError("malformed SSH public key: expected 'TYPE BASE64 [COMMENT]'")
    key_type, data = parts[0], parts[1]
    if key_type not in ALLOWED_KEY_TYPES:
        raise UsageError(f"unsupported SSH key type {key_type!r}; accepted: "
                         + ", ".join(ALLOWED_KEY_TYPES))
    try:
        blob = base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise UsageError("malformed SSH public key: key data is not base64") from exc
    if _blob_type(blob) != key_type:
        raise UsageError("malformed SSH public key: key data does not match its type")
    # Imported here: the key formats cost 0.03 s to load, which the commands that only
    # list accounts or files (and import this module through the accounts) never use.
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    try:
        key = load_ssh_public_key(f"{key_type} {data}".encode("ascii"))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise UsageError("malformed SSH public key: invalid key data") from exc
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise UsageError(f"RSA key too small ({key.key_size} bits); use at least {MIN_RSA_BITS}"
                         " bits or, better, ssh-ed25519")
    comment = parts[2].strip() if len(parts) > 2 else ""
    return PublicKey(key_type, blob, comment[:200])
