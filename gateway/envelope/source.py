"""A small read buffer over any object with ``read(n)``.

Parsing an age file needs three things a plain ``read`` does not give: looking at the
first bytes without consuming them (armor detection), reading one bounded line at a
time (the header), and reading exact-size blocks (payload chunks), over sources such
as pipes and sockets that may return fewer bytes than asked.
"""

from __future__ import annotations

from typing import Protocol


class Readable(Protocol):
    """Anything with a binary ``read(n)``: a file, a socket file, an SFTP handle."""

    def read(self, size: int = -1, /) -> bytes:
        """Return up to ``size`` bytes; an empty result means end of stream."""
        ...


# Header lines are read in blocks of this size; what is read past the header stays
# buffered and is handed to the payload reader, so nothing is read twice.
_BLOCK = 16 * 1024


class LineTooLongError(Exception):
    """A line exceeded the caller's limit before its line feed."""


class BufferedSource:
    """Buffered reads over a :class:`Readable`, with peek and bounded lines."""

    def __init__(self, raw: Readable) -> None:
        self._raw = raw
        self._buf = b""
        self._eof = False
        self._taken = 0  # Bytes read from ``raw``, buffered or not.

    @property
    def position(self) -> int:
        """How many bytes of the stream have been consumed (read, skipped, parsed)."""
        return self._taken - len(self._buf)

    def _fill(self, size: int) -> bool:
        """Read up to ``size`` more bytes into the buffer; False at end of stream."""
        if self._eof:
            return False
        data = self._raw.read(size)
        if not data:
            self._eof = True
            return False
        self._buf += data
        self._taken += len(data)
        return True

    def peek(self, size: int) -> bytes:
        """Return up to ``size`` bytes without consuming them (fewer only at EOF)."""
        while len(self._buf) < size and self._fill(size - len(self._buf)):
            pass
        return self._buf[:size]

    def skip(self, size: int) -> None:
        """Consume ``size`` bytes that a previous :meth:`peek` returned."""
        self._buf = self._buf[size:]

    def readline(self, limit: int) -> bytes:
        """Return the next line including its LF, or the unterminated rest at EOF.

        Raises :class:`LineTooLongError` if no LF appears within ``limit`` bytes.
        """
        start = 0
        while True:
            end = self._buf.find(b"\n", start, limit)
            if end >= 0:
                line, self._buf = self._buf[: end + 1], self._buf[end + 1 :]
                return line
            if len(self._buf) >= limit:
                raise LineTooLongError
            start = len(self._buf)
            if not self._fill(_BLOCK):
                line, self._buf = self._buf, b""
                return line

    def read_exact(self, size: int) -> bytes:
        """Return exactly ``size`` bytes, or fewer only if the stream ends first."""
        if self._buf:
            head, self._buf = self._buf[:size], self._buf[size:]
            if len(head) == size:
                return head
            parts = [head]
            missing = size - len(head)
        else:
            parts = []
            missing = size
        while missing and not self._eof:
            data = self._raw.read(missing)
            if not data:
                self._eof = True
                break
            parts.append(data)
            missing -= len(data)
            self._taken += len(data)
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def readinto_exact(self, view: memoryview) -> int:
        """Fill ``view``; return the count, smaller only if the stream ends first.

        Reads straight into ``view`` when the source has ``readinto`` (files do),
        so a large block is copied once, by the kernel.
        """
        done = min(len(self._buf), len(view))
        view[:done] = self._buf[:done]
        self._buf = self._buf[done:]
        readinto = getattr(self._raw, "readinto", None)
        while done < len(view) and not self._eof:
            if readinto is not None:
                count = readinto(view[done:]) or 0
            else:
                data = self._raw.read(len(view) - done)
                count = len(data)
                view[done:done + count] = data
            if not count:
                self._eof = True
                break
            done += count
            self._taken += count
        return done
