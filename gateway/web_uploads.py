"""Staff uploads from the console's upload page: the browser encrypts, the gateway stores.

The page encrypts the file in the browser (typage) to the partner's approved keys and
sends only the ciphertext; here it becomes one more way in to the same
:class:`gateway.transfers.Upload` an SFTP upload of ``NAME.age`` and ``blindpost send``
use, so it gets the same checks and audit events: the header and payload checks of a
pre-encrypted file (:mod:`gateway.pre_encrypted`, :mod:`gateway.payload_check`), the
fingerprints the browser encrypted to checked against the approved keys (as
``declare-recipients@blindpost``), the contents the browser read checked against the
partner's agreement (as ``declare-contents@blindpost``), the size limit, and
``file:upload:complete`` or ``file:upload:aborted`` with the reason.

A browser cannot stream one request body over HTTP/1.1 (Chromium sends a
``ReadableStream`` body only over HTTP/2 or QUIC, and the console speaks HTTP/1.1), so
the page sends the ciphertext as numbered parts of at most :data:`PART_LIMIT` bytes, in
order, one at a time, into an upload it opened. Each part streams into the upload as it
arrives; nothing is held beyond the bytes in flight. Any failure ends the whole upload
(aborted and audited, nothing stored): a part is never retried, the browser starts again.

Open uploads live in the console process's memory, bound to the console session that
opened them; one the browser stops feeding for :data:`IDLE` is aborted. Several console
processes behind one address need session affinity for ``/upload/sessions``.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from gateway.actors import Actor
from gateway.data_elements import Contents
from gateway.errors import ConflictError, GatewayError, NotFoundError, PolicyError, UsageError
from gateway.transfers import AGE_SUFFIX, FileEntry, Upload, check_file_name

if TYPE_CHECKING:
    from gateway.app import App

MIB = 1 << 20
# The largest part the page sends: memory in the browser and in flight, against the
# cost of one request per part.
PART_LIMIT = 16 * MIB
# An upload the browser sends nothing to for this long is aborted.
IDLE = timedelta(minutes=10)
# Open uploads per account: a page uploads one file at a time; a few tabs may overlap.
MAX_OPEN = 4


@dataclass(frozen=True)
class Committed:
    """A browser upload stored: the file as the partner sees it."""

    entry: FileEntry
    received: int


class WebUpload:
    """One upload the page is sending parts to."""

    def __init__(self, upload: Upload, *, upload_id: str, session_id: str,
                 account_id: int | None, now: datetime) -> None:
        self.id = upload_id
        self.session_id = session_id
        self.account_id = account_id
        self.upload = upload
        self.next_part = 0
        self.touched = now
        self._busy = threading.Lock()
        self._part_bytes = 0
        # The SHA-256 of the current part as it arrived: the page compares it with what
        # it sent (the whole file's is the store's, over the same bytes).
        self._part_hash = hashlib.sha256()

    def begin_part(self, number: int, length: int | None) -> None:
        """Accept part ``number`` (of ``length`` bytes, when the request says), or end the
        upload saying why."""
        if not self._busy.acquire(blocking=False):
            self._fail(ConflictError("a part of this upload is being received already; "
                                     "parts are sent one at a time"))
        try:
            if number != self.next_part:
                raise UsageError(f"part {number} arrived, but part {self.next_part} is "
                                 "next; parts are sent in order")
            if length is not None and length > PART_LIMIT:
                raise PolicyError(f"part {number} is {length} bytes, over the part limit "
                                  f"of {PART_LIMIT} bytes")
        except GatewayError as exc:
            self._busy.release()
            self._fail(exc)
        self._part_bytes = 0
        self._part_hash = hashlib.sha256()

    def write(self, data: bytes) -> None:
        """The next bytes of the current part."""
        self._part_bytes += len(data)
        if self._part_bytes > PART_LIMIT:
            self._fail(PolicyError(f"part {self.next_part} is over the part limit of "
                                   f"{PART_LIMIT} bytes"))
        # Upload.write aborts the upload itself (audited) before it raises.
        self.upload.write(data)
        self._part_hash.update(data)

    def settle(self) -> None:
        """Wait for the check of every byte of the part (a pre-encrypted file's payload
        check runs beside the writes), so that a refusal answers this part; the upload
        is aborted (audited) before it raises."""
        self.upload.settle()

    def end_part(self, *, now: datetime) -> str:
        """The part arrived whole; return its SHA-256 (hex)."""
        self.next_part += 1
        self.touched = now
        self._busy.release()
        return self._part_hash.hexdigest()

    def part_failed(self, reason: str) -> None:
        """The current part did not arrive whole (the connection ended, or a write was
        refused): the upload ends, audited, if it has not already."""
        self.upload.abort(reason=f"part {self.next_part}: {reason}")
        self._busy.release()

    def _fail(self, error: GatewayError) -> None:
        self.upload.abort(reason=error.diagnostics())
        raise error


class WebUploadService:
    """The open browser uploads of this console process."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._open: dict[str, WebUpload] = {}
        self._lock = threading.Lock()

    def begin(self, actor: Actor, *, session_id: str, partner: str, name: str,
              fingerprints: Sequence[str], contents: Contents) -> WebUpload:
        """Open an upload of ``name`` (stored as ``NAME.age``) for ``partner``: refused,
        audited, before any byte is sent, unless ``fingerprints`` are exactly the
        partner's approved keys and ``contents`` are within its agreement."""
        self.sweep()
        check_file_name(name)
        with self._lock:
            mine = sum(1 for w in self._open.values() if w.account_id == actor.account_id)
        if mine >= MAX_OPEN:
            raise PolicyError(f"you have {mine} uploads open already (at most {MAX_OPEN}); "
                              "let one finish first")
        upload = self._app.transfers.begin_upload(actor, partner=partner,
                                                  name=name + AGE_SUFFIX)
        # Each refusal aborts the upload and records why (file:upload:aborted).
        upload.declare_recipients(list(fingerprints))
        upload.declare_contents(contents)
        opened = WebUpload(upload, upload_id=secrets.token_urlsafe(18), session_id=session_id,
                           account_id=actor.account_id, now=self._app.clock())
        with self._lock:
            self._open[opened.id] = opened
        return opened

    def find(self, upload_id: str, *, session_id: str) -> WebUpload:
        """The open upload ``upload_id`` of this console session."""
        with self._lock:
            found = self._open.get(upload_id)
        # Another session's upload is no more there than an unknown one.
        if found is None or found.session_id != session_id or found.upload.finished:
            raise NotFoundError("no such upload in progress: it was finished, refused, "
                                "cancelled or left idle; start the upload again")
        return found

    def commit(self, upload_id: str, *, session_id: str, parts: int) -> Committed:
        """Store the upload: every part arrived (``parts`` as the browser counts them)."""
        found = self.find(upload_id, session_id=session_id)
        try:
            if parts != found.next_part:
                error = UsageError(f"the browser sent {parts} parts, but {found.next_part} "
                                   "arrived; nothing was stored")
                found.upload.abort(reason=error.diagnostics())
                raise error
            entry = found.upload.commit()
        finally:
            self._forget(found)
        return Committed(entry, found.upload.received)

    def cancel(self, upload_id: str, *, session_id: str) -> None:
        """The page gave up (a local read failed, or the person cancelled)."""
        found = self.find(upload_id, session_id=session_id)
        found.upload.abort(reason="cancelled in the browser; nothing was stored")
        self._forget(found)

    def sweep(self) -> int:
        """Abort the uploads left idle; return how many."""
        cutoff = self._app.clock() - IDLE
        with self._lock:
            idle = [w for w in self._open.values()
                    if w.touched < cutoff or w.upload.finished]
            for stale in idle:
                del self._open[stale.id]
        for stale in idle:
            stale.upload.abort(reason=f"the browser sent nothing for {IDLE.seconds // 60} "
                                      "minutes; nothing was stored")
        return len(idle)

    def _forget(self, upload: WebUpload) -> None:
        with self._lock:
            self._open.pop(upload.id, None)
