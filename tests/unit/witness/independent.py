"""A second implementation of the tlog message formats, written from the C2SP specs alone.

It shares no code with ``gateway.audit`` or ``gateway.witness`` (only ``cryptography``'s
Ed25519 and the standard library), and follows each spec's text literally rather than
efficiently: the Merkle tree and the consistency proof are the recursive definitions of
RFC 6962 section 2.1, the note is split at its last blank line, and so on. The tests
cross-check the product against it in both directions.
"""

from __future__ import annotations

import base64
import hashlib
import struct

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

DASH = "\u2014"


# RFC 6962 section 2.1: MTH, and SUBPROOF for consistency proofs.
def mth(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def consistency(m: int, leaves: list[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true)."""
    return _subproof(m, leaves, True)


def _subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*_subproof(m, leaves[:k], whole), mth(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), mth(leaves[:k])]


# c2sp.org/signed-note
def key_id(name: str, sig_type: int, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public).digest()[:4]


def vkey(name: str, sig_type: int, public: bytes) -> str:
    return (f"{name}+{key_id(name, sig_type, public).hex()}+"
            + base64.b64encode(bytes([sig_type]) + public).decode())


def parse_vkey(text: str) -> tuple[str, int, bytes]:
    name, hex_id, b64 = text.split("+", 2)
    raw = base64.b64decode(b64)
    assert key_id(name, raw[0], raw[1:]).hex() == hex_id
    return name, raw[0], raw[1:]


def split(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """The text (with its final newline) and the (name, key ID + signature) pairs."""
    cut = note.rindex("\n\n")
    text, block = note[:cut + 1], note[cut + 2:]
    pairs = []
    for line in block.split("\n")[:-1]:
        dash, name, b64 = line.split(" ")
        assert dash == DASH
        pairs.append((name, base64.b64decode(b64)))
    return text, pairs


def sign_note(text: str, name: str, key: Ed25519PrivateKey, public: bytes) -> str:
    blob = key_id(name, 1, public) + key.sign(text.encode())
    return f"{text}\n{DASH} {name} {base64.b64encode(blob).decode()}\n"


def checkpoint_text(origin: str, size: int, root: bytes) -> str:
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


# c2sp.org/tlog-cosignature v1
def cosigned_message(text: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n".encode() + text.encode()


def cosign(text: str, name: str, key: Ed25519PrivateKey, public: bytes, timestamp: int) -> str:
    blob = (key_id(name, 4, public) + struct.pack(">Q", timestamp)
            + key.sign(cosigned_message(text, timestamp)))
    return f"{DASH} {name} {base64.b64encode(blob).decode()}\n"


def check_cosignature(note: str, name: str, public: bytes) -> int:
    """Verify ``name``'s cosignature in ``note``; return its timestamp."""
    text, pairs = split(note)
    for signer, blob in pairs:
        if signer == name and blob[:4] == key_id(name, 4, public):
            assert len(blob) == 4 + 8 + 64
            (timestamp,) = struct.unpack(">Q", blob[4:12])
            Ed25519PublicKey.from_public_bytes(public).verify(
                blob[12:], cosigned_message(text, timestamp))
            return int(timestamp)
    raise AssertionError(f"no cosignature from {name}")


# c2sp.org/tlog-witness add-checkpoint
def request(old: int, proof: list[bytes], note: str) -> bytes:
    lines = "".join(base64.b64encode(h).decode() + "\n" for h in proof)
    return f"old {old}\n{lines}\n{note}".encode()
