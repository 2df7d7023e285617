"""S3-compatible object store (AWS S3, MinIO, Ceph RGW, …) through boto3.

Layout under the bucket's key prefix::

    PREFIX/objects/abcdef…   committed objects, named by a random 32-hex-digit id

An object being written is an S3 multipart upload to its final key, started when the
object is created and kept invisible by S3 until ``CompleteMultipartUpload``: that call
is the atomic commit. Starting the upload at once (rather than at the first full part)
costs a request for small files, but means that every uncommitted object exists in the
bucket, where ``delete`` and the sweep can find it.

S3 takes parts of at least 5 MiB (but the last), so an upload must gather a part in
memory before sending it. The buffers it gathers in are shared by every upload of the
process (:class:`PartBuffers`, ``s3_part_buffers`` of ``s3_part_size_mib`` each): memory
stays flat however many sessions upload at once. An upload takes a buffer when it has
bytes to gather and gives it back after each part it sends, so the buffers go round the
uploads a part at a time, first come first served; an upload that finds none free waits
(its client is held back by SSH flow control) for at most :data:`PART_WAIT_SECONDS`.
An upload waits in :meth:`S3PendingObject.ready`, called between two writes, where it
holds no write in hand: ``ready`` sends a part that the next write might overflow
(parts are then a little shorter than ``s3_part_size_mib``), so that a part buffer is
taken before a write and a write never waits half-way for the next one. (Not with
parts of S3's smallest size, 5 MiB: a part cannot be sent shorter.)

Downloads stream: an open object's reads in order continue one GET (started at the first
read), so an SFTP client's 255 KiB reads neither cost a request each nor hold a window of
the object in memory per download. Multipart uploads abandoned by
a crash are aborted by :meth:`S3Store.sweep_partials` and by :meth:`S3Store.delete`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from gateway.config import MIN_PART_MIB
from gateway.errors import NotFoundError, StorageError
from gateway.store.base import READY_WRITE, ObjectInfo, StoredObject

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

log = logging.getLogger(__name__)

_OBJECT_ID = re.compile(r"[0-9a-f]{32}")
# How long an upload waits for a part buffer before it is refused as "busy": long enough
# for every buffer to go round several times on a loaded node.
PART_WAIT_SECONDS = 300.0
_MISSING = ("404", "NoSuchKey", "NotFound", "NoSuchUpload")
# S3's smallest part but the last.
MIN_PART = MIN_PART_MIB << 20


def _error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def _storage_error(action: str, exc: Exception) -> StorageError:
    """One line naming the action and S3's error code (or the connection problem)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return StorageError(f"{action}: S3 error {error.get('Code', '?')}: "
                            f"{error.get('Message', '')}".rstrip(": "))
    return StorageError(f"{action}: {exc}")


class _PartBody(io.RawIOBase):
    """A read-only file over the start of a part buffer, for the last, short part.

    botocore takes bytes, a bytearray or a file as a body: slicing the buffer would copy
    up to a part per committing upload, outside the bounded buffers.
    """

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view
        self._at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), len(self._view) - self._at)
        buffer[:count] = self._view[self._at:self._at + count]
        self._at += count
        return count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: len(self._view)}[whence]
        self._at = max(0, base + offset)
        return self._at

    def tell(self) -> int:
        return self._at


class PartBuffers:
    """At most ``count`` part buffers of ``part_size`` bytes, shared by the uploads of a
    process and handed out in the order they were asked for.

    Buffers are made when first needed and then kept (fixed-size ``bytearray``s filled in
    place), so the process's memory for parts never grows past ``count * part_size`` and
    does not fragment.
    """

    def __init__(self, *, part_size: int, count: int,
                 wait_seconds: float = PART_WAIT_SECONDS) -> None:
        self.part_size = part_size
        self.count = count
        self._wait_seconds = wait_seconds
        self._free: list[bytearray] = []
        self._made = 0
        self._waiting: list[object] = []
        self._changed = threading.Condition()

    @property
    def in_use(self) -> int:
        with self._changed:
            return self._made - len(self._free)

    @property
    def waiting(self) -> int:
        with self._changed:
            return len(self._waiting)

    def take(self, before_waiting: Callable[[], None] | None = None) -> bytearray:
        """A buffer of its own for the caller; waits its turn, then raises
        :class:`StorageError` if none came free in time. ``before_waiting`` is called
        first, outside the lock, if the caller looks set to wait."""
        if before_waiting is not None:
            with self._changed:
                free = not self._waiting and self._available()
            if not free:
                before_waiting()
        turn = object()
        deadline = time.monotonic() + self._wait_seconds
        with self._changed:
            self._waiting.append(turn)
            try:
                while not (self._waiting[0] is turn and self._available()):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise StorageError(
                            f"the server is busy: all {self.count} S3 part buffers of this "
                            f"process were in use for {self._wait_seconds:.0f} s; try again "
                            "later (an admin can raise s3_part_buffers)")
                    self._changed.wait(left)
                if self._free:
                    return self._free.pop()
                self._made += 1
                return bytearray(self.part_size)
            finally:
                self._waiting.remove(turn)
                # The next in line may now be first, or a buffer may still be free.
                self._changed.notify_all()

    def give_back(self, buffer: bytearray) -> None:
        with self._changed:
            self._free.append(buffer)
            self._changed.notify_all()

    def _available(self) -> bool:
        return bool(self._free) or self._made < self.count


class S3PendingObject:
    """An object being written as a multipart upload; see :class:`gateway.store.PendingObject`."""

    def __init__(self, store: S3Store, object_id: str) -> None:
        self._store = store
        self._object_id = object_id
        self._key = store.key(object_id)
        self._hash = hashlib.sha256()
        # A shared part buffer, held only while it gathers this object's next part.
        self._buffer: bytearray | None = None
        self._filled = 0
        self._size = 0
        self._parts: list[dict[str, Any]] = []
        self._done = False
        try:
            self._upload_id = store.client.create_multipart_upload(
                Bucket=store.bucket, Key=self._key, **store.sse)["UploadId"]
        except (BotoCoreError, ClientError) as exc:
            raise _storage_error("cannot create object", exc) from exc

    @property
    def object_id(self) -> str:
        return self._object_id

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes | memoryview) -> int:
        if self._done:
            raise StorageError("write to an object that was already committed or aborted")
        self._hash.update(data)
        self._size += len(data)
        view = memoryview(data).cast("B")
        try:
            while view:
                view = self._gather(view)
        except StorageError:
            self.abort()
            raise
        return len(data)

    def ready(self, before_waiting: Callable[[], None] | None = None) -> None:
        if self._done:
            return  # Nothing to wait for: a write will say why it fails.
        parts = self._store.parts
        try:
            if (self._buffer is not None and self._filled >= MIN_PART
                    and parts.part_size - self._filled < READY_WRITE):
                # The next write might not fit: send the part now rather than fill it
                # half-way through that write and wait for a buffer with the rest in hand.
                if before_waiting is not None:
                    before_waiting()
                    before_waiting = None
                self._send_filled(self._buffer)
                self._release()
            if self._buffer is None:
                self._buffer = parts.take(before_waiting)
        except StorageError:
            self.abort()
            raise

    def _send_filled(self, buffer: bytearray) -> None:
        """Send the filled start of ``buffer`` as a part, without copying it.

        botocore sends a bytearray as it is, and one shortened by less than half keeps
        its memory (CPython only moves its end), so the buffer goes back to its full
        length afterwards without a new allocation; a view or file body would be
        copied in 16 KiB pieces.
        """
        size = len(buffer)
        del buffer[self._filled:]
        try:
            self._send_part(buffer)
        finally:
            buffer.extend(bytes(size - len(buffer)))

    def _gather(self, view: memoryview) -> memoryview:
        """Copy what fits of ``view`` into the part buffer, send the part if it is full,
        and return the rest."""
        parts = self._store.parts
        if self._buffer is None:
            self._buffer = parts.take()
        take = min(len(view), parts.part_size - self._filled)
        self._buffer[self._filled:self._filled + take] = view[:take]
        self._filled += take
        if self._filled == parts.part_size:
            # The whole buffer is the part: botocore sends it without a copy.
            self._send_part(self._buffer)
            self._release()
        return view[take:]

    def _release(self) -> None:
        """Give the part buffer back to the other uploads (emptied)."""
        if self._buffer is not None:
            self._store.parts.give_back(self._buffer)
            self._buffer, self._filled = None, 0

    def _send_part(self, body: bytearray | _PartBody) -> None:
        client, number = self._store.client, len(self._parts) + 1
        # botocore accepts a bytearray body (its stubs say bytes): no copy of the part.
        payload: Any = body
        try:
            etag = client.upload_part(Bucket=self._store.bucket, Key=self._key,
                                      UploadId=self._upload_id, PartNumber=number,
                                      Body=payload)["ETag"]
        except (BotoCoreError, ClientError) as exc:
            raise _storage_error("cannot write object", exc) from exc
        self._parts.append({"PartNumber": number, "ETag": etag})

    def commit(self) -> StoredObject:
        if self._done:
            raise StorageError("object was already committed or aborted")
        store = self._store
        try:
            if self._filled or not self._parts:
                with memoryview(self._buffer or b"")[:self._filled] as last:
                    self._send_part(_PartBody(last))
            self._release()
            store.client.complete_multipart_upload(
                Bucket=store.bucket, Key=self._key, UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts})  # type: ignore[typeddict-item]
        except (BotoCoreError, ClientError, StorageError) as exc:
            self.abort()
            if isinstance(exc, StorageError):
                raise
            raise _storage_error("cannot commit object", exc) from exc
        self._done = True
        return StoredObject(self._object_id, self._size, self._hash.hexdigest())

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._release()
        # A failure here leaves an invisible multipart upload, which the sweep aborts.
        self._store.abort_upload(self._key, self._upload_id)


class S3ObjectReader:
    """Reads of one committed object, streamed: reads in order (what SFTP clients send)
    continue one GET from where the last read ended, so an open download holds one read's
    bytes, not a window; a read anywhere else starts a new GET there."""

    def __init__(self, store: S3Store, key: str) -> None:
        self._store = store
        self._key = key
        try:
            head = store.client.head_object(Bucket=store.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                raise NotFoundError("object not found in the store") from exc
            raise _storage_error("cannot open object", exc) from exc
        except BotoCoreError as exc:
            raise _storage_error("cannot open object", exc) from exc
        self._size = int(head["ContentLength"])
        self._etag = str(head["ETag"])
        self._stream: Any = None
        self._position = 0

    @property
    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise StorageError("negative offset or length")
        end = min(offset + length, self._size)
        if end <= offset:
            return b""
        try:
            return self._read(offset, end - offset)
        except (BotoCoreError, ClientError, OSError):
            # A stream the server closed while the client paused: one fresh GET from here.
            self.close()
            try:
                return self._read(offset, end - offset)
            except (BotoCoreError, ClientError, OSError) as exc:
                raise _storage_error("cannot read object", exc) from exc

    def _read(self, offset: int, count: int) -> bytes:
        if self._stream is None or offset != self._position:
            self._open(offset)
        data = bytes(self._stream.read(count))
        if len(data) != count:
            # Retried like a broken connection (the stream ended early).
            raise OSError(f"{len(data)} of {count} bytes arrived")
        self._position = offset + count
        return data

    def _open(self, offset: int) -> None:
        self.close()
        store = self._store
        # If-Match: bytes from another version of the key would corrupt the file.
        self._stream = store.client.get_object(Bucket=store.bucket, Key=self._key,
                                               Range=f"bytes={offset}-",
                                               IfMatch=self._etag)["Body"]
        self._position = offset

    def close(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.close()


class S3Store:
    """An :class:`~gateway.store.ObjectStore` in an S3 bucket under a key prefix."""

    def __init__(self, client: S3Client, *, bucket: str, prefix: str = "",
                 part_size: int = 8 << 20, part_buffers: int = 8,
                 sse: Mapping[str, str] | None = None) -> None:
        self.client = client
        self.bucket = bucket
        self.objects_prefix = f"{prefix}objects/"
        self.part_size = part_size
        self.parts = PartBuffers(part_size=part_size, count=part_buffers)
        # ServerSideEncryption / SSEKMSKeyId, passed on every object write.
        self.sse: dict[str, Any] = dict(sse or {})

    def key(self, object_id: str) -> str:
        """The key of an object; the id is checked, so no key comes from input."""
        if not _OBJECT_ID.fullmatch(object_id):
            raise NotFoundError("invalid object id")
        return self.objects_prefix + object_id

    def create(self) -> S3PendingObject:
        return S3PendingObject(self, secrets.token_hex(16))

    def open(self, object_id: str) -> S3ObjectReader:
        return S3ObjectReader(self, self.key(object_id))

    def delete(self, object_id: str) -> bool:
        """Delete the committed object and abort any upload still writing it."""
        key = self.key(object_id)
        try:
            try:
                self.client.head_object(Bucket=self.bucket, Key=key)
                existed = True
            except ClientError as exc:
                if _error_code(exc) not in _MISSING:
                    raise
                existed = False
            if existed:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            for upload in self._uploads(key):
                if upload["Key"] == key:
                    self.abort_upload(key, upload["UploadId"])
                    existed = True
        except (BotoCoreError, ClientError) as exc:
            raise _storage_error("cannot delete object", exc) from exc
        return existed

    def list_objects(self) -> Iterator[ObjectInfo]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.objects_prefix)
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    object_id = item["Key"][len(self.objects_prefix):]
                    if _OBJECT_ID.fullmatch(object_id):
                        yield ObjectInfo(object_id, int(item["Size"]), item["LastModified"])
        except (BotoCoreError, ClientError) as exc:
            raise _storage_error("cannot list objects", exc) from exc

    def sweep_partials(self, *, older_than: datetime) -> list[str]:
        """Abort multipart uploads whose last part (or start) is older than ``older_than``."""
        removed = []
        try:
            for upload in list(self._uploads(self.objects_prefix)):
                object_id = upload["Key"][len(self.objects_prefix):]
                if self._last_written(upload) < older_than:
                    self.abort_upload(upload["Key"], upload["UploadId"])
                    removed.append(object_id)
        except (BotoCoreError, ClientError) as exc:
            raise _storage_error("cannot sweep partial uploads", exc) from exc
        return sorted(removed)

    def _uploads(self, prefix: str) -> Iterator[dict[str, Any]]:
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            yield from page.get("Uploads", [])  # type: ignore[misc]

    def _last_written(self, upload: Mapping[str, Any]) -> datetime:
        """When an upload last received a part: a long upload is alive while parts arrive."""
        latest: datetime = upload["Initiated"]
        pages = self.client.get_paginator("list_parts").paginate(
            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        for page in pages:
            for part in page.get("Parts", []):
                latest = max(latest, part["LastModified"])
        return latest

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort one multipart upload; a failure is logged and left to the next sweep."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if _error_code(exc) not in _MISSING:
                log.warning("could not abort an S3 upload: %s", _storage_error("abort", exc))
        except BotoCoreError as exc:
            log.warning("could not abort an S3 upload: %s", exc)
