"""What every recipient (public key) and identity (private key) type provides."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes

from gateway.envelope.format import Stanza, b64encode


class Recipient(abc.ABC):
    """A public key that files can be encrypted to.

    Two recipients are equal when their encodings are equal. ``str()`` gives the
    ``age1…`` encoding, safe to show and store.
    """

    kind: str
    is_post_quantum: bool
    # The header stanza type this recipient's stanzas have (e.g. "X25519").
    stanza_type: str

    @abc.abstractmethod
    def __str__(self) -> str:
        """The Bech32 recipient encoding (``age1…`` or ``age1pq1…``)."""

    @abc.abstractmethod
    def wrap(self, file_key: bytes) -> Stanza:
        """Return a fresh stanza that carries ``file_key`` to this recipient."""

    @property
    def fingerprint(self) -> str:
        """A short, stable name for display and pinning.

        ``SHA256:`` followed by the unpadded base64 SHA-256 of the recipient string,
        in the style of OpenSSH key fingerprints, so a 1,900-character post-quantum
        key can be compared by eye in 50 characters.
        """
        digest = hashes.Hash(hashes.SHA256())
        digest.update(str(self).encode("ascii"))
        return "SHA256:" + b64encode(digest.finalize())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Recipient) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.fingerprint}>"


class Identity(abc.ABC):
    """A private key that can unwrap file keys. Its ``repr`` shows only its recipient."""

    kind: str
    # The header stanza type this identity reads (e.g. "X25519").
    stanza_type: str

    @property
    @abc.abstractmethod
    def recipient(self) -> Recipient:
        """The recipient (public key) of this identity."""

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """Return the file key from the first stanza of our type addressed to us, else None.

        Raises :class:`HeaderError` for a malformed stanza of our type.
        """
        for stanza in stanzas:
            if stanza.type == self.stanza_type:
                file_key = self._unwrap_one(stanza)
                if file_key is not None:
                    return file_key
        return None

    @abc.abstractmethod
    def _unwrap_one(self, stanza: Stanza) -> bytes | None:
        """The file key if ``stanza`` (of our type) is addressed to us, else None."""

    @abc.abstractmethod
    def to_secret_string(self) -> str:
        """The ``AGE-SECRET-KEY-…`` encoding. Secret: write it only to a 0600 file."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} for {self.recipient.fingerprint}>"
