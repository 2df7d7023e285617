"""Open files of an SFTP session: uploads (through the encryptor) and downloads.

Uploads stream: each write goes into :class:`gateway.transfers.Upload`, which encrypts
and writes ciphertext to a pending store object; nothing is visible until the client
closes the handle. SFTP clients pipeline writes and may send them out of order, so a
bounded :class:`ReorderBuffer` holds early writes until the gap before them is filled.
A handle dropped by a lost connection is *abandoned* (the upload is aborted), never
closed, so a cut-off file is never committed.
"""

from __future__ import annotations

import heapq
import stat as stat_module
from collections.abc import Callable, Iterator

from paramiko import SFTPAttributes, SFTPHandle

from gateway.data_elements import Contents
from gateway.errors import GatewayError, PolicyError, UsageError
from gateway.transfers import Download, FileEntry, Upload
from sftp_server.budget import ENTRY_OVERHEAD, BufferFullError, MemoryBudget
from sftp_server.errors import SFTP_OK

# The largest read answered at once; it matches the limits@openssh.com advertisement.
MAX_READ_LENGTH = 255 * 1024

STAFF_READ_DENIED = "permission denied: staff can upload files but never read their contents"


class ReorderBuffer:
    """Releases writes in offset order, holding early ones within a memory budget.

    Each held write is charged its length plus :data:`ENTRY_OVERHEAD` to ``budget``
    (the upload's, within its session's and the process's); :meth:`discard` gives all
    of it back.
    """

    def __init__(self, budget: MemoryBudget) -> None:
        self._budget = budget
        self._held: dict[int, bytes] = {}
        self._offsets: list[int] = []
        self._held_bytes = 0
        self.next_offset = 0

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    def accept(self, offset: int, data: bytes | memoryview) -> Iterator[bytes | memoryview]:
        """Yield the bytes that are now contiguous, in order; raise if ``data`` cannot fit.

        ``data`` is passed on as it is when it is next; only a write held for later is
        copied (the caller may reuse its buffer)."""
        if not data:
            return
        if offset < self.next_offset or offset in self._held:
            raise UsageError(f"write at offset {offset} overlaps data already received; "
                             "rewriting part of an upload is not supported")
        if offset > self.next_offset:
            self._hold(offset, data)
            return
        yield data
        self.next_offset += len(data)
        yield from self._release()

    def first_gap(self) -> int | None:
        """The offset of the first missing byte if early writes are still held."""
        return self.next_offset if self._held else None

    def discard(self) -> None:
        """Drop every held write and give its memory back."""
        self._budget.give_back(self._held_bytes + len(self._held) * ENTRY_OVERHEAD)
        self._held.clear()
        self._offsets.clear()
        self._held_bytes = 0

    def _hold(self, offset: int, data: bytes | memoryview) -> None:
        try:
            self._budget.take(len(data) + ENTRY_OVERHEAD)
        except BufferFullError as exc:
            raise PolicyError(f"write at offset {offset} arrived too far ahead of the data "
                              f"received so far: {exc}; send the file sequentially") from exc
        self._held[offset] = bytes(data)
        self._held_bytes += len(data)
        heapq.heappush(self._offsets, offset)

    def _release(self) -> Iterator[bytes]:
        while self._offsets and self._offsets[0] <= self.next_offset:
            offset = heapq.heappop(self._offsets)
            data = self._held.pop(offset)
            self._held_bytes -= len(data)
            self._budget.give_back(len(data) + ENTRY_OVERHEAD)
            if offset < self.next_offset:
                raise UsageError(f"write at offset {offset} overlaps data already received; "
                                 "rewriting part of an upload is not supported")
            yield data
            self.next_offset += len(data)


class UploadHandle(SFTPHandle):  # type: ignore[misc]  # paramiko ships no type hints.
    """A file staff are writing into a partner folder: write-only, committed on close."""

    def __init__(self, upload: Upload, *, budget: MemoryBudget, path: str,
                 on_commit: Callable[[FileEntry, int], None] | None = None) -> None:
        super().__init__()
        self.path = path
        self._upload = upload
        self._buffer = ReorderBuffer(budget)
        self._on_commit = on_commit
        # Why :meth:`ready` failed, told by the next write.
        self._failure: GatewayError | None = None

    def ready(self, before_waiting: Callable[[], None] | None = None) -> None:
        """Wait until the upload's store can take its next write (an S3 upload queues for
        a part buffer), before that write is read off the channel; ``before_waiting`` is
        called first if it waits. A failure aborts the upload (audited) and is raised by
        the next write."""
        try:
            self._upload.ready(before_waiting)
        except GatewayError as exc:
            self._buffer.discard()
            self._failure = exc

    def write(self, offset: int, data: bytes | memoryview) -> int:
        """Feed the upload in offset order; any failure aborts the upload (audited)."""
        if self._failure is not None:
            raise self._failure
        if self._upload.finished:
            # Nothing more is held for an upload that already failed.
            raise UsageError("the upload failed earlier and was discarded; nothing was stored")
        try:
            for chunk in self._buffer.accept(offset, data):
                self._upload.write(chunk)
        except GatewayError as exc:
            self._buffer.discard()
            self._upload.abort(reason=exc.diagnostics())
            raise
        return SFTP_OK

    def read(self, _offset: int, _length: int) -> bytes:
        raise PolicyError(STAFF_READ_DENIED)

    def stat(self) -> SFTPAttributes:
        attrs = SFTPAttributes()
        attrs.st_size = self._buffer.next_offset
        attrs.st_mode = stat_module.S_IFREG | 0o200
        return attrs

    def chattr(self, _attr: SFTPAttributes) -> int:
        raise PolicyError("permission denied: file attributes cannot be changed")

    def close(self) -> None:
        """Commit the upload; refuse (and abort) if it failed or has a gap."""
        if self._upload.finished:
            raise UsageError("the upload failed earlier and was discarded; nothing was stored")
        gap = self._buffer.first_gap()
        if gap is not None:
            self._buffer.discard()
            reason = f"upload incomplete: data missing at offset {gap}"
            self._upload.abort(reason=reason)
            raise UsageError(reason + "; nothing was stored")
        entry = self._upload.commit()
        if self._on_commit is not None:
            self._on_commit(entry, self._upload.received)

    def declare_recipients(self, fingerprints: list[str]) -> None:
        """Pass on the keys the client says it encrypted a pre-encrypted upload to."""
        self._upload.declare_recipients(fingerprints)

    def declare_contents(self, contents: Contents) -> None:
        """Pass on what the client says a pre-encrypted upload holds."""
        self._upload.declare_contents(contents)

    def abandon(self, reason: str) -> None:
        """Discard the upload: the connection ended before the client closed the file."""
        self._buffer.discard()
        self._upload.abort(reason=reason)


class DownloadHandle(SFTPHandle):  # type: ignore[misc]  # paramiko ships no type hints.
    """A partner's own file opened for reading: ranged reads of the ciphertext."""

    def __init__(self, download: Download, *, path: str) -> None:
        super().__init__()
        self.path = path
        self._download = download

    def read(self, offset: int, length: int) -> bytes:
        return self._download.read_at(offset, min(length, MAX_READ_LENGTH))

    def write(self, _offset: int, _data: bytes) -> int:
        raise PolicyError("permission denied: inbox files are read-only")

    def stat(self) -> SFTPAttributes:
        attrs = SFTPAttributes()
        attrs.st_size = self._download.size
        attrs.st_mode = stat_module.S_IFREG | 0o400
        return attrs

    def chattr(self, _attr: SFTPAttributes) -> int:
        raise PolicyError("permission denied: inbox files are read-only")

    def close(self) -> None:
        """Release the file; a complete read is counted and audited by the gateway."""
        self._download.close()

    def abandon(self, _reason: str) -> None:
        """The connection ended: a file read to the end still counts as downloaded."""
        self._download.close()


class TextHandle(SFTPHandle):  # type: ignore[misc]  # paramiko ships no type hints.
    """A small read-only virtual file served from memory (a published recipient list)."""

    def __init__(self, data: bytes, *, path: str) -> None:
        super().__init__()
        self.path = path
        self._data = data

    def read(self, offset: int, length: int) -> bytes:
        return self._data[offset:offset + min(length, MAX_READ_LENGTH)]

    def write(self, _offset: int, _data: bytes) -> int:
        raise PolicyError("permission denied: recipient lists are read-only")

    def stat(self) -> SFTPAttributes:
        attrs = SFTPAttributes()
        attrs.st_size = len(self._data)
        attrs.st_mode = stat_module.S_IFREG | 0o400
        return attrs

    def chattr(self, _attr: SFTPAttributes) -> int:
        raise PolicyError("permission denied: recipient lists are read-only")

    def close(self) -> None:
        """Nothing to release."""

    def abandon(self, _reason: str) -> None:
        """Nothing to release."""
