"""Refusing a pre-encrypted upload whose payload is not ciphertext, as it streams past.

A ``*.age`` upload is stored as it is once its header parses; without this, a real header
followed by plaintext would sit in the store, and "plaintext at rest: none" would be
false. :class:`PayloadCheck` reads the upload (binary or armored), finds where the
header ends, and tests the payload with :mod:`gateway.randomness`:

- every byte, in order, with the numpy tests of :class:`~gateway.randomness.BlockScan`
  (runs of text, excess 0x00 or 0xFF bytes per 64 KiB block);
- samples with the stronger statistical tests: the first two 64 KiB windows, one window
  every 64 MiB after them, and the last 64 KiB.

:attr:`PayloadCheck.cleared` says how much of the upload as written has passed, so that
the caller stores only bytes that were checked: a refused upload leaves no unchecked
byte even in its pending object. :class:`CheckThread` runs it on a thread of its own,
fed batches of the writes, so that the session's thread only hands them over (the tests
release the GIL); it may fall :data:`MAX_LAG` behind. Given a store, it also writes each
byte there once cleared. Its cost is measured by ``bench/payload_check.py``.
"""

from __future__ import annotations

import binascii
import collections
import itertools
import logging
import threading
from collections.abc import Callable, Iterator, Sequence

from gateway.errors import GatewayError, UsageError
from gateway.randomness import BlockScan, Finding, why_not_random

log = logging.getLogger(__name__)
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

    def feed(self, *pieces: bytes | memoryview) -> None:
        """Take the next bytes of the upload, as written (one piece or several, in order;
        several are tested as one batch), and move :attr:`cleared`."""
        payload: list[bytes | memoryview] = []
        for data in pieces:
            binary = self._dearmor.decode(data) if self._dearmor else data
            self._fed += len(data)
            if self._header_length is None:
                self._header += binary
                end = header_end(self._header)
                binary = b""
                if end is not None:
                    binary, self._header_length = bytes(self._header[end:]), end
                    self._header.clear()
            if binary:
                payload.append(binary)
        if payload:
            scanned = self._scan.feed(payload)
            sampled = None
            for binary in payload:
                sampled = sampled or self._sample(binary)
            self._refuse_first(scanned, sampled)
        self._clear()

    def finish(self) -> None:
        """The upload is complete: judge what is left (a short payload, the last bytes)."""
        if self._position < MIN_PAYLOAD:
            raise refusal("it is too short to be age ciphertext")
        self._refuse_first(self._scan.finish())
        if self._window:
            self._refuse_first(self._judge(self._window, at=self._next))
        if self._position > HEAD_WINDOWS * WINDOW:
            tail = b"".join(self._recent)[-WINDOW:]
            self._refuse_first(self._judge(tail, at=self._position - len(tail)))
        self._finished = True
        self.cleared = self._fed

    @staticmethod
    def _refuse_first(*findings: Finding | None) -> None:
        """Refuse with the finding at the lowest offset, if any (the first given of those
        at the same offset: the every-byte scan's, which says where the text begins)."""
        found = [finding for finding in findings if finding is not None]
        if found:
            at, reason = min(found, key=lambda finding: finding[0])
            raise refusal(reason, at=at)

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

    def _sample(self, data: bytes | memoryview) -> Finding | None:
        """Take the next payload bytes into the samples; judge each sample it completes
        (the first finding stops it)."""
        offset, self._position = self._position, self._position + len(data)
        # Only the last window is kept (copied if need be: writers reuse their buffers).
        self._recent.append(data if isinstance(data, bytes) else bytes(data))
        self._recent_size += len(data)
        while self._recent_size - len(self._recent[0]) >= WINDOW:
            self._recent_size -= len(self._recent.popleft())
        view = memoryview(data)
        while view:
            if offset + len(view) <= self._next:
                return None
            skip = max(0, self._next - offset)
            take = min(len(view) - skip, WINDOW - len(self._window))
            self._window += view[skip:skip + take]
            view, offset = view[skip + take:], offset + skip + take
            if len(self._window) == WINDOW:
                finding = self._judge(self._window, at=self._next)
                if finding is not None:
                    return finding
                self._window.clear()
                self._next = next(self._starts)
        return None

    @staticmethod
    def _judge(sample: bytes | bytearray, *, at: int) -> Finding | None:
        reason = why_not_random(sample, first=at == 0)
        return None if reason is None else (at, reason)


# How far the check may fall behind the writes, in bytes handed to it and not yet checked
# (and stored): beyond this the writer waits for it, so an upload holds at most this much
# unchecked (in memory, never in the store) besides the batch it is gathering.
MAX_LAG = 4 * 1024 * 1024
# What the check thread is fed: bytes, or read-only views of bytes (which cannot change).
Piece = bytes | memoryview


class CheckThread:
    """A :class:`PayloadCheck` on a thread of its own, fed batches of pieces in order.

    The session's thread only queues the pieces it wrote; the check's tests (numpy passes
    that release the GIL) run here, beside it, and so, with ``store``, does storing each
    byte once it is cleared (writing to the store and hashing it took over a third of the
    session thread's time during an upload, which is what limited it). :attr:`cleared`
    moves as the thread checks. A refusal, or the store's failure, is kept and raised to
    the writer by its next call (:meth:`raise_refusal`, :meth:`feed`, :meth:`finish`):
    the thread stops at the first and takes nothing more.
    """

    def __init__(self, check: PayloadCheck, *,
                 store: Callable[[memoryview], object] | None = None,
                 max_lag: int | None = None) -> None:
        self._check = check
        self._store = store
        self._max_lag = MAX_LAG if max_lag is None else max_lag
        self._state = threading.Condition()
        # Batches to check, in order; None asks the thread to finish the check and end.
        self._batches: collections.deque[Sequence[Piece] | None] = collections.deque()
        self._lag = 0
        self._refusal: GatewayError | None = None
        self._ended = False
        self.cleared = 0
        # Checked but not yet cleared (nor stored), in order, and how much of the first
        # piece is stored already (cleared bytes are cut at block edges, not at pieces;
        # slicing the piece would copy the rest of it). Only this thread uses them.
        self._held: collections.deque[Piece] = collections.deque()
        self._held_offset = 0
        self._stored = 0
        self._thread = threading.Thread(target=self._run, name="payload-check", daemon=True)
        self._thread.start()

    def raise_refusal(self) -> None:
        """Raise the check's refusal, if it has found one."""
        if self._refusal is not None:
            raise self._refusal

    def feed(self, batch: Sequence[Piece]) -> None:
        """Queue the next pieces (bytes, or views of bytes: nothing can change them);
        wait while the check is :data:`MAX_LAG` behind."""
        with self._state:
            while self._lag >= self._max_lag and self._refusal is None and not self._ended:
                self._state.wait()
            self.raise_refusal()
            self._batches.append(batch)
            self._lag += sum(len(piece) for piece in batch)
            self._state.notify_all()

    def settle(self) -> None:
        """Wait until everything queued is checked; raise the refusal if there is one."""
        with self._state:
            while self._lag > 0 and not self._ended:
                self._state.wait()
        self.raise_refusal()

    def finish(self) -> None:
        """Wait for the check of everything queued and its verdict on the whole upload."""
        with self._state:
            self._batches.append(None)
            self._state.notify_all()
            while not self._ended:
                self._state.wait()
        self.raise_refusal()

    def cancel(self) -> None:
        """The upload is abandoned: drop what is queued, and wait for the thread to end
        (it may be storing a batch), so that the caller may discard the store."""
        with self._state:
            self._batches.clear()
            self._ended = True
            self._state.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._state:
                while not self._batches and not self._ended:
                    self._state.wait()
                if self._ended:
                    return
                batch = self._batches.popleft()
            try:
                self._check_batch(batch)
            except GatewayError as exc:  # A refusal, or the store failed (a full disk).
                self._end(refusal=exc)
                return
            except Exception as exc:
                # A fault of the check itself refuses too: the writer must not wait for
                # a thread that is gone, nor store what was not checked.
                log.exception("the payload check of an upload failed")
                self._end(refusal=UsageError(f"the payload check failed: {exc!r}"))
                return
            if batch is None:
                self._end(refusal=None)
                return

    def _check_batch(self, batch: Sequence[Piece] | None) -> None:
        if batch is None:
            self._check.finish()
            self.cleared = self._check.cleared
            self._store_cleared()
            return
        self._check.feed(*batch)
        # One attribute store: the writer reads it without the lock.
        self.cleared = self._check.cleared
        if self._store is not None:
            self._held.extend(batch)
            self._store_cleared()
        with self._state:
            self._lag -= sum(len(piece) for piece in batch)
            self._state.notify_all()

    def _store_cleared(self) -> None:
        """Write to the store every held byte the check has cleared."""
        if self._store is None:
            return
        while self._held and self._stored < self.cleared:
            piece = self._held[0]
            take = min(len(piece) - self._held_offset, self.cleared - self._stored)
            with memoryview(piece) as view:
                self._store(view[self._held_offset:self._held_offset + take])
            self._stored += take
            self._held_offset += take
            if self._held_offset == len(piece):
                self._held.popleft()
                self._held_offset = 0

    def _end(self, *, refusal: GatewayError | None) -> None:
        with self._state:
            self._refusal = refusal
            self._ended = True
            self._batches.clear()
            self._state.notify_all()
