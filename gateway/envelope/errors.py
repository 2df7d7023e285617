"""The envelope error family.

Decryption failures are split only along the outcome classes the age test vectors
(C2SP CCTV) distinguish: the armor is malformed, the header is malformed, no identity
matched, the header MAC is wrong, the payload is damaged. Messages say which class
failed and never which byte, key or check inside it, so callers cannot build an
oracle from them.
"""

from __future__ import annotations

from gateway.errors import GatewayError, UsageError


class EnvelopeError(GatewayError):
    """Base of every error raised by :mod:`gateway.envelope`."""


class UnsupportedError(EnvelopeError):
    """The installed cryptography backend lacks a primitive (ML-KEM) this needs."""


class InvalidKeyError(EnvelopeError, UsageError):
    """A recipient or identity string (or file of them) is not a valid age key."""


class RecipientError(EnvelopeError, UsageError):
    """The recipient list cannot be used: empty, or mixes post-quantum and classical."""


class DecryptionError(EnvelopeError):
    """A file could not be decrypted; the subclass names the age failure class."""


class ArmorError(DecryptionError):
    """The ASCII armor is not strict, canonical PEM (age "armor failure")."""


class HeaderError(DecryptionError):
    """The header is malformed, or a stanza addressed to us is (age "header failure")."""


class NoIdentityMatchError(DecryptionError):
    """No recipient stanza could be unwrapped by the given identities (age "no match")."""


class HeaderMACError(DecryptionError):
    """A file key was unwrapped but the header MAC does not match (age "HMAC failure")."""


class PayloadError(DecryptionError):
    """The encrypted payload is damaged, truncated or extended (age "payload failure")."""
