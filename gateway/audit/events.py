"""The event an entry records, and its leaf: RFC 8785 canonical JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.audit.errors import AuditError
from gateway.audit.tags import AuditTag

LEAF_VERSION = 1
MAX_LEAF_BYTES = 16 * 1024
MAX_TEXT = 1024
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class AuditEvent:
    """One decoded entry of the log."""

    index: int
    time: datetime
    tag: str
    actor: str
    subject: str
    details: dict[str, Any]
    leaf: bytes

    def as_dict(self) -> dict[str, Any]:
        """Return the event as the JSON object its leaf holds."""
        decoded: dict[str, Any] = json.loads(self.leaf)
        return decoded

    def text_line(self) -> str:
        """The event as one line of text, safe to print whatever its fields hold.

        Actor and subject are escaped (:func:`escape_text`) and details rendered as JSON
        values, so a name with a newline or a terminal escape cannot forge a line or
        repaint the screen; the leaf itself is what the log keeps.
        """
        details = " ".join(f"{escape_text(key)}={json.dumps(value)}"
                           for key, value in self.details.items())
        stamp = self.time.strftime("%Y-%m-%d %H:%M:%S")
        return (f"{self.index:>8}  {stamp}  {escape_text(self.tag):<24} "
                f"{escape_text(self.actor)}  {escape_text(self.subject)}  {details}")


_SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_text(text: str) -> str:
    """``text`` with every character that is not printable (controls, line and bidi
    marks, unassigned code points) written as a backslash escape, and the backslash too,
    so that the escaped form is unambiguous."""
    return "".join(ch if ch.isprintable() and ch != "\\" else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    if ch in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[ch]
    code = ord(ch)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def format_time(moment: datetime) -> str:
    """Render an aware datetime as the leaf's UTC time string (microseconds, ``Z``)."""
    if moment.tzinfo is None:
        raise AuditError("audit times must be timezone-aware")
    utc = moment.astimezone(UTC)
    if utc.year < 1000:
        return utc.strftime(TIME_FORMAT)  # isoformat would pad the year; strftime does not.
    # TIME_FORMAT, through isoformat: verification formats every entry's time column,
    # and strftime costs three times as much.
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> datetime:
    """Parse a leaf time string back to an aware UTC datetime."""
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)


def _check_value(key: str, value: object) -> None:
    if isinstance(value, list):
        for item in value:
            _check_value(key, item)
        return
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise AuditError(f"audit detail {key!r}: longer than {MAX_TEXT} characters")
    if isinstance(value, float) and not math.isfinite(value):
        raise AuditError(f"audit detail {key!r}: not a finite number")
    if not isinstance(value, str | int | float | bool) and value is not None:
        # Only plain values: ids, sizes, hashes, names. Nested blobs are where file
        # contents or health data would creep in.
        raise AuditError(f"audit detail {key!r}: {type(value).__name__} is not allowed; "
                         "use strings, numbers, booleans, null or lists of them")


def _check_details(details: Mapping[str, object]) -> dict[str, object]:
    for key, value in details.items():
        if not isinstance(key, str) or not key or len(key) > 64:
            raise AuditError(f"audit detail name {key!r}: must be a short non-empty string")
        _check_value(key, value)
    return dict(details)


def encode_leaf(*, index: int, time: datetime, tag: AuditTag, actor: str, subject: str,
                details: Mapping[str, object] | None) -> bytes:
    """Return the canonical JSON leaf of an event; raise :class:`AuditError` if invalid."""
    for name, text in (("actor", actor), ("subject", subject)):
        if not isinstance(text, str) or not text or len(text) > MAX_TEXT:
            raise AuditError(f"audit {name}: must be a non-empty string of at most "
                             f"{MAX_TEXT} characters")
    document = {"v": LEAF_VERSION, "index": index, "time": format_time(time),
                "tag": tag.value, "actor": actor, "subject": subject,
                "details": _check_details(details or {})}
    # Imported here: reading and verifying leaves needs only the standard library, and
    # runs on client-only installs that lack this server dependency.
    import rfc8785

    try:
        leaf = rfc8785.dumps(document)  # type: ignore[arg-type]  # Values were checked above.
    except rfc8785.CanonicalizationError as exc:
        raise AuditError(f"audit event cannot be canonicalised: {exc}") from exc
    if len(leaf) > MAX_LEAF_BYTES:
        raise AuditError(f"audit event too large ({len(leaf)} bytes; at most {MAX_LEAF_BYTES})")
    return leaf


def decode_leaf(leaf: bytes) -> AuditEvent:
    """Decode a leaf; raise :class:`ValueError` if it is not a well-formed event."""
    return event_from_document(json.loads(leaf), leaf)


def event_from_document(document: object, leaf: bytes, *,
                        time: datetime | None = None) -> AuditEvent:
    """The event of an already decoded leaf; raise :class:`ValueError` if malformed.

    ``time`` spares parsing the time text when the caller holds it already (the
    entry's time column, which verification checks against the leaf).
    """
    if not isinstance(document, dict) or document.get("v") != LEAF_VERSION:
        raise ValueError("not a version 1 audit event")
    # Field by field rather than in a loop: a report reads a million of these.
    index, details = document.get("index"), document.get("details")
    time_text, tag = document.get("time"), document.get("tag")
    actor, subject = document.get("actor"), document.get("subject")
    if not (isinstance(index, int) and isinstance(details, dict) and isinstance(time_text, str)
            and isinstance(tag, str) and isinstance(actor, str) and isinstance(subject, str)):
        raise ValueError("audit event fields have the wrong types")
    moment = parse_time(time_text) if time is None else time
    return AuditEvent(index, moment, tag, actor, subject, details, leaf)
