"""The classical X25519 recipient type (``age1…`` / ``AGE-SECRET-KEY-1…``)."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.envelope import bech32
from gateway.envelope.errors import HeaderError, InvalidKeyError
from gateway.envelope.format import Stanza, b64decode, b64encode
from gateway.envelope.recipient import Identity, Recipient

STANZA_TYPE = "X25519"
RECIPIENT_HRP = "age"
IDENTITY_HRP = "age-secret-key-"
_KEY_SIZE = 32
_BODY_SIZE = 32
_INFO = b"age-encryption.org/v1/X25519"
_ZERO_NONCE = bytes(12)


def _wrap_key(shared: bytes, share: bytes, recipient: bytes) -> ChaCha20Poly1305:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=share + recipient, info=_INFO)
    return ChaCha20Poly1305(key.derive(shared))


class X25519Recipient(Recipient):
    """An X25519 public key."""

    kind = "x25519"
    is_post_quantum = False
    stanza_type = STANZA_TYPE

    def __init__(self, public: bytes) -> None:
        if len(public) != _KEY_SIZE:
            raise InvalidKeyError("invalid X25519 recipient")
        self._public = public
        self._key = X25519PublicKey.from_public_bytes(public)

    def __str__(self) -> str:
        return bech32.encode(RECIPIENT_HRP, self._public)

    def wrap(self, file_key: bytes) -> Stanza:
        """Wrap ``file_key`` with a fresh ephemeral key, as the spec prescribes."""
        ephemeral = X25519PrivateKey.generate()
        share = ephemeral.public_key().public_bytes_raw()
        shared = ephemeral.exchange(self._key)
        body = _wrap_key(shared, share, self._public).encrypt(_ZERO_NONCE, file_key, None)
        return Stanza((STANZA_TYPE, b64encode(share)), body)


class X25519Identity(Identity):
    """An X25519 private key."""

    kind = "x25519"
    stanza_type = STANZA_TYPE

    def __init__(self, secret: bytes) -> None:
        if len(secret) != _KEY_SIZE:
            raise InvalidKeyError("invalid X25519 identity")
        self._secret = secret
        self._key = X25519PrivateKey.from_private_bytes(secret)
        self._public = self._key.public_key().public_bytes_raw()
        self._recipient = X25519Recipient(self._public)

    @classmethod
    def generate(cls) -> X25519Identity:
        """Return a new random identity."""
        return cls(os.urandom(_KEY_SIZE))

    @property
    def recipient(self) -> X25519Recipient:
        """The matching ``age1…`` recipient."""
        return self._recipient

    def to_secret_string(self) -> str:
        """The ``AGE-SECRET-KEY-1…`` encoding. Secret."""
        return bech32.encode(IDENTITY_HRP, self._secret, upper=True)

    def _unwrap_one(self, stanza: Stanza) -> bytes | None:
        if len(stanza.args) != 2:
            raise HeaderError("malformed X25519 stanza")
        share = b64decode(stanza.args[1])
        # The body length is checked before any decryption so that a crafted
        # multi-key ciphertext cannot be used as a partitioning oracle.
        if len(share) != _KEY_SIZE or len(stanza.body) != _BODY_SIZE:
            raise HeaderError("malformed X25519 stanza")
        try:
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(share))
        except ValueError:
            # The backend refuses an all-zero shared secret (a low-order share).
            raise HeaderError("malformed X25519 stanza") from None
        aead = _wrap_key(shared, share, self._public)
        try:
            return aead.decrypt(_ZERO_NONCE, stanza.body, None)
        except InvalidTag:
            return None
