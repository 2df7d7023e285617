"""The C2SP tlog-witness v1.0.0 ``add-checkpoint`` messages, for both ends.

Request body: ``old <size>``, up to 63 consistency proof hashes (base64, one a line),
an empty line, then the signed checkpoint. Success: cosignature lines. Conflict (409):
the witness's latest cosigned size, in decimal and a newline, as ``text/x.tlog.size``.
Every line ends in a newline; sizes are decimal without leading zeroes.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.audit.cosignature import CosignatureVerifier
from gateway.audit.errors import AuditError
from gateway.audit.merkle import HASH_SIZE
from gateway.audit.note import SIGNATURE_PREFIX
from gateway.errors import UsageError

ADD_CHECKPOINT_PATH = "/add-checkpoint"
SIZE_CONTENT_TYPE = "text/x.tlog.size"
MAX_PROOF_HASHES = 63
# The old size line, 63 proof lines and a checkpoint with plenty of signatures.
MAX_REQUEST_BYTES = 128 * 1024


class MalformedMessageError(UsageError):
    """A witness request or response does not follow tlog-witness (a 400, for a request)."""


def parse_size(text: str, what: str) -> int:
    """Parse a decimal size with no leading zeroes (``0`` alone is zero)."""
    if not text.isascii() or not text.isdigit() or (text.startswith("0") and text != "0"):
        raise MalformedMessageError(f"{what}: expected a decimal size without leading zeroes, "
                               f"got {text[:40]!r}")
    return int(text)


@dataclass(frozen=True)
class AddCheckpoint:
    """An ``add-checkpoint`` request: the size the witness last cosigned, the consistency
    proof from there, and the new signed checkpoint."""

    old_size: int
    proof: tuple[bytes, ...]
    checkpoint: str

    def body(self) -> bytes:
        """The request body."""
        lines = [f"old {self.old_size}"]
        lines.extend(base64.b64encode(hashed).decode() for hashed in self.proof)
        return ("\n".join(lines) + "\n\n" + self.checkpoint).encode()

    @classmethod
    def parse(cls, body: bytes) -> AddCheckpoint:
        """Parse a request body; raise :class:`MalformedMessageError` on any deviation."""
        if len(body) > MAX_REQUEST_BYTES:
            raise MalformedMessageError("request body too large")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedMessageError("request body is not UTF-8") from exc
        head, separator, checkpoint = text.partition("\n\n")
        if not separator:
            raise MalformedMessageError("expected an empty line before the checkpoint")
        lines = head.split("\n")
        if not lines[0].startswith("old "):
            raise MalformedMessageError("the first line must be 'old <size>'")
        old_size = parse_size(lines[0].removeprefix("old "), "old size")
        if len(lines) - 1 > MAX_PROOF_HASHES:
            raise MalformedMessageError(f"more than {MAX_PROOF_HASHES} consistency proof lines")
        proof = tuple(_decode_hash(line) for line in lines[1:])
        return cls(old_size, proof, checkpoint)


def _decode_hash(line: str) -> bytes:
    try:
        hashed = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedMessageError("a consistency proof line is not base64") from exc
    if len(hashed) != HASH_SIZE:
        raise MalformedMessageError(f"a consistency proof hash is not {HASH_SIZE} bytes")
    return hashed


def format_size(size: int) -> bytes:
    """A 409 body: the latest cosigned size and a newline."""
    return f"{size}\n".encode()


def parse_size_body(body: bytes) -> int:
    """Parse a 409 body."""
    text = body.decode("ascii", errors="replace")
    if not text.endswith("\n"):
        raise MalformedMessageError("a conflict body must be a size and a newline")
    return parse_size(text[:-1], "the witness's latest size")


def parse_cosignature_lines(body: bytes) -> list[str]:
    """Split a 200 body into its signature lines (each kept with its newline)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedMessageError("the cosignature response is not UTF-8") from exc
    if not text.endswith("\n"):
        raise MalformedMessageError("the cosignature response must end in a newline")
    lines = [line + "\n" for line in text[:-1].split("\n")]
    if any(not line.startswith(SIGNATURE_PREFIX) for line in lines):
        raise MalformedMessageError("expected one or more note signature lines")
    return lines


def format_cosignature_lines(lines: Sequence[str]) -> bytes:
    """A 200 body."""
    return "".join(lines).encode()


@dataclass(frozen=True)
class WitnessEndpoint:
    """A witness a gateway submits to: its submission URL prefix and its verifier key."""

    url: str
    verifier: CosignatureVerifier

    @property
    def name(self) -> str:
        return self.verifier.name


def parse_witness_list(text: str) -> tuple[WitnessEndpoint, ...]:
    """Parse ``URL VKEY`` entries separated by commas (the ``audit_witnesses`` setting).

    Raises :class:`UsageError` naming the entry at fault.
    """
    endpoints: list[WitnessEndpoint] = []
    for number, entry in enumerate((part.strip() for part in text.split(",")), start=1):
        if not entry:
            continue
        url, _, vkey = entry.partition(" ")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or (
                parts.fragment) or not vkey.strip():
            raise UsageError(f"witness {number}: expected 'https://HOST[/PREFIX] VKEY', got "
                             f"{entry[:120]!r}")
        try:
            verifier = CosignatureVerifier.from_key_string(vkey.strip())
        except AuditError as exc:
            raise UsageError(f"witness {number}: {exc.diagnostics()}") from exc
        endpoints.append(WitnessEndpoint(url.rstrip("/"), verifier))
    keys = [endpoint.verifier.key_string() for endpoint in endpoints]
    if len(set(keys)) != len(keys):
        raise UsageError("the same witness key is listed twice")
    return tuple(endpoints)
