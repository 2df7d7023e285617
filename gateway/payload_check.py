"""Refusing a pre-encrypted upload whose payload is not ciphertext, as it streams past.

A ``*.age`` upload is stored as it is once its header parses; without this, a real header
followed by plaintext would sit in the store, and "plaintext at rest: none" would be
false. :class:`PayloadCheck` reads the upload (binary or armored), finds where the
header ends, and tests the payload with :mod:`gateway.randomness`:

- every byte, in order, with the C-speed tests of :class:`~gateway.randomness.BlockScan`
  (runs of text, excess 0x00 or 0xFF bytes per 64 KiB block);
- samples with the stronger statistical tests: the first two 64 KiB windows, one window
  every 64 MiB after them, and the last 64 KiB.

:attr:`PayloadCheck.cleared` says how much of the upload as written has passed, so that
the caller stores only bytes that were checked: a refused upload leaves no unchecked
byte even in its pending object. Its cost is measured by ``bench/payload_check.py``.
"""

from __future__ import annotations

import binascii
import collections
import itertools
from collections.abc import Iterator

from gateway.errors import UsageError
from gateway.randomness import BlockScan, why_not_random

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
    """Checks the payload of an age file pushed through :meth:`feed`; raises
    :class:`UsageError` as soon as a block or sample is not ciphertext, or at :meth:`finish`."""

    def __init__(self, *, armored: bool) -> None:
        self._dearmor = _Dearmor() if armored else None
        self._header = bytearray()
        self._header_length: int | None = None
        self._position = 0
        self._starts = _window_starts()
        self._next = next(self._starts)
        self._window = bytearray()
        # The last pieces fed, at least a window's worth once there is one: the tail
        # window is cut from them only at the end (cutting it at every write copied
        # 2.5 windows per 32 KiB write).
        self._recent: collections.deque[bytes] = collections.deque()
        self._recent_size = 0
        self._scan = BlockScan()
        self._fed = 0
        # (bytes fed so far, decoded bytes that must be checked before they may be stored)
        self._marks: collections.deque[tuple[int, int]] = collections.deque()
        self._finished = False
        self.cleared = 0

    def feed(self, data: bytes | memoryview) -> None:
        """Take the next bytes of the upload, as written, and move :attr:`cleared`."""
        binary = self._dearmor.decode(data) if self._dearmor else data
        self._fed += len(data)
        if self._header_length is None:
            self._header += binary
            end = header_end(self._header)
            binary = b""
            if end is not None:
                binary, self._header_length = bytes(self._header[end:]), end
                self._header.clear()
        if self._header_length is not None and binary:
            self._sample(binary)
            self._judge_scan(self._scan.feed(binary if isinstance(binary, bytes)
                                             else bytes(binary)))
        self._clear()

    def finish(self) -> None:
        """The upload is complete: judge what is left (a short payload, the last bytes)."""
        if self._position < MIN_PAYLOAD:
            raise refusal("it is too short to be age ciphertext")
        self._judge_scan(self._scan.finish())
        if self._window:
            self._judge(self._window, at=self._next)
        if self._position > HEAD_WINDOWS * WINDOW:
            tail = b"".join(self._recent)[-WINDOW:]
            self._judge(tail, at=self._position - len(tail))
        self._finished = True
        self.cleared = self._fed

    def _judge_scan(self, finding: tuple[int, str] | None) -> None:
        if finding is not None:
            raise refusal(finding[1], at=finding[0])

    def _clear(self) -> None:
        """Move :attr:`cleared` to the end of the input whose decoded bytes all passed
        (:attr:`BlockScan.judged`: whole blocks, short of a run of text that may grow)."""
        assert not self._finished
        if self._header_length is None:
            return
        checked = self._header_length + self._scan.judged
        decoded = self._header_length + self._position
        if self._dearmor is None:
            self.cleared = checked
            return
        # Armor: input is cleared a whole write at a time, once what it decodes to (and up
        # to two bytes its last characters decode to with the next write) passed.
        self._marks.append((self._fed, decoded + 2))
        while self._marks and self._marks[0][1] <= checked:
            self.cleared = self._marks.popleft()[0]

    def _sample(self, data: bytes | memoryview) -> None:
        offset, self._position = self._position, self._position + len(data)
        # Only the last window is kept (copied if need be: writers reuse their buffers).
        self._recent.append(data if isinstance(data, bytes) else bytes(data))
        self._recent_size += len(data)
        while self._recent_size - len(self._recent[0]) >= WINDOW:
            self._recent_size -= len(self._recent.popleft())
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
