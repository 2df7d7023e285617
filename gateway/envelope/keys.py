"""Key generation and parsing of recipient and identity strings and files."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from gateway.envelope import bech32
from gateway.envelope.errors import InvalidKeyError
from gateway.envelope.recipient import Identity, Recipient
from gateway.envelope.x25519 import X25519Identity, X25519Recipient

_T = TypeVar("_T")


# The hybrid keys' module (ML-KEM and HPKE from cryptography) is imported when a hybrid
# key is first met: `encrypt`/`decrypt` with classical keys start some 2 ms sooner.
def _hybrid_recipient(data: bytes) -> Recipient:
    from gateway.envelope.mlkem import HybridRecipient

    return HybridRecipient(data)


def _hybrid_identity(data: bytes) -> Identity:
    from gateway.envelope.mlkem import HybridIdentity

    return HybridIdentity(data)


_RECIPIENTS: dict[str, Callable[[bytes], Recipient]] = {
    "age": X25519Recipient,
    "age1pq": _hybrid_recipient,
}
_IDENTITIES: dict[str, Callable[[bytes], Identity]] = {
    "age-secret-key-": X25519Identity,
    "age-secret-key-pq-": _hybrid_identity,
}


def generate_identity(post_quantum: bool = True) -> Identity:
    """Return a new identity: hybrid ML-KEM-768 + X25519 by default, else X25519."""
    if post_quantum:
        from gateway.envelope.mlkem import HybridIdentity

        return HybridIdentity.generate()
    return X25519Identity.generate()


def parse_recipient(text: str) -> Recipient:
    """Parse an ``age1…`` (X25519) or ``age1pq1…`` (hybrid) recipient string.

    Raises :class:`InvalidKeyError` for anything else, including SSH keys and plugin
    recipients, which Blindpost does not support.
    """
    text = text.strip()
    if not text.startswith("age1"):
        raise InvalidKeyError("unsupported recipient: expected age1… or age1pq1…")
    if text != text.lower():
        raise InvalidKeyError("invalid recipient: must be lowercase")
    hrp, data = bech32.decode(text)
    kind = _RECIPIENTS.get(hrp)
    if kind is None:
        raise InvalidKeyError("unsupported recipient type")
    return kind(data)


def parse_identity(text: str) -> Identity:
    """Parse an ``AGE-SECRET-KEY-1…`` or ``AGE-SECRET-KEY-PQ-1…`` identity string.

    Error messages never repeat the input, since it may be a private key.
    """
    text = text.strip()
    if not text.startswith("AGE-SECRET-KEY-"):
        raise InvalidKeyError("unsupported identity: expected AGE-SECRET-KEY-…")
    if text != text.upper():
        raise InvalidKeyError("invalid identity: must be uppercase")
    hrp, data = bech32.decode(text)
    kind = _IDENTITIES.get(hrp)
    if kind is None:
        raise InvalidKeyError("unsupported identity type")
    return kind(data)


def parse_identities_file(text: str) -> list[Identity]:
    """Parse an identity file as ``age-keygen`` writes it.

    Blank lines and ``#`` comments are skipped; every other line must be an identity.
    Raises :class:`InvalidKeyError` (naming the line number) or if there is none.
    """
    return _parse_lines(text, parse_identity, what="identity")


def parse_recipients_file(text: str) -> list[Recipient]:
    """Parse a recipients file: one recipient a line, blank lines and ``#`` comments."""
    return _parse_lines(text, parse_recipient, what="recipient")


def _parse_lines(text: str, parse: Callable[[str], _T], *, what: str) -> list[_T]:
    found: list[_T] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(parse(line))
        except InvalidKeyError as exc:
            raise InvalidKeyError(f"line {number}: {exc.diagnostics()}") from None
    if not found:
        raise InvalidKeyError(f"no {what} found in file")
    return found
