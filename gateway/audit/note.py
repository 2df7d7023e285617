"""C2SP signed notes and tlog checkpoints, signed with Ed25519.

Formats: c2sp.org/signed-note (text, blank line, ``— name base64(keyID || sig)`` lines)
and c2sp.org/tlog-checkpoint (origin, tree size, base64 root hash). The verifier key is
written the way Go's ``golang.org/x/mod/sumdb/note`` and the transparency-dev tools
read it: ``<name>+<key ID as 8 hex digits>+<base64(0x01 || public key)>``.

The signing key lives in one PEM (PKCS #8) file, created 0600 and never overwritten.

Besides ``gateway.envelope``, only ``gateway.audit.note``, ``gateway.audit.cosignature``,
``gateway.hostkey`` and ``gateway.sshkeys`` import ``cryptography.hazmat``: each needs one
primitive (signing, key generation, key parsing) and exposes nothing of it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.audit.errors import AuditError, VerificationError
from gateway.audit.merkle import HASH_SIZE

ED25519_TYPE = b"\x01"
SIGNATURE_PREFIX = "\u2014 "
# Far more than one log signature plus witness cosignatures; bounds work on hostile input.
MAX_SIGNATURES = 64
MAX_NOTE_BYTES = 64 * 1024


def key_id(name: str, public_key: bytes) -> bytes:
    """Return the 4-byte signed-note key ID of an Ed25519 key under ``name``."""
    return hashlib.sha256(name.encode() + b"\n" + ED25519_TYPE + public_key).digest()[:4]


def _check_key_name(name: str) -> None:
    if not name or any(char.isspace() or char == "+" for char in name):
        raise AuditError(f"invalid signed-note key name {name!r}: it must be non-empty "
                         "and contain no spaces or '+'")


def decode_base64(text: str, what: str) -> bytes:
    """Decode strict standard base64; raise :class:`VerificationError` naming ``what``."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VerificationError(f"{what}: invalid base64") from exc


@dataclass(frozen=True)
class NoteVerifier:
    """An Ed25519 signed-note verifier: a key name and a public key."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        _check_key_name(self.name)
        if len(self.public_key) != 32:
            raise AuditError("an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID carried in each signature."""
        return key_id(self.name, self.public_key)

    def key_string(self) -> str:
        """Return ``name+keyhash+base64`` for witnesses and offline verifiers."""
        encoded = base64.b64encode(ED25519_TYPE + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @classmethod
    def from_key_string(cls, text: str) -> NoteVerifier:
        """Parse a ``name+keyhash+base64`` verifier key; raise :class:`AuditError`."""
        # The base64 key may itself contain "+": only the first two separate fields.
        parts = text.strip().split("+", 2)
        if len(parts) != 3 or len(parts[1]) != 8:
            raise AuditError("verifier key: expected <name>+<8 hex digits>+<base64 key>")
        name, hash_hex, encoded = parts
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise AuditError("verifier key: the key is not valid base64") from exc
        if len(raw) != 33 or raw[:1] != ED25519_TYPE:
            raise AuditError("verifier key: not an Ed25519 signed-note key")
        verifier = cls(name, raw[1:])
        if verifier.key_id.hex() != hash_hex.lower():
            raise AuditError("verifier key: the key hash does not match the key")
        return verifier

    def verifies(self, text: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` (without the key ID) is valid over ``text``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, text)
        except InvalidSignature:
            return False
        return True


class NoteSigner:
    """Signs notes with an Ed25519 private key under a key name (the log's origin)."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        _check_key_name(name)
        self.name = name
        self._private_key = private_key
        public = private_key.public_key().public_bytes_raw()
        self.verifier = NoteVerifier(name, public)

    def sign(self, text: str) -> str:
        """Return ``text`` as a signed note with this key's signature line."""
        _check_note_text(text)
        signature = self._private_key.sign(text.encode())
        encoded = base64.b64encode(self.verifier.key_id + signature).decode()
        return f"{text}\n{SIGNATURE_PREFIX}{self.name} {encoded}\n"


def _check_note_text(text: str) -> None:
    if not text.endswith("\n"):
        raise AuditError("a note text must end with a newline")
    if any(ord(char) < 0x20 and char != "\n" for char in text):
        raise AuditError("a note must not contain control characters")


def split_note(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """Split a signed note into its text and its ``(key name, signature bytes)`` pairs.

    Nothing is verified; raises :class:`VerificationError` if the note is malformed.
    """
    if len(note.encode()) > MAX_NOTE_BYTES:
        raise VerificationError("signed note: too large")
    if any(ord(char) < 0x20 and char != "\n" for char in note):
        raise VerificationError("signed note: contains control characters")
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise VerificationError("signed note: no signature block")
    text, block = note[:cut + 1], note[cut + 2:-1]
    signatures: list[tuple[str, bytes]] = []
    for line in block.split("\n"):
        name, sep, encoded = line.removeprefix(SIGNATURE_PREFIX).partition(" ")
        if not line.startswith(SIGNATURE_PREFIX) or not sep or not name:
            raise VerificationError("signed note: malformed signature line")
        signatures.append((name, decode_base64(encoded, "signed note signature")))
    if len(signatures) > MAX_SIGNATURES:
        raise VerificationError("signed note: too many signatures")
    return text, signatures


def unverified_text(note: str) -> str:
    """Return the text of a note *without* checking any signature (our own stored notes)."""
    return split_note(note)[0]


def open_note(note: str, verifiers: Sequence[NoteVerifier]) -> str:
    """Return the text of ``note`` once a known key's signature verifies.

    Signatures from unknown keys are ignored, as the spec requires (witness
    cosignatures ride along); a known key whose signature fails rejects the note.
    """
    text, signatures = split_note(note)
    known = {(verifier.name, verifier.key_id): verifier for verifier in verifiers}
    verified = False
    for name, signature in signatures:
        verifier = known.get((name, signature[:4]))
        if verifier is None:
            continue
        if not verifier.verifies(text.encode(), signature[4:]):
            raise VerificationError(f"signed note: the signature of {name} does not verify")
        verified = True
    if not verified:
        raise VerificationError("signed note: no signature from a trusted key "
                                f"({', '.join(v.name for v in verifiers) or 'none given'})")
    return text


@dataclass(frozen=True)
class Checkpoint:
    """A tlog checkpoint body: the log's origin, a tree size and its root hash."""

    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        """Return the note text of this checkpoint."""
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint note text (extension lines are ignored)."""
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "" or not all(lines[:-1]):
            raise VerificationError("checkpoint: expected origin, size and root lines")
        origin, size_text, root_text = lines[:3]
        if not size_text.isascii() or not size_text.isdigit() or (
                size_text.startswith("0") and size_text != "0"):
            raise VerificationError(f"checkpoint: invalid tree size {size_text!r}")
        root = decode_base64(root_text, "checkpoint root")
        if len(root) != HASH_SIZE:
            raise VerificationError("checkpoint: the root hash is not 32 bytes")
        return cls(origin, int(size_text), root)


def open_checkpoint(note: str, verifier: NoteVerifier) -> Checkpoint:
    """Verify a signed checkpoint from the log ``verifier`` names and return its body."""
    checkpoint = Checkpoint.parse(open_note(note, [verifier]))
    if checkpoint.origin != verifier.name:
        raise VerificationError(f"checkpoint: origin {checkpoint.origin!r} is not the log "
                                f"{verifier.name!r}")
    return checkpoint


def generate_signing_key_file(path: Path, *, what: str = "an audit signing key") -> None:
    """Create a new Ed25519 signing key at ``path`` (mode 0600); never overwrite one.

    Raises :class:`AuditError` if the file already exists.
    """
    # Imported here: the serialization package loads the SSH key formats too (0.03 s of
    # the start of every command that reads the log, which never writes or reads a key).
    from cryptography.hazmat.primitives import serialization

    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise AuditError(f"{path}: {what} already exists; "
                         "it is never overwritten") from exc
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())


def read_private_key(path: Path, *, what: str, hint: str) -> Ed25519PrivateKey:
    """Read the Ed25519 PEM key at ``path`` (``what`` names it, ``hint`` says how to make one).

    Raises :class:`AuditError` if it is missing, readable by others or not Ed25519.
    """
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise AuditError(f"{path}: cannot read the {what} ({exc.strerror}); {hint}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuditError(f"{path}: the {what} is readable by other users; "
                         "run `chmod 600` on it")
    from cryptography.hazmat.primitives import serialization  # see generate_signing_key_file

    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise AuditError(f"{path}: not a PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditError(f"{path}: not an Ed25519 private key")
    return key


def load_signer(path: Path, *, name: str) -> NoteSigner:
    """Load the Ed25519 key at ``path`` as a signer under key name ``name``."""
    return NoteSigner(name, read_private_key(path, what="audit signing key",
                                             hint="run `blindpost init` to create one"))
