"""The hybrid post-quantum recipient type: ``mlkem768x25519`` (``age1pq1…``).

The file key is sealed with HPKE (RFC 9180 SealBase) using the MLKEM768-X25519 KEM of
draft-ietf-hpke-pq (X-Wing), HKDF-SHA256 and ChaCha20Poly1305, with the info string
``age-encryption.org/mlkem768x25519``. The identity is a 32-byte seed; the ML-KEM and
X25519 private keys are expanded from it with SHAKE256, as the hybrid KEM defines.
"""

from __future__ import annotations

import functools
import os

import cryptography
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from gateway.envelope import bech32
from gateway.envelope.errors import HeaderError, InvalidKeyError, UnsupportedError
from gateway.envelope.format import Stanza, b64decode, b64encode
from gateway.envelope.recipient import Identity, Recipient

STANZA_TYPE = "mlkem768x25519"
RECIPIENT_HRP = "age1pq"
IDENTITY_HRP = "age-secret-key-pq-"
_INFO = b"age-encryption.org/mlkem768x25519"
_SEED_SIZE = 32
_MLKEM_SEED_SIZE = 64
_MLKEM_PUBLIC_SIZE = 1184
_MLKEM_CIPHERTEXT_SIZE = 1088
_X25519_SIZE = 32
_PUBLIC_SIZE = _MLKEM_PUBLIC_SIZE + _X25519_SIZE
_ENC_SIZE = _MLKEM_CIPHERTEXT_SIZE + _X25519_SIZE
_BODY_SIZE = 32


@functools.cache
def _mlkem_available() -> bool:
    # The public API answers by refusing: generating one key tells whether the OpenSSL
    # that cryptography was built with provides ML-KEM-768.
    try:
        mlkem.MLKEM768PrivateKey.generate()
    except UnsupportedAlgorithm:
        return False
    return True


def require_backend() -> None:
    """Raise :class:`UnsupportedError` unless the installed cryptography provides ML-KEM-768."""
    if not _mlkem_available():
        raise UnsupportedError(
            "post-quantum (mlkem768x25519) keys need ML-KEM, which the installed "
            f"cryptography {cryptography.__version__} does not provide; "
            "install cryptography 47 or newer built against OpenSSL 3.5 or newer"
        )


def _suite() -> hpke.Suite:
    return hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


class HybridRecipient(Recipient):
    """An MLKEM768-X25519 public key: 1,184 bytes of ML-KEM then 32 of X25519."""

    kind = "mlkem768x25519"
    is_post_quantum = True
    stanza_type = STANZA_TYPE

    def __init__(self, public: bytes) -> None:
        require_backend()
        if len(public) != _PUBLIC_SIZE:
            raise InvalidKeyError("invalid post-quantum recipient")
        try:
            pq = mlkem.MLKEM768PublicKey.from_public_bytes(public[:_MLKEM_PUBLIC_SIZE])
        except ValueError:
            raise InvalidKeyError("invalid post-quantum recipient") from None
        classic = X25519PublicKey.from_public_bytes(public[_MLKEM_PUBLIC_SIZE:])
        self._public = public
        self._key = hpke.MLKEM768X25519PublicKey(pq, classic)

    def __str__(self) -> str:
        return bech32.encode(RECIPIENT_HRP, self._public)

    def wrap(self, file_key: bytes) -> Stanza:
        """Seal ``file_key`` with HPKE; the stanza carries *enc*, the body the seal."""
        sealed = _suite().encrypt(file_key, self._key, info=_INFO)
        enc, body = sealed[:_ENC_SIZE], sealed[_ENC_SIZE:]
        return Stanza((STANZA_TYPE, b64encode(enc)), body)


class HybridIdentity(Identity):
    """An MLKEM768-X25519 private key, held as its 32-byte seed."""

    kind = "mlkem768x25519"
    stanza_type = STANZA_TYPE

    def __init__(self, seed: bytes) -> None:
        require_backend()
        if len(seed) != _SEED_SIZE:
            raise InvalidKeyError("invalid post-quantum identity")
        shake = hashes.Hash(hashes.SHAKE256(_MLKEM_SEED_SIZE + _X25519_SIZE))
        shake.update(seed)
        expanded = shake.finalize()
        pq = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:_MLKEM_SEED_SIZE])
        self._classic = X25519PrivateKey.from_private_bytes(expanded[_MLKEM_SEED_SIZE:])
        self._seed = seed
        self._key = hpke.MLKEM768X25519PrivateKey(pq, self._classic)
        public = pq.public_key().public_bytes_raw() + self._classic.public_key().public_bytes_raw()
        self._recipient = HybridRecipient(public)

    @classmethod
    def generate(cls) -> HybridIdentity:
        """Return a new random identity."""
        require_backend()
        return cls(os.urandom(_SEED_SIZE))

    @property
    def recipient(self) -> HybridRecipient:
        """The matching ``age1pq1…`` recipient."""
        return self._recipient

    def to_secret_string(self) -> str:
        """The ``AGE-SECRET-KEY-PQ-1…`` encoding. Secret."""
        return bech32.encode(IDENTITY_HRP, self._seed, upper=True)

    def _unwrap_one(self, stanza: Stanza) -> bytes | None:
        if len(stanza.args) != 2:
            raise HeaderError("malformed mlkem768x25519 stanza")
        enc = b64decode(stanza.args[1])
        # Lengths are checked before any decryption (partitioning-oracle defence).
        if len(enc) != _ENC_SIZE or len(stanza.body) != _BODY_SIZE:
            raise HeaderError("malformed mlkem768x25519 stanza")
        self._reject_low_order(enc[_MLKEM_CIPHERTEXT_SIZE:])
        try:
            return _suite().decrypt(enc + stanza.body, self._key, info=_INFO)
        except InvalidTag:
            return None

    def _reject_low_order(self, share: bytes) -> None:
        # age forbids an all-zero X25519 shared secret in this stanza too; the HPKE
        # layer would only fail to open it, which would look like "not for us".
        try:
            self._classic.exchange(X25519PublicKey.from_public_bytes(share))
        except ValueError:
            raise HeaderError("malformed mlkem768x25519 stanza") from None
