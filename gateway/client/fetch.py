"""``blindpost fetch``: download what is new in the inbox, verify it, decrypt it.

Each file is downloaded with pipelined ranged reads into a hidden partial file in the
output folder (ciphertext only) and decrypted while it arrives into a private temporary
file. Only when the whole file has been decrypted (every chunk authenticated) and its
SHA-256 equals the one the gateway recorded is the plaintext made durable and renamed
to its final name. An interrupted download resumes from its partial file; the gateway
counts a resumed read that reaches the end as the download it completes.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from gateway import envelope
from gateway.client import names
from gateway.client.fetched import FetchedRecord, RemoteFile
from gateway.client.files import atomic_output, sync_directory
from gateway.client.progress import Advance, Progress
from gateway.client.sftp import OPEN_READ, SFTPSession
from gateway.errors import GatewayError, RemoteError, UsageError
from gateway.sftp_extensions import CIPHERTEXT_SHA256, TRANSFER_ID

# At most this many files in one listing: a Blindpost inbox holds far fewer (files
# expire within days), and a gateway that lists more is refused rather than let fill
# the client's memory.
MAX_LISTED = 10_000
_BLOCK = 1 << 20
# Received blocks (up to 255 KiB each) that may wait to be hashed and written.
_QUEUED = 64


@dataclass
class FetchResult:
    """The outcome of one file."""

    name: str
    transfer_id: str
    ok: bool = False
    path: str | None = None
    size: int = 0
    sha256: str = ""
    resumed_at: int = 0
    seconds: float = 0.0
    error: str | None = None


def inbox(sftp: SFTPSession) -> list[RemoteFile]:
    """The files waiting in the partner's inbox, with the gateway's recorded hashes.

    Every name, id and hash is checked here, before anything uses it: one that is not
    plain refuses the whole listing, since only a broken or hostile gateway sends it.
    """
    files = []
    for entry in sftp.listdir("/", limit=MAX_LISTED):
        attrs = entry.attributes
        sha256, transfer_id = attrs.extended.get(CIPHERTEXT_SHA256), attrs.extended.get(
            TRANSFER_ID)
        if sha256 is None or transfer_id is None or attrs.size is None:
            raise RemoteError("the server does not list ciphertext hashes; is it a "
                              "Blindpost gateway, signed in as a partner account?")
        files.append(checked(RemoteFile(entry.name, attrs.size, sha256, transfer_id)))
    return files


def checked(entry: RemoteFile) -> RemoteFile:
    """``entry`` if its name, transfer id and hash are plain; see :mod:`.names`."""
    names.plain_name(entry.name)
    names.transfer_id(entry.transfer_id)
    names.ciphertext_sha256(entry.sha256)
    return entry


class _Recorder:
    """Hashes the ciphertext and appends what arrives to the partial file, in a thread.

    Both release the GIL, so they run beside the decryption; up to :data:`_QUEUED`
    blocks wait, so the download rarely waits for them. :meth:`finish` returns the
    SHA-256 and raises the first write error.
    """

    def __init__(self, partial: BinaryIO) -> None:
        self._partial = partial
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[tuple[bytes | memoryview, bool] | None] = queue.Queue(_QUEUED)
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="blindpost-record",
                                        daemon=True)
        self._thread.start()
        self._stopped = False

    def add(self, data: bytes | memoryview, *, append: bool) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((data, append))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            data, append = item
            if self._error is None:
                try:
                    if append:
                        self._partial.write(data)
                except OSError as exc:
                    self._error = exc
                self._hash.update(data)

    def finish(self) -> str:
        self.stop()
        if self._error is not None:
            raise self._error
        return self._hash.hexdigest()

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._queue.put(None)
            self._thread.join()


class _Ciphertext:
    """The ciphertext as the decryptor reads it.

    First the part already on disk from an interrupted run, then the rest from the
    gateway, appended to the partial file as it arrives. Everything is hashed. The
    blocks from the gateway are views of what the SFTP session received; the
    decryptor gets a copy of each piece it asks for, and nothing else copies them.
    """

    def __init__(self, local: BinaryIO, have: int, remote: Iterator[memoryview],
                 recorder: _Recorder, advance: Advance) -> None:
        self._local = local
        self._local_left = have
        self._remote = remote
        self._recorder = recorder
        self._advance = advance
        self._buffer = memoryview(b"")
        self._offset = 0

    def read(self, size: int = -1, /) -> bytes:
        if self._offset == len(self._buffer):
            self._buffer, self._offset = self._next(), 0
        end = len(self._buffer) if size < 0 else min(self._offset + size, len(self._buffer))
        piece = self._buffer[self._offset:end].tobytes()
        self._offset = end
        return piece

    def _next(self) -> memoryview:
        if self._local_left:
            data = memoryview(self._local.read(min(self._local_left, _BLOCK)))
            if not data:
                raise UsageError("the partial download shrank while it was read")
            self._local_left -= len(data)
            self._recorder.add(data, append=False)
        else:
            data = next(self._remote, memoryview(b""))
            self._recorder.add(data, append=True)
            self._advance(len(data))
        return data


class Fetcher:
    """Fetches files of one inbox into one folder over one SFTP session."""

    def __init__(self, sftp: SFTPSession, *, out_dir: Path,
                 identities: Sequence[envelope.Identity], record: FetchedRecord,
                 progress: Progress, keep_ciphertext: bool, overwrite: bool) -> None:
        self._sftp = sftp
        self._out = out_dir
        self._identities = identities
        self._record = record
        self._progress = progress
        self._keep = keep_ciphertext
        self._overwrite = overwrite

    def partial_path(self, entry: RemoteFile) -> Path:
        """The hidden partial file of ``entry``, which must be :func:`checked`."""
        suffix = f".{entry.transfer_id}.part"
        # Cut the name so the whole stays within NAME_MAX; the id keeps it unique.
        room = names.MAX_NAME_BYTES - 1 - len(suffix)
        name = entry.name.encode("utf-8")[:room].decode("utf-8", "ignore")
        return self._out / f".{name}{suffix}"

    def fetch(self, entry: RemoteFile, *, now: datetime) -> FetchResult:
        """Download, verify and decrypt one file; failures are in the result."""
        result = FetchResult(entry.name, entry.transfer_id, size=entry.size,
                             sha256=entry.sha256)
        started = time.monotonic()
        try:
            target = self._target(checked(entry))
            self._record.mark_begun(entry)
            self._download(entry, target, result)
            self._record.mark_fetched(entry, target, now=now)
            result.path = str(target)
        except (GatewayError, OSError) as exc:
            result.error = (exc.diagnostics() if isinstance(exc, GatewayError)
                            else f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
        result.seconds = time.monotonic() - started
        result.ok = result.error is None
        return result

    def _target(self, entry: RemoteFile) -> Path:
        target = self._out / names.plain_name(entry.name)
        taken = [p for p in (target, self._out / entry.name if self._keep else None)
                 if p is not None and p.exists()]
        if taken and not self._overwrite:
            raise UsageError(f"{taken[0]} already exists; move it away or use --overwrite")
        return target

    def _download(self, entry: RemoteFile, target: Path, result: FetchResult) -> None:
        partial = self.partial_path(entry)
        have = partial.stat().st_size if partial.exists() else 0
        if have > entry.size:
            partial.unlink()
            have = 0
        result.resumed_at = have
        handle = self._sftp.open("/" + entry.name, OPEN_READ) if have < entry.size else None
        remote = (self._sftp.read_stream(handle, have, entry.size) if handle is not None
                  else iter(()))
        try:
            self._decrypt(entry, partial, have, remote, target)
        except envelope.NoIdentityMatchError as exc:
            raise UsageError("none of the identities (-i) opens this file: "
                             f"{exc.diagnostics()}") from None
        except envelope.DecryptionError:
            # The ciphertext is damaged: start again from scratch next time.
            partial.unlink(missing_ok=True)
            raise
        finally:
            if handle is not None:
                self._close(handle, remote)
        self._finish_ciphertext(entry, partial)

    def _decrypt(self, entry: RemoteFile, partial_path: Path, have: int,
                 remote: Iterator[memoryview], target: Path) -> None:
        with (partial_path.open("ab") as partial, partial_path.open("rb") as local,
              self._progress.file(entry.name, entry.size, done=have) as advance,
              atomic_output(target) as sink):
            recorder = _Recorder(partial)
            try:
                source = _Ciphertext(local, have, remote, recorder, advance)
                buffer = memoryview(bytearray(_BLOCK))
                with envelope.Decryptor(source, self._identities) as decryptor:
                    while count := decryptor.readinto(buffer):
                        sink.write(buffer[:count])
            finally:
                recorder.stop()
            if recorder.finish() != entry.sha256:
                partial_path.unlink()
                raise RemoteError("the file's SHA-256 differs from the one the gateway "
                                  "recorded; nothing was kept, the next run downloads it "
                                  "again")

    def _close(self, handle: bytes, remote: Iterator[memoryview]) -> None:
        close = getattr(remote, "close", None)
        if close is not None:
            close()
        with contextlib.suppress(GatewayError):
            self._sftp.close(handle)

    def _finish_ciphertext(self, entry: RemoteFile, partial: Path) -> None:
        if self._keep:
            partial.replace(self._out / entry.name)
        else:
            partial.unlink()
        sync_directory(self._out)
