"""ASCII armor: strict PEM with the label ``AGE ENCRYPTED FILE`` (RFC 7468, figure 3).

Armor is malleable unless parsed strictly, so the reader accepts only: optional
whitespace, the BEGIN line, base64 lines of exactly 64 columns and one final line of
1 to 64 columns with canonical ``=`` padding, the END line, optional whitespace. All
lines end in LF, or all in CRLF. Both directions stream in constant memory.
"""

from __future__ import annotations

import binascii
from typing import Protocol

from gateway.envelope.errors import ArmorError
from gateway.envelope.source import BufferedSource, LineTooLongError

_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
_END = b"-----END AGE ENCRYPTED FILE-----"
_DASHES = b"-----"
_WHITESPACE = b" \t\r\n"
_COLUMNS = 64
_LINE_BYTES = 48  # Bytes of data that one full 64-column line encodes.
# Full lines are validated and decoded this many at a time, which keeps the per-line
# Python work out of the hot path.
_BULK_LINES = 1024
_MAX_LINE = 128
_PEEK = 4096


class Writable(Protocol):
    """Anything with a binary ``write``: a file, a socket file, an SFTP handle.

    As with :class:`io.RawIOBase`, ``write`` must consume all of ``data`` before it
    returns and keep no reference to it: writers reuse their buffers.
    """

    def write(self, data: bytes | memoryview, /) -> object:
        """Write all of ``data``."""
        ...


def starts_armored(source: BufferedSource) -> bool:
    """Consume leading whitespace and tell whether the input looks armored.

    Binary age files start with ``age-encryption.org/``; armored ones start with
    dashes, after optional whitespace. Whitespace before a binary file is not
    allowed, so it is reported as armored and rejected by the armor parser.
    """
    skipped = _skip_whitespace(source)
    return skipped or source.peek(len(_DASHES)) == _DASHES


def _skip_whitespace(source: BufferedSource) -> bool:
    """Consume whitespace at the start of ``source``; return whether there was any."""
    skipped = False
    while True:
        head = source.peek(_PEEK)
        stripped = head.lstrip(_WHITESPACE)
        if len(stripped) == len(head):
            return skipped
        skipped = True
        source.skip(len(head) - len(stripped))


class ArmorWriter:
    """Encodes bytes written to it as armor onto ``sink``; call :meth:`close` once."""

    def __init__(self, sink: Writable) -> None:
        self._sink = sink
        self._pending = bytearray()
        sink.write(_BEGIN + b"\n")

    def write(self, data: bytes | memoryview) -> None:
        """Encode ``data``, emitting only whole 64-column lines until :meth:`close`."""
        self._pending += data
        whole = len(self._pending) - len(self._pending) % _LINE_BYTES
        if whole >= _LINE_BYTES * _BULK_LINES:
            self._sink.write(_encode_lines(self._pending[:whole]))
            del self._pending[:whole]

    def close(self) -> None:
        """Emit the final, padded line and the END line."""
        if self._pending:
            self._sink.write(_encode_lines(self._pending))
        self._pending.clear()
        self._sink.write(_END + b"\n")


def _encode_lines(data: bytes | bytearray) -> bytes:
    text = binascii.b2a_base64(data, newline=False)
    lines = [text[i : i + _COLUMNS] for i in range(0, len(text), _COLUMNS)]
    return b"\n".join(lines) + b"\n"


class ArmorReader:
    """Decodes armor read from ``source``; ``read`` raises :class:`ArmorError`."""

    def __init__(self, source: BufferedSource) -> None:
        self._source = source
        _skip_whitespace(source)
        try:
            first = source.readline(_MAX_LINE)
        except LineTooLongError:
            raise ArmorError("invalid armor: missing BEGIN line") from None
        if first == _BEGIN + b"\n":
            self._eol = b"\n"
        elif first == _BEGIN + b"\r\n":
            self._eol = b"\r\n"
        else:
            raise ArmorError("invalid armor: missing BEGIN line")
        self._stride = _COLUMNS + len(self._eol)
        self._saw_last_line = False
        self._done = False
        self._pending = b""

    def read(self, size: int = -1, /) -> bytes:
        """Return up to ``size`` decoded bytes (all if negative); ``b""`` at the end."""
        while not self._pending and not self._done:
            self._pending = self._bulk() or self._one_line()
        if size < 0 or size >= len(self._pending):
            data, self._pending = self._pending, b""
        else:
            data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def _bulk(self) -> bytes:
        """Decode a run of full lines at once, or return b"" to fall back to one."""
        if self._saw_last_line:
            return b""
        block = self._source.peek(self._stride * _BULK_LINES)
        count = len(block) // self._stride
        block = block[: count * self._stride]
        if count < 2 or not self._well_formed(block, count):
            return b""
        text = block.replace(self._eol, b"")
        if len(text) != count * _COLUMNS or b"=" in text:
            return b""
        # Keep the last line for the slow path: it may be the final (padded) one.
        text = text[:-_COLUMNS]
        try:
            data = binascii.a2b_base64(text, strict_mode=True)
        except binascii.Error:
            return b""
        self._source.skip((count - 1) * self._stride)
        return data

    def _well_formed(self, block: bytes, count: int) -> bool:
        offset = _COLUMNS
        for eol_byte in self._eol:
            if block[offset :: self._stride] != bytes([eol_byte]) * count:
                return False
            offset += 1
        return True

    def _one_line(self) -> bytes:
        line = self._line()
        if line == _END:
            self._finish()
            return b""
        if self._saw_last_line or not line or len(line) > _COLUMNS:
            raise ArmorError("invalid armor: malformed line")
        if len(line) < _COLUMNS or line.endswith(b"="):
            self._saw_last_line = True
        return _decode_line(line, final=self._saw_last_line)

    def _line(self) -> bytes:
        try:
            line = self._source.readline(_MAX_LINE)
        except LineTooLongError:
            raise ArmorError("invalid armor: line too long") from None
        if line.endswith(self._eol):
            line = line[: -len(self._eol)]
        elif line != _END:
            # Only the END line may lack its line ending (at end of file).
            raise ArmorError("invalid armor: missing END line or mixed line endings")
        return line

    def _finish(self) -> None:
        while True:
            rest = self._source.read_exact(64 * 1024)
            if not rest:
                break
            if rest.strip(_WHITESPACE):
                raise ArmorError("invalid armor: data after END line")
        self._done = True


def _decode_line(line: bytes, *, final: bool) -> bytes:
    try:
        data = binascii.a2b_base64(line, strict_mode=True)
    except binascii.Error:
        raise ArmorError("invalid armor: bad base64") from None
    if final and binascii.b2a_base64(data, newline=False) != line:
        raise ArmorError("invalid armor: non-canonical base64")
    return data
