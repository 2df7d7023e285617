"""One-shot helpers over the streams, for small data and tests."""

from __future__ import annotations

import io
from collections.abc import Sequence

from gateway.envelope.decrypt import Decryptor
from gateway.envelope.encrypt import Encryptor
from gateway.envelope.recipient import Identity, Recipient


def encrypt_bytes(
    plaintext: bytes, recipients: Sequence[Recipient], *, armor: bool = False
) -> bytes:
    """Return ``plaintext`` encrypted to ``recipients`` as a complete age file."""
    sink = io.BytesIO()
    with Encryptor(sink, recipients, armor=armor) as encryptor:
        encryptor.write(plaintext)
    return sink.getvalue()


def decrypt_bytes(ciphertext: bytes, identities: Sequence[Identity]) -> bytes:
    """Return the plaintext of the age file ``ciphertext`` (binary or armored)."""
    with Decryptor(io.BytesIO(ciphertext), identities) as decryptor:
        return decryptor.read()
