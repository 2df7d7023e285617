"""age v1 file encryption (c2sp.org/age) for Blindpost.

The whole public surface is re-exported here; nothing else in the gateway should
reach into the modules below, and only this package imports ``cryptography.hazmat``.

- Keys: :func:`generate_identity`, :func:`parse_recipient`, :func:`parse_identity`,
  :func:`parse_identities_file`, :func:`parse_recipients_file`; the types
  :class:`Recipient` (``kind``, ``is_post_quantum``, ``fingerprint``) and
  :class:`Identity` (``recipient``).
- Streams: :class:`Encryptor` (writable) and :class:`Decryptor` (readable), and
  :func:`inspect` for the header alone; :func:`encrypt_bytes` and
  :func:`decrypt_bytes` for small in-memory data.
- Chunks placed by the caller (regular files, a range per core):
  :class:`PayloadSealer` and :meth:`Decryptor.open_at`, with the sizes
  :data:`CHUNK_SIZE`, :data:`ENCRYPTED_CHUNK_SIZE`, :func:`sealed_size` and
  :func:`plain_size`.
- Errors: :class:`EnvelopeError` and the families in :mod:`gateway.envelope.errors`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.envelope.convenience import decrypt_bytes, encrypt_bytes
    from gateway.envelope.decrypt import Decryptor, HeaderInfo, inspect
    from gateway.envelope.encrypt import Encryptor, PayloadSealer, check_recipients
    from gateway.envelope.errors import (
        ArmorError,
        DecryptionError,
        EnvelopeError,
        HeaderError,
        HeaderMACError,
        InvalidKeyError,
        NoIdentityMatchError,
        PayloadError,
        RecipientError,
        UnsupportedError,
    )
    from gateway.envelope.keys import (
        generate_identity,
        parse_identities_file,
        parse_identity,
        parse_recipient,
        parse_recipients_file,
    )
    from gateway.envelope.mlkem import require_backend as require_post_quantum_backend
    from gateway.envelope.recipient import Identity, Recipient
    from gateway.envelope.stream import CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE, plain_size, sealed_size

# Each name's module, imported when the name is first used (PEP 562): `blindpost
# encrypt` then loads neither the decrypting nor the armor code, and `decrypt` not the
# encrypting code. Names that are not listed here are not part of the package.
_WHERE = {
    "decrypt_bytes": "convenience", "encrypt_bytes": "convenience",
    "Decryptor": "decrypt", "HeaderInfo": "decrypt", "inspect": "decrypt",
    "Encryptor": "encrypt", "PayloadSealer": "encrypt", "check_recipients": "encrypt",
    **dict.fromkeys(("ArmorError", "DecryptionError", "EnvelopeError", "HeaderError",
                     "HeaderMACError", "InvalidKeyError", "NoIdentityMatchError",
                     "PayloadError", "RecipientError", "UnsupportedError"), "errors"),
    **dict.fromkeys(("generate_identity", "parse_identities_file", "parse_identity",
                     "parse_recipient", "parse_recipients_file"), "keys"),
    "require_post_quantum_backend": "mlkem",
    "Identity": "recipient", "Recipient": "recipient",
    **dict.fromkeys(("CHUNK_SIZE", "ENCRYPTED_CHUNK_SIZE", "plain_size", "sealed_size"),
                    "stream"),
}
# The exported name where it differs from the module's own.
_OWN_NAME = {"require_post_quantum_backend": "require_backend"}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), _OWN_NAME.get(name, name))
    globals()[name] = value  # Later uses find it without this function.
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


__all__ = [
    "CHUNK_SIZE",
    "ENCRYPTED_CHUNK_SIZE",
    "ArmorError",
    "DecryptionError",
    "Decryptor",
    "Encryptor",
    "EnvelopeError",
    "HeaderError",
    "HeaderInfo",
    "HeaderMACError",
    "Identity",
    "InvalidKeyError",
    "NoIdentityMatchError",
    "PayloadError",
    "PayloadSealer",
    "Recipient",
    "RecipientError",
    "UnsupportedError",
    "check_recipients",
    "decrypt_bytes",
    "encrypt_bytes",
    "generate_identity",
    "inspect",
    "parse_identities_file",
    "parse_identity",
    "parse_recipient",
    "parse_recipients_file",
    "plain_size",
    "require_post_quantum_backend",
    "sealed_size",
]
