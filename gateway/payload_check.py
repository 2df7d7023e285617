"""Refusing a pre-encrypted upload whose payload is not ciphertext, as it streams past.

A ``*.age`` upload is stored as it is once its header parses; without this, a real header
followed by plaintext would sit in the store, and "plaintext at rest: none" would be
false. :class:`PayloadCheck` reads the upload (binary or armored), finds where the
header ends, and tests samples of the payload with :mod:`gateway.randomness`: the first
two 64 KiB windows, one window every 64 MiB after them, and the last 64 KiB (which
catches plaintext appended to a real file). Its cost is measured by
``bench/payload_check.py``.
"""

from __future__ import annotations

import binascii
import itertools
from collections.abc import Iterator

from gateway.errors import UsageError
from gateway.randomness import why_not_random

WINDOW = 64 * 1024
HEAD_WINDOWS = 2
SPACING = 64 * 1024 * 1024
# The shortest payload of any age file: the 16-byte nonce and one empty chunk's tag.
MIN_PAYLOAD = 32
_MAC_LINE = b"\n--- "
_ARMOR_BEGIN = b"-----BEGINAGEENCRYPTEDFILE-----"  # With whitespace removed.
_WHITESPACE = b" \t\r\n"


def header_end(data: bytes | bytearray) -> int | None:
    """Where the binary header in ``data`` ends (after its MAC line), if it is complete."""
    mac_line = data.find(_MAC_LINE)
    if mac_line < 0:
        return None
    newline = data.find(b"\n", mac_line + 1)
    return None if newline < 0 else newline + 1


def refusal(reason: str, *, at: int | None = None) -> UsageError:
    where = "" if at is None else f" at byte {at}"
    return UsageError(f"a *.age upload must be age ciphertext, but its payload{where} is not: "
                      f"{reason}; encrypt the file (blindpost encrypt, or age) and upload it "
                      "again")


class _Dearmor:
    """Decodes armored text pushed in pieces into the binary file, for sampling only
    (the partner's reader parses armor strictly)."""

    def __init__(self) -> None:
        self._text = b""
        self._begun = False
        self._ended = False

    def decode(self, data: bytes | memoryview) -> bytes:
        if self._ended:
            return b""
        text = self._text + bytes(data).translate(None, _WHITESPACE)
        if not self._begun:
            if len(text) < len(_ARMOR_BEGIN):
                self._text = text
                return b""
            if not text.startswith(_ARMOR_BEGIN):
                raise refusal("its armor does not begin with the BEGIN line")
            text, self._begun = text[len(_ARMOR_BEGIN):], True
        end = text.find(b"-")
        if end >= 0:
            text, self._ended = text[:end], True
        usable = len(text) if self._ended else len(text) - len(text) % 4
        self._text = text[usable:]
        try:
            return binascii.a2b_base64(text[:usable])
        except binascii.Error as exc:
            raise refusal("its armor is not valid base64") from exc


def _window_starts() -> Iterator[int]:
    yield from (index * WINDOW for index in range(HEAD_WINDOWS))
    yield from (index * SPACING for index in itertools.count(1))


class PayloadCheck:
    """Samples the payload of an age file pushed through :meth:`feed`; raises
    :class:`UsageError` as soon as a sample is not ciphertext, or at :meth:`finish`."""

    def __init__(self, *, armored: bool) -> None:
        self._dearmor = _Dearmor() if armored else None
        self._header = bytearray()
        self._in_payload = False
        self._position = 0
        self._starts = _window_starts()
        self._next = next(self._starts)
        self._window = bytearray()
        self._tail = b""

    def feed(self, data: bytes | memoryview) -> None:
        """Take the next bytes of the upload, as written."""
        binary = self._dearmor.decode(data) if self._dearmor else data
        if not self._in_payload:
            self._header += binary
            end = header_end(self._header)
            if end is None:
                return
            binary, self._in_payload = bytes(self._header[end:]), True
            self._header.clear()
        self._sample(binary)

    def finish(self) -> None:
        """The upload is complete: judge what is left (a short payload, the last bytes)."""
        if self._position < MIN_PAYLOAD:
            raise refusal("it is too short to be age ciphertext")
        if self._window:
            self._judge(self._window, at=self._next)
        if self._position > HEAD_WINDOWS * WINDOW:
            self._judge(self._tail, at=self._position - len(self._tail))

    def _sample(self, data: bytes | memoryview) -> None:
        offset, self._position = self._position, self._position + len(data)
        # Only the last window is kept (copied: writers reuse their buffers).
        self._tail = bytes(data[-WINDOW:]) if len(data) >= WINDOW else \
            (self._tail + data)[-WINDOW:]
        view = memoryview(data)
        while view:
            if offset + len(view) <= self._next:
                return
            skip = max(0, self._next - offset)
            take = min(len(view) - skip, WINDOW - len(self._window))
            self._window += view[skip:skip + take]
            view, offset = view[skip + take:], offset + skip + take
            if len(self._window) == WINDOW:
                self._judge(self._window, at=self._next)
                self._window.clear()
                self._next = next(self._starts)

    def _judge(self, sample: bytes | bytearray, *, at: int) -> None:
        reason = why_not_random(sample, first=at == 0)
        if reason is not None:
            raise refusal(reason, at=at)
