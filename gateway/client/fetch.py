"""``blindpost fetch``: download what is new in the inbox, verify it, decrypt it.

Each file is downloaded with pipelined ranged reads and decrypted while it arrives
(in two threads when a core is free) into a hidden, private partial file in the output
folder; the ciphertext is hashed on the way and not written anywhere. Only when the
whole file has been decrypted (every chunk authenticated) and its SHA-256 equals the one
the gateway recorded is the plaintext made durable and renamed to its final name.

An interrupted download resumes from the plaintext it kept: beside the partial file
lies the file's age header (ciphertext, no secret), and age's chunks are sealed
deterministically, so sealing the kept chunks again gives back the ciphertext they came
from, whose hash the rest of the download continues. The gateway counts a resumed read
that reaches the end as the download it completes. (Writing the ciphertext as well, to
resume from it, doubled what a download wrote to the disk.) Armored files, whose chunks
have no fixed offsets, are downloaded from the start each time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from gateway import envelope
from gateway.client import names
from gateway.client.cores import block_bytes, chunk_threads, spare_core
from gateway.client.fetched import FetchedRecord, RemoteFile
from gateway.client.files import OutputWriter, atomic_output, sync_directory
from gateway.client.hashing import Hasher
from gateway.client.progress import Advance, Progress
from gateway.client.sftp import OPEN_READ, SFTPSession
from gateway.errors import GatewayError, NotFoundError, RemoteError, UsageError
from gateway.sftp_extensions import CIPHERTEXT_SHA256, TRANSFER_ID

# At most this many files in one listing: a Blindpost inbox holds far fewer (files
# expire within days), and a gateway that lists more is refused rather than let fill
# the client's memory.
MAX_LISTED = 10_000
# Kept plaintext is read back (to seal it again) in blocks this large.
_BLOCK = 1 << 20
# Sizes of age's payload chunks, plain and sealed.
_CHUNK = 64 << 10
_SEALED = _CHUNK + 16
_MISMATCH = ("the file's SHA-256 differs from the one the gateway recorded; nothing was "
             "kept, the next run downloads it again")
# An age header is read from the gateway in pieces this large until it is complete.
_HEADER_PIECE = 16 << 10


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
    # Not fetched because the gateway says the file is gone; ``error`` says why.
    gone: bool = False


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


class _Readable(Protocol):
    """Where the decryptor reads the age header: the gateway, or the kept copy."""

    def read(self, size: int = -1, /) -> bytes: ...


class _HashMismatchError(RemoteError):
    """What was downloaded (or kept) is not the file the gateway recorded."""


class _Ciphertext:
    """The ciphertext from the gateway as the decryptor reads it, hashed on the way.

    The blocks are views of what the SFTP session received; the decryptor copies each
    piece once, into its batch (:meth:`readinto`), and nothing else copies them.
    """

    def __init__(self, remote: Iterator[memoryview], hasher: Hasher,
                 advance: Advance) -> None:
        self._remote = remote
        self._hasher = hasher
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

    def readinto(self, view: memoryview, /) -> int:
        """Copy what is there (up to ``len(view)``) into ``view``."""
        if self._offset == len(self._buffer):
            self._buffer, self._offset = self._next(), 0
        count = min(len(view), len(self._buffer) - self._offset)
        view[:count] = self._buffer[self._offset:self._offset + count]
        self._offset += count
        return count

    def _next(self) -> memoryview:
        data = next(self._remote, memoryview(b""))
        self._hasher.add(data)
        self._advance(len(data))
        return data


class _RemoteHeader:
    """The start of a file on the gateway, read in small pieces (the header parser asks
    for 16 KiB at a time), remembered so that the header can be hashed and kept."""

    def __init__(self, sftp: SFTPSession, handle: bytes, size: int) -> None:
        self._sftp, self._handle, self._size = sftp, handle, size
        self.read_so_far = bytearray()

    def read(self, size: int = -1, /) -> bytes:
        start = len(self.read_so_far)
        end = self._size if size < 0 else min(self._size, start + min(size, _HEADER_PIECE))
        piece = b"".join(self._sftp.read_stream(self._handle, start, end)) if end > start \
            else b""
        self.read_so_far += piece
        return piece


def plaintext_size(size: int, payload_start: int) -> int | None:
    """The plaintext size of a binary age file of ``size`` bytes whose first chunk
    starts at ``payload_start``; ``None`` if no such file can have that size."""
    return envelope.plain_size(size - payload_start)


@dataclass
class _Resume:
    """Where a download starts: the chunk, the ciphertext offset, the hash so far, the
    plaintext kept, and whether that is all of it."""

    chunk: int
    offset: int
    hash: hashlib._Hash
    kept: int
    complete: bool


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

    def partial_path(self, entry: RemoteFile, suffix: str = ".part") -> Path:
        """The hidden partial file of ``entry`` (plaintext, 0600), which must be
        :func:`checked`; with ``suffix=".head"``, its kept age header."""
        ending = f".{entry.transfer_id}{suffix}"
        # Cut the name so the whole stays within NAME_MAX; the id keeps it unique.
        room = names.MAX_NAME_BYTES - 1 - len(ending)
        name = entry.name.encode("utf-8")[:room].decode("utf-8", "ignore")
        return self._out / f".{name}{ending}"

    def complete_locally(self, entry: RemoteFile) -> bool:
        """Whether every chunk of ``entry`` was decrypted into its partial file (its
        last byte arrived just before a stop), so the gateway is not needed."""
        head, partial = self.partial_path(entry, ".head"), self.partial_path(entry)
        if not (head.exists() and partial.exists()):
            return False
        plain = plaintext_size(entry.size, head.stat().st_size)
        return plain is not None and partial.stat().st_size == plain

    def gone(self, entry: RemoteFile) -> FetchResult | None:
        """The result for a begun download no longer listed: why the gateway says it is
        gone (expired, download limit reached, withdrawn, purged); None if it is there."""
        try:
            self._sftp.stat("/" + checked(entry).name)
        except NotFoundError as exc:
            self._record.forget_begun(entry)
            return FetchResult(entry.name, entry.transfer_id, size=entry.size,
                               sha256=entry.sha256, error=exc.diagnostics(), gone=True)
        return None

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
        head_path = self.partial_path(entry, ".head")
        handle: bytes | None = None
        try:
            if self.complete_locally(entry):
                source: _Readable = _KeptHeader(head_path.read_bytes())
            else:
                handle = self._sftp.open("/" + entry.name, OPEN_READ)
                source = (_KeptHeader(head_path.read_bytes()) if head_path.exists()
                          else _RemoteHeader(self._sftp, handle, entry.size))
            self._decrypt(entry, handle, source, target, result)
        except envelope.NoIdentityMatchError as exc:
            raise UsageError("none of the identities (-i) opens this file: "
                             f"{exc.diagnostics()}") from None
        except envelope.DecryptionError:
            # The file is damaged (or the kept part is): start from scratch next time.
            self._discard(entry)
            raise
        finally:
            if handle is not None:
                with contextlib.suppress(GatewayError):
                    self._sftp.close(handle)

    def _decrypt(self, entry: RemoteFile, handle: bytes | None,
                 source: _Readable, target: Path,
                 result: FetchResult) -> None:
        with envelope.Decryptor(source, self._identities,
                                threads=chunk_threads()) as decryptor:
            resume = self._resume_point(entry, decryptor, source)
            result.resumed_at = min(resume.offset, entry.size) if resume.kept else 0
            partial = self.partial_path(entry)
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.ftruncate(fd, resume.kept)
                # Appends go to the end anyway; the writer counts from here.
                os.lseek(fd, resume.kept, os.SEEK_SET)
                if not resume.complete:
                    if handle is None:
                        raise RemoteError("the gateway no longer lists the file")
                    self._receive(entry, handle, decryptor, resume, fd)
                elif resume.hash.hexdigest() != entry.sha256:
                    raise _HashMismatchError(_MISMATCH)
                # Durable before it is renamed and recorded as fetched.
                os.fsync(fd)
            except _HashMismatchError:
                self._discard(entry)
                raise
            finally:
                os.close(fd)
            if self._keep and not decryptor.closed:
                self._write_ciphertext(entry, decryptor, partial)
        partial.replace(target)
        self.partial_path(entry, ".head").unlink(missing_ok=True)
        sync_directory(self._out)

    def _resume_point(self, entry: RemoteFile, decryptor: envelope.Decryptor,
                      source: _Readable) -> _Resume:
        """Where to go on: after the chunks kept from an earlier run (hashed again by
        sealing them), or at the start."""
        start = decryptor.payload_start
        head_path = self.partial_path(entry, ".head")
        if start is None:
            # Armored: no chunk offsets; the whole file again, its hash from scratch.
            decryptor.close()
            return _Resume(0, 0, hashlib.sha256(), 0, complete=False)
        if isinstance(source, _RemoteHeader):
            # A first run (or one after a discard): whatever lies around is stale.
            self._discard(entry)
            head = bytes(source.read_so_far[:start])
            fd = os.open(head_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as header_file:
                header_file.write(head)
        else:
            head = head_path.read_bytes()[:start]
        plain = plaintext_size(entry.size, start)
        partial = self.partial_path(entry)
        have = partial.stat().st_size if partial.exists() else 0
        digest = hashlib.sha256(head)
        if plain is None or have > plain:
            return _Resume(0, start, digest, 0, complete=False)
        complete = have == plain
        chunks = max(1, -(-plain // _CHUNK)) if complete else min(
            have // _CHUNK, max(0, -(-(entry.size - start) // _SEALED) - 1))
        kept = have if complete else chunks * _CHUNK
        self._hash_kept(partial, kept, decryptor, digest, final=complete)
        return _Resume(chunks, start + chunks * _SEALED, digest, kept, complete)

    @staticmethod
    def _hash_kept(partial: Path, size: int, decryptor: envelope.Decryptor,
                   digest: hashlib._Hash, *, final: bool) -> None:
        if not size:
            # Nothing kept; an empty file is still one (empty, final) chunk.
            for sealed in decryptor.reseal(memoryview(b""), first=0, final=final):
                digest.update(sealed)
            return
        buffer = memoryview(bytearray(_BLOCK))
        with partial.open("rb") as kept:
            done = 0
            while True:
                count = kept.readinto(buffer[:min(_BLOCK, size - done)]) if done < size else 0
                last = done + count >= size
                for sealed in decryptor.reseal(buffer[:count], first=done // _CHUNK,
                                               final=final and last):
                    digest.update(sealed)
                done += count
                if last:
                    return

    def _receive(self, entry: RemoteFile, handle: bytes, decryptor: envelope.Decryptor,
                 resume: _Resume, fd: int) -> None:
        """Download from the resume point, decrypt into the partial file, check the hash."""
        with contextlib.ExitStack() as stack:
            copy = None
            if decryptor.closed and self._keep:
                # Armored, so never resumed: its ciphertext is kept as it arrives.
                copy = stack.enter_context(atomic_output(self._out / entry.name))
            self._decrypt_remote(entry, handle, decryptor, resume, fd, copy)

    def _decrypt_remote(self, entry: RemoteFile, handle: bytes,
                        decryptor: envelope.Decryptor, resume: _Resume, fd: int,
                        copy: OutputWriter | None) -> None:
        remote = self._sftp.read_stream(handle, resume.offset, entry.size)
        hasher = Hasher(resume.hash, copy, threaded=spare_core())
        # The plaintext is flushed before it is recorded as fetched; its writeback starts
        # while the rest downloads, not at the end.
        sink = OutputWriter(fd, early_writeback=True)
        threads = chunk_threads()
        try:
            with self._progress.file(entry.name, entry.size, done=resume.offset) as advance:
                source = _Ciphertext(remote, hasher, advance)
                if decryptor.closed:  # Armored: the whole file, through a new decryptor.
                    decryptor = envelope.Decryptor(source, self._identities, threads=threads)
                else:
                    decryptor.resume(source, chunk=resume.chunk)
                # Small blocks: each is written while still in the cache.
                view = memoryview(bytearray(block_bytes(threads)))
                while count := decryptor.readinto(view):
                    sink.write(view[:count])
        finally:
            hasher.stop()
            remote.close()
        if hasher.finish() != entry.sha256:
            raise _HashMismatchError(_MISMATCH)

    def _write_ciphertext(self, entry: RemoteFile, decryptor: envelope.Decryptor,
                          partial: Path) -> None:
        """NAME.age next to NAME (--keep-ciphertext), sealed again from the plaintext."""
        head = self.partial_path(entry, ".head")
        with atomic_output(self._out / entry.name) as sink:
            sink.write(head.read_bytes())
            size = partial.stat().st_size
            buffer = memoryview(bytearray(_BLOCK))
            with partial.open("rb") as plain:
                done = 0
                while True:
                    count = plain.readinto(buffer)
                    for sealed in decryptor.reseal(buffer[:count], first=done // _CHUNK,
                                                   final=done + count >= size):
                        sink.write(sealed)
                    done += count
                    if done >= size:
                        return

    def _discard(self, entry: RemoteFile) -> None:
        for suffix in (".part", ".head"):
            self.partial_path(entry, suffix).unlink(missing_ok=True)


class _KeptHeader:
    """The age header kept from an earlier run, as the decryptor reads it."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._offset = 0

    def read(self, size: int = -1, /) -> bytes:
        end = len(self._data) if size < 0 else self._offset + size
        piece = self._data[self._offset:end].tobytes()
        self._offset += len(piece)
        return piece
