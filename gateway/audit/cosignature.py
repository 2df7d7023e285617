"""C2SP tlog-cosignature v1: a witness's timestamped Ed25519 signature on a checkpoint.

A cosignature is a signed-note signature line ``— <witness name> base64(key ID ||
timestamp || signature)``: the key ID is ``SHA-256(name || 0x0A || 0x04 || public
key)[:4]`` (0x04, not the 0x01 of a plain Ed25519 note key, so the two can never be
confused), the timestamp a big-endian u64 of POSIX seconds, and the Ed25519 signature
covers ``cosignature/v1``, ``time <timestamp>`` and the checkpoint text, each line ending
in a newline. Its meaning: as of that time, this is the largest consistent tree the
witness has seen for the origin.

This module also checks a *quorum*: at least N of a set of trusted witnesses cosigned a
checkpoint. It needs only ``cryptography`` (the client install), like ``note``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.audit.errors import AuditError, VerificationError
from gateway.audit.note import SIGNATURE_PREFIX, Checkpoint, split_note, unverified_text

COSIGNATURE_TYPE = b"\x04"
HEADER = b"cosignature/v1\n"
SIGNATURE_SIZE = 8 + 64
MAX_TIMESTAMP = 2**63 - 1


def cosigner_key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte key ID of a cosigner's Ed25519 key under ``name``."""
    return hashlib.sha256(name.encode() + b"\n" + COSIGNATURE_TYPE + public_key).digest()[:4]


def signed_message(text: str, timestamp: int) -> bytes:
    """What a v1 cosignature signs: header line, time line, then the checkpoint text."""
    return HEADER + f"time {timestamp}\n".encode() + text.encode()


def _check_name(name: str) -> None:
    if not name or any(char.isspace() or char == "+" for char in name):
        raise AuditError(f"invalid witness name {name!r}: it must be non-empty and contain "
                         "no spaces or '+'")


@dataclass(frozen=True)
class CosignatureVerifier:
    """A witness as a verifier trusts it: a name and an Ed25519 public key."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        if len(self.public_key) != 32:
            raise AuditError("an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> bytes:
        return cosigner_key_id(self.name, self.public_key)

    def key_string(self) -> str:
        """The vkey: ``name+<key ID in hex>+base64(0x04 || public key)``."""
        encoded = base64.b64encode(COSIGNATURE_TYPE + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @classmethod
    def from_key_string(cls, text: str) -> CosignatureVerifier:
        """Parse a witness vkey; raise :class:`AuditError` naming what is wrong."""
        parts = text.strip().split("+", 2)
        if len(parts) != 3 or len(parts[1]) != 8:
            raise AuditError(f"witness key {text.strip()[:80]!r}: expected "
                             "<name>+<8 hex digits>+<base64 key>")
        name, hash_hex, encoded = parts
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise AuditError(f"witness key {name!r}: the key is not valid base64") from exc
        if len(raw) != 33 or raw[:1] != COSIGNATURE_TYPE:
            raise AuditError(f"witness key {name!r}: not a tlog-cosignature/v1 Ed25519 key "
                             "(signature type 0x04)")
        verifier = cls(name, raw[1:])
        if verifier.key_id.hex() != hash_hex.lower():
            raise AuditError(f"witness key {name!r}: the key ID does not match the key")
        return verifier

    def verify(self, text: str, signature: bytes) -> int:
        """Check ``signature`` (without the key ID) over checkpoint ``text``; return its time.

        Raises :class:`VerificationError` if it is not a valid v1 cosignature.
        """
        if len(signature) != SIGNATURE_SIZE:
            raise VerificationError(f"cosignature of {self.name}: expected {SIGNATURE_SIZE} "
                                    f"bytes, got {len(signature)}")
        (timestamp,) = struct.unpack(">Q", signature[:8])
        if timestamp > MAX_TIMESTAMP:
            raise VerificationError(f"cosignature of {self.name}: timestamp out of range")
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(
                signature[8:], signed_message(text, timestamp))
        except InvalidSignature as exc:
            raise VerificationError(f"cosignature of {self.name}: does not verify") from exc
        return int(timestamp)


class Cosigner:
    """A witness's signing half: cosigns checkpoint texts under its name."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        _check_name(name)
        self.name = name
        self._private_key = private_key
        public = private_key.public_key().public_bytes_raw()
        self.verifier = CosignatureVerifier(name, public)

    def cosign(self, text: str, *, timestamp: int) -> str:
        """Return the signature line (newline-terminated) cosigning checkpoint ``text``."""
        if not 0 < timestamp <= MAX_TIMESTAMP:
            raise AuditError("a cosignature timestamp must be positive")
        signature = self._private_key.sign(signed_message(text, timestamp))
        payload = self.verifier.key_id + struct.pack(">Q", timestamp) + signature
        return f"{SIGNATURE_PREFIX}{self.name} {base64.b64encode(payload).decode()}\n"


@dataclass(frozen=True)
class Cosignature:
    """One verified cosignature: whose, when, and its signature line as received."""

    witness: str
    timestamp: int
    line: str


def cosignatures(note: str, witnesses: Sequence[CosignatureVerifier]) -> list[Cosignature]:
    """Return the valid cosignatures in ``note`` from ``witnesses``, one per witness.

    Signatures from other keys (the log's own, unknown witnesses) are ignored, as the
    signed-note spec requires; one that names a trusted witness's key but does not
    verify makes the note invalid (:class:`VerificationError`).
    """
    text, signatures = split_note(note)
    known = {(witness.name, witness.key_id): witness for witness in witnesses}
    found: dict[str, Cosignature] = {}
    for name, signature in signatures:
        witness = known.get((name, signature[:4]))
        if witness is None:
            continue
        timestamp = witness.verify(text, signature[4:])
        line = f"{SIGNATURE_PREFIX}{name} {base64.b64encode(signature).decode()}\n"
        found.setdefault(witness.key_string(), Cosignature(name, timestamp, line))
    return list(found.values())


def require_quorum(note: str, witnesses: Sequence[CosignatureVerifier], quorum: int, *,
                   label: str) -> list[Cosignature]:
    """Require ``quorum`` valid cosignatures on ``note`` from distinct ``witnesses``.

    Raises :class:`VerificationError` naming the witnesses that did not cosign.
    """
    if not 0 < quorum <= len({witness.key_string() for witness in witnesses}):
        raise AuditError(f"a quorum of {quorum} needs at least that many distinct witness "
                         f"keys (got {len(witnesses)})")
    found = cosignatures(note, witnesses)
    if len(found) >= quorum:
        return found
    signed = {cosignature.witness for cosignature in found}
    missing = [witness.name for witness in witnesses if witness.name not in signed]
    raise VerificationError(
        f"{label}: {len(found)} of the {quorum} witness cosignatures required",
        [f"no valid cosignature from witness {name}" for name in missing])


def with_cosignatures(note: str, lines: Sequence[str]) -> str:
    """Return the signed ``note`` with cosignature ``lines`` appended (skipping duplicates)."""
    present = set(note.splitlines(keepends=True))
    return note + "".join(line for line in dict.fromkeys(lines) if line not in present)


def require_quorum_on_largest(notes: Sequence[tuple[str, str]],
                              witnesses: Sequence[CosignatureVerifier],
                              quorum: int) -> list[Cosignature]:
    """Require ``quorum`` cosignatures on the largest of the ``(label, note)`` checkpoints
    (the one an offline verification of an export ends at)."""
    if not notes:
        raise AuditError("a witness quorum needs a cosigned checkpoint (--checkpoint FILE)")
    sized = [(Checkpoint.parse(unverified_text(note)).size, label, note)
             for label, note in notes]
    size, label, note = max(sized, key=lambda item: item[0])
    return require_quorum(note, witnesses, quorum, label=f"checkpoint {label} ({size} entries)")
