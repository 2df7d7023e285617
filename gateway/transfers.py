"""Transfers: staff upload files for a partner, the partner downloads them.

Ingest is the heart of the promise: plaintext written by staff goes straight into a
streaming age encryptor whose recipients are the partner's approved keys, and only the
ciphertext reaches the store. A file that already is age ciphertext (``*.age`` with a
valid header that fits the partner's keys, see :mod:`gateway.pre_encrypted`, and a payload
that looks like ciphertext) is stored as it is. Nothing is visible until
:meth:`Upload.commit`, which writes the object, the transfer row and the audit event; an
aborted upload leaves nothing.
"""

from __future__ import annotations

import io
import logging
import time
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import rfc8785
from sqlalchemy import ColumnElement, case, func, or_, select, update
from sqlalchemy.orm import Session

from gateway import envelope, pending_objects, served
from gateway.actors import Actor
from gateway.agreement_terms import Terms, elements_of
from gateway.audit import AuditTag
from gateway.authz import Permission
from gateway.data_elements import OPAQUE, Contents, ContentScan
from gateway.db.models import (
    Account,
    KeyState,
    Partner,
    PartnerKey,
    Role,
    Transfer,
    TransferState,
)
from gateway.errors import (
    AuthenticationError,
    ConflictError,
    GatewayError,
    GoneError,
    NotFoundError,
    PolicyError,
    UsageError,
)
from gateway.integrity import IntegrityViolationError
from gateway.partner_keys import approved_keys, receiving_keys
from gateway.partners import PartnerInfo, get_partner, partner_info
from gateway.payload_check import CheckThread, PayloadCheck, Piece, header_end
from gateway.pre_encrypted import (
    ENCRYPTED_HERE,
    check_declared,
    check_header,
    pre_encrypted_details,
)
from gateway.store import ObjectReader, PendingObject

if TYPE_CHECKING:
    from gateway.app import App

log = logging.getLogger(__name__)


def canonical_json(value: object) -> str:
    return rfc8785.dumps(value).decode("utf-8")  # type: ignore[arg-type]  # Plain values.

AGE_SUFFIX = ".age"
AGE_MAGIC = b"age-encryption.org/v1\n"
ARMOR_MAGIC = b"-----BEGIN AGE ENCRYPTED FILE-----"
MAX_NAME_BYTES = 255
# A pre-encrypted file's header must be complete within this many bytes (a few hundred
# post-quantum stanzas); past it the upload is refused as not an age file.
MAX_HEADER_BYTES = 1 << 20
ARMORED_HEADER_PREFIX = 1 << 16
MIB = 1 << 20
# Sealed chunks an upload hands its object at once: one (64 KiB). The batch is held for
# the upload's life, by every upload a server has open, also those queued for an S3 part
# buffer; a batch of four (about one 255 KiB SFTP write) cost 192 KiB more per upload
# and was not measurably faster, the object taking a chunk as cheaply as four (a copy
# into the part buffer, or a write to the file). The encryptor's default of 16 is 1 MiB.
UPLOAD_BATCH_CHUNKS = 1
_INVISIBLE_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn")


@dataclass(frozen=True)
class FileEntry:
    """A stored file's metadata (never its contents), as listings and reports show it."""

    id: str
    partner: str
    name: str
    size: int
    sha256: str
    created_at: datetime
    expires_at: datetime
    downloads: int
    max_downloads: int | None
    state: TransferState
    uploaded_by: str


@dataclass(frozen=True)
class FileFilter:
    """Which files an operator's listing shows; every field that is set must match."""

    partner: str | None = None
    state: TransferState | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class WaitingFiles:
    """What waits in one partner's inbox."""

    partner: str
    files: int
    bytes: int
    expiring_soon: int


@dataclass(frozen=True)
class UploadKey:
    """A recipient key a plaintext upload is encrypted to, as its audit event names it."""

    id: int
    kind: str
    fingerprint: str
    recipient: envelope.Recipient


def _entry(row: Transfer) -> FileEntry:
    return FileEntry(row.id, row.partner.slug, row.name, row.size, row.sha256, row.created_at,
                     row.expires_at, row.downloads, row.max_downloads, row.state,
                     row.uploader.username)


def check_file_name(name: str) -> str:
    """Return ``name`` if it may name a file in an inbox, else raise :class:`UsageError`."""
    if not name or name in (".", "..") or name.startswith("."):
        raise UsageError("invalid file name: empty, '.', '..' or hidden names are not allowed")
    if any(ch in name for ch in "/\\"):
        raise UsageError("invalid file name: no slashes or backslashes")
    if any(unicodedata.category(ch) in _INVISIBLE_CATEGORIES for ch in name):
        # Control and format characters (e.g. U+202E, which can make "exe.csv" read as
        # "vsc.exe") would let a name look like something it is not.
        raise UsageError("invalid file name: no control, format or unassigned characters")
    # Lone surrogates (undecodable bytes) are category Cs and were refused above.
    if len(name.encode("utf-8")) + len(AGE_SUFFIX) > MAX_NAME_BYTES:
        raise UsageError(f"invalid file name: longer than {MAX_NAME_BYTES - len(AGE_SUFFIX)} bytes")
    return name


def _available(now: datetime) -> list[ColumnElement[bool]]:
    return [Transfer.state == TransferState.AVAILABLE, Transfer.expires_at > now,
            or_(Transfer.max_downloads.is_(None), Transfer.downloads < Transfer.max_downloads)]


def limit_reached(limit: int) -> str:
    return f"its download limit was reached ({limit} download{'s' if limit != 1 else ''})"


def gone_reason(row: Transfer, *, now: datetime) -> str:
    """Why a stored file can no longer be downloaded, in the words partners are told."""
    if row.state is TransferState.WITHDRAWN:
        return "it was withdrawn; ask the sender if it should be sent again"
    if row.state is TransferState.SUPERSEDED:
        return "a newer upload of the same name replaced it"
    if row.max_downloads is not None and row.downloads >= row.max_downloads:
        return limit_reached(row.max_downloads)
    if row.expires_at <= now:
        return (f"it expired at {row.expires_at:%Y-%m-%d %H:%M} UTC (files are kept "
                "for the partner's retention period); ask the sender to send it again")
    if row.state is TransferState.PURGED:
        return ("the registry purged it before it expired (the partner was disabled, its "
                "key revoked, or the file removed); ask the registry")
    return "it cannot be downloaded now"


def _agrees(head: bytes, magic: bytes) -> bool:
    """Whether ``head`` and ``magic`` are equal over their common length."""
    common = min(len(head), len(magic))
    return head[:common] == magic[:common]


def _header_complete(head: bytes, armored: bool) -> bool:
    """Whether ``head`` holds a whole header (binary: up to the MAC line's newline)."""
    if armored:
        # Armored headers are inside base64; judge once a generous prefix has arrived.
        return len(head) >= ARMORED_HEADER_PREFIX
    return header_end(head) is not None


def _immutable(data: bytes | memoryview) -> bool:
    """Whether ``data`` is bytes, or a read-only view of bytes (no one can change it)."""
    return isinstance(data, bytes) or (data.readonly and isinstance(data.obj, bytes))


class _PassThrough:
    """Stores an uploaded age file as it is, after checking its header is well formed and
    fits the partner (:mod:`gateway.pre_encrypted`), and that its payload looks like
    ciphertext (:mod:`gateway.payload_check`, on a thread of its own beside the writes).

    Bytes reach the pending object only once the check has cleared them (the check's
    thread writes them there), so a refused upload never wrote an unchecked byte
    anywhere, not even to be deleted.
    """

    # Pieces go to the check thread in batches of this many bytes, tested as one: each of
    # the check's numpy passes gives the GIL up and takes it back once, and each taking
    # back can make the session's thread wait, so the fewer and longer they are, the less
    # either waits (docs/security.md has the figures of 1 and 4 MiB batches). The price is
    # memory: the batch gathered, the one checked, and two batch-sized work buffers.
    BATCH = 4 * 1024 * 1024
    # The first batch goes sooner, so that a file that is plaintext from its start (the
    # common mistake) is refused at a write, not after a whole batch or at close.
    FIRST_BATCH = 64 * 1024

    def __init__(self, sink: PendingObject, approved: Sequence[envelope.Recipient]) -> None:
        self._sink = sink
        self._approved = approved
        self._head = bytearray()
        # Set once the header has been checked; then every byte goes through it.
        self._payload: CheckThread | None = None
        self.header: envelope.HeaderInfo | None = None
        self._batch: list[Piece] = []
        self._batch_size = 0
        self._handed = False

    def write(self, data: bytes | memoryview) -> None:
        if self._payload is not None:
            self._pass(data)
            return
        self._head += data
        self._check_header(final=False)

    def close(self) -> None:
        if self._payload is None:
            self._check_header(final=True)
        assert self._payload is not None
        self._hand_over()
        self._payload.finish()

    def settle(self) -> None:
        """Wait until every byte written so far is checked, and what was cleared stored;
        raise the check's refusal if it found one."""
        if self._payload is None:
            return
        self._hand_over()
        self._payload.settle()

    def cancel(self) -> None:
        """The upload is abandoned: stop the check thread (it no longer writes to the
        pending object once this returns)."""
        if self._payload is not None:
            self._payload.cancel()

    def _pass(self, data: bytes | memoryview) -> None:
        assert self._payload is not None
        self._payload.raise_refusal()
        # The check reads bytes as they were written: writers may reuse their buffers, so
        # a piece is copied unless nothing can change it (a view of an SFTP request).
        piece = data if _immutable(data) else bytes(data)
        self._batch.append(piece)
        self._batch_size += len(piece)
        if self._batch_size >= (self.BATCH if self._handed else
                                min(self.BATCH, self.FIRST_BATCH)):
            self._hand_over()

    def _hand_over(self) -> None:
        assert self._payload is not None
        if self._batch:
            self._payload.feed(self._batch)
            self._batch, self._batch_size, self._handed = [], 0, True

    def _check_header(self, *, final: bool) -> None:
        head = bytes(self._head)
        armored = _agrees(head, ARMOR_MAGIC)
        if not (armored or _agrees(head, AGE_MAGIC)):
            raise UsageError("a *.age upload must be an age-encrypted file; this one is not")
        if not final and len(head) < MAX_HEADER_BYTES and not _header_complete(head, armored):
            return
        try:
            header = envelope.inspect(io.BytesIO(head))
        except envelope.EnvelopeError as exc:
            raise UsageError("a *.age upload must be an age-encrypted file: "
                             f"{exc.diagnostics()}") from exc
        check_header(header, self._approved)
        self.header = header
        self._head.clear()
        self._payload = CheckThread(PayloadCheck(armored=armored), store=self._sink.write)
        self._pass(head)


class Upload:
    """A file being uploaded: write bytes in order, then :meth:`commit` or :meth:`abort`."""

    def __init__(self, app: App, *, actor: Actor, partner: PartnerInfo, name: str,
                 keys: Sequence[UploadKey], terms: Terms | None = None) -> None:
        self._app = app
        self._actor = actor
        self._partner_id = partner.id
        self._partner_slug = partner.slug
        self._started = time.monotonic()
        self.plain_name = name
        self.stored_name = name if name.endswith(AGE_SUFFIX) else name + AGE_SUFFIX
        self.received = 0
        self._limit = app.settings.max_upload_mib * MIB
        self._keys = tuple(keys)
        self._key_ids = [key.id for key in keys]
        self._recipients = [key.recipient for key in keys]
        self._declared: tuple[str, ...] | None = None
        # The partner's agreement when the upload began (None: it has none), the scan of
        # a plaintext upload's header and records, and what a sender declared of a
        # pre-encrypted one (gateway.data_elements; no value is kept).
        self._terms = terms
        self._scan = None if self.pre_encrypted else ContentScan()
        self._header_checked = False
        self._declared_contents: Contents | None = None
        self.contents: Contents | None = None
        self._object = app.store.create()
        self._finished = False
        try:
            pending_objects.note_upload(app, self._object.object_id)
        except GatewayError:
            self._object.abort()
            raise
        self._touched = app.clock()
        self._writer: envelope.Encryptor | _PassThrough
        if self.pre_encrypted:
            self._writer = _PassThrough(self._object, self._recipients)
        else:
            self._writer = envelope.Encryptor(self._object, self._recipients,
                                              batch_chunks=UPLOAD_BATCH_CHUNKS)

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def pre_encrypted(self) -> bool:
        """Whether the uploader sent age ciphertext (stored as it is)."""
        return self.plain_name.endswith(AGE_SUFFIX)

    def write(self, data: bytes | memoryview) -> None:
        """Feed the next bytes of the file. Any error aborts the upload before it is raised."""
        if self._finished:
            raise UsageError("the upload is already finished")
        self.received += len(data)
        try:
            if self.received > self._limit:
                raise PolicyError(f"file exceeds the maximum upload size "
                                  f"({self._app.settings.max_upload_mib} MiB)")
            if self._scan is not None:
                self._scan.feed(data)
                self._check_header()
            self._writer.write(data)
            self._heartbeat()
        except GatewayError as exc:
            self.abort(reason=exc.diagnostics())
            raise

    def ready(self, before_waiting: Callable[[], None] | None = None) -> None:
        """Wait until the store can take the next write without waiting (an S3 upload
        queues here for a part buffer); ``before_waiting`` is called first if it waits.
        A server that calls it before it reads the next
        write off the network makes a queued upload hold no write of its own: its data
        stays with the client. Any error aborts the upload before it is raised.

        A pre-encrypted upload's store writes run on its check thread, where they may
        wait; it has nothing to wait for here.
        """
        if self._finished or isinstance(self._writer, _PassThrough):
            return
        try:
            self._object.ready(before_waiting)
        except GatewayError as exc:
            self.abort(reason=exc.diagnostics())
            raise

    def settle(self) -> None:
        """Wait until a pre-encrypted upload's payload check (which runs beside the
        writes) has checked every byte written; its refusal aborts the upload and is
        raised. For callers that answer per part (the browser upload), not per write."""
        try:
            if isinstance(self._writer, _PassThrough):
                self._writer.settle()
        except GatewayError as exc:
            self.abort(reason=exc.diagnostics())
            raise

    def _check_header(self) -> None:
        """Refuse forbidden columns as soon as the header is read, before the rest of the
        file is even encrypted (the record count is checked at close)."""
        assert self._scan is not None
        header = self._scan.header
        if self._header_checked or header is None:
            return
        self._header_checked = True
        if self._terms is not None and not header.opaque:
            self._terms.check(header)

    def declare_contents(self, contents: Contents) -> None:
        """Record what the sender's client read of a pre-encrypted file: its columns and
        record count (``blindpost send``). Refused (and the upload aborted) when they are
        outside the partner's agreement."""
        try:
            if not isinstance(self._writer, _PassThrough):
                raise UsageError("only a pre-encrypted (*.age) upload declares its contents; "
                                 "the gateway reads a plaintext upload itself")
            if self._terms is not None:
                self._terms.check(contents, declared=True)
        except GatewayError as exc:
            self.abort(reason=exc.diagnostics())
            raise
        self._declared_contents = contents

    def _final_contents(self) -> Contents:
        """What the file holds, checked against the agreement (raises when outside it)."""
        if self._scan is not None:
            contents = self._scan.finish()
        elif self._declared_contents is not None:
            contents = self._declared_contents
        else:
            # age hides the plaintext: without the sender's declaration nothing is known.
            contents = Contents(OPAQUE, None, None,
                                reason="pre-encrypted without a declaration of its contents")
        if self._terms is not None:
            self._terms.check(contents, declared=self._scan is None)
        elif self._app.settings.require_agreement:
            raise PolicyError(f"refused: partner {self._partner_slug!r} has no data-sharing "
                              "agreement, and this gateway requires one (require_agreement); "
                              "nothing was stored")
        return contents

    def _heartbeat(self) -> None:
        now = self._app.clock()
        if pending_objects.is_due(self._touched, now):
            pending_objects.touch(self._app, self._object.object_id)
            self._touched = now

    def declare_recipients(self, fingerprints: Sequence[str]) -> None:
        """Record the keys a pre-encrypted upload was encrypted to, as its client says.

        Refused (and the upload aborted) unless they are exactly the approved keys.
        """
        try:
            if not isinstance(self._writer, _PassThrough):
                raise UsageError("only a pre-encrypted (*.age) upload declares its recipients")
            check_declared(fingerprints, self._recipients)
        except GatewayError as exc:
            self.abort(reason=exc.diagnostics())
            raise
        self._declared = tuple(fingerprints)

    def _encryption_details(self) -> dict[str, object]:
        if isinstance(self._writer, _PassThrough):
            return pre_encrypted_details(self._writer.header, declared=self._declared,
                                         approved=self._recipients, key_ids=self._key_ids)
        # The keys this ciphertext really is encrypted to: the gateway did it.
        return {"encrypted_here": True, "encryption": ENCRYPTED_HERE,
                "recipient_keys": self._key_ids,
                "recipient_kinds": [key.kind for key in self._keys],
                "recipient_fingerprints": [key.fingerprint for key in self._keys]}

    def commit(self) -> FileEntry:
        """Finish the ciphertext, commit the object, the transfer row and the audit event."""
        if self._finished:
            raise UsageError("the upload is already finished")
        try:
            # Checked before the ciphertext is finished: a refused file is never stored.
            self.contents = self._final_contents()
            self._writer.close()
            stored = self._object.commit()
        except GatewayError as exc:
            self.abort(reason=exc.diagnostics())
            raise
        self._finished = True
        try:
            entry, superseded = self._record(stored.object_id, stored.size, stored.sha256)
        except GatewayError as exc:
            # The row never landed: the object must not outlive it.
            self._app.store.delete(stored.object_id)
            self._record_abort(reason=exc.diagnostics())
            raise
        except BaseException:
            self._app.store.delete(stored.object_id)
            raise
        for object_id in superseded:
            _delete_quietly(self._app, object_id)
        return entry

    def _record(self, object_id: str, size: int, sha256: str) -> tuple[FileEntry, list[str]]:
        app, now = self._app, self._app.clock()
        superseded: list[str] = []
        new_id = str(uuid.uuid4())
        with app.transaction() as session:
            # Locking the partner row serialises commits into one inbox, so two uploads of
            # the same name at once supersede one another instead of colliding.
            partner = session.get(Partner, self._partner_id, with_for_update=True)
            if partner is None or partner.disabled:
                raise PolicyError(f"partner {self._partner_slug!r} is disabled")
            self._app.integrity.verify(partner)
            require_active(session, self._actor)
            # A pre-encrypted file was checked against the same keys at its header.
            self._check_keys_still_approved(session)
            for old in session.scalars(select(Transfer).where(
                    Transfer.partner_id == partner.id, Transfer.name == self.stored_name,
                    Transfer.state == TransferState.AVAILABLE)):
                old.state = TransferState.SUPERSEDED
                superseded.append(old.object_id)
                pending_objects.note_deletion(session, old.object_id, now=now)
                app.audit.record(session, tag=AuditTag.FILE_SUPERSEDE, actor=self._actor,
                                 subject=f"file:{old.id}",
                                 details={"partner": partner.slug, "name": old.name,
                                          "superseded_by": new_id})
            session.flush()
            row = Transfer(id=new_id, partner_id=partner.id, name=self.stored_name,
                           size=size, sha256=sha256, object_id=object_id,
                           uploaded_by=self._actor.account_id, created_at=now,
                           expires_at=now + self._retention(partner),
                           downloads=0, max_downloads=partner.max_downloads,
                           state=TransferState.AVAILABLE, **self._contents_columns())
            session.add(row)
            pending_objects.settled(session, object_id)
            session.flush()
            session.refresh(row)
            app.audit.record(session, tag=AuditTag.UPLOAD_COMPLETE, actor=self._actor,
                             subject=f"file:{row.id}", details=self._details(row))
            return _entry(row), superseded

    def _details(self, row: Transfer) -> dict[str, object]:
        """What the upload event records: enough for the exposure report on its own."""
        return {"partner": self._partner_slug, "name": row.name, "size": row.size,
                "sha256": row.sha256, "object_id": row.object_id,
                "expires_at": row.expires_at.isoformat(), "max_downloads": row.max_downloads,
                **self._encryption_details(), **self._contents_details(),
                "seconds": round(time.monotonic() - self._started, 3)}

    def _elements(self) -> list[str] | None:
        contents = self.contents
        if contents is None or contents.columns is None:
            return None
        return (self._terms.elements(contents.columns) if self._terms is not None
                else elements_of(contents.columns))

    def _contents_columns(self) -> dict[str, object]:
        """The transfer row's record of what the file holds (sealed)."""
        contents = self.contents
        assert contents is not None
        elements = self._elements()
        return {"data_format": contents.format,
                "data_elements": canonical_json(elements) if elements is not None else None,
                "record_count": contents.records, "elements_source": self._source()}

    def _source(self) -> str:
        return "gateway" if self._scan is not None else (
            "sender" if self._declared_contents is not None else "unknown")

    def _contents_details(self) -> dict[str, object]:
        """What the upload event says the file holds: element names and counts only."""
        contents = self.contents
        assert contents is not None
        return {"data_format": contents.format, "data_elements": self._elements(),
                "records": contents.records, "data_read_by": self._source(),
                "agreement_change": self._terms.change_id if self._terms is not None
                else None}

    def _check_keys_still_approved(self, session: Session) -> None:
        """Refuse to commit a file encrypted to a key revoked while it was uploading."""
        revoked = session.scalars(select(PartnerKey.id).where(
            PartnerKey.id.in_(self._key_ids), PartnerKey.state != KeyState.APPROVED)).all()
        if revoked:
            raise PolicyError(f"recipient key {revoked[0]} of partner {self._partner_slug!r} "
                              "was revoked during the upload; upload the file again")

    def _retention(self, partner: Partner) -> timedelta:
        # The global ceiling wins over a partner's setting made before it was lowered.
        seconds = min(partner.retention_seconds, self._app.settings.max_retention_seconds)
        return timedelta(seconds=seconds)

    def abort(self, *, reason: str) -> None:
        """Discard the upload and audit why; safe to call more than once."""
        if self._finished:
            return
        self._finished = True
        if isinstance(self._writer, _PassThrough):
            self._writer.cancel()
        self._object.abort()
        self._record_abort(reason=reason)

    def _record_abort(self, *, reason: str) -> None:
        with self._app.transaction() as session:
            pending_objects.settled(session, self._object.object_id)
            self._app.audit.record(session, tag=AuditTag.UPLOAD_ABORTED, actor=self._actor,
                                   subject=f"partner:{self._partner_slug}",
                                   details={"name": self.stored_name, "received": self.received,
                                            "reason": reason})


def require_active(session: Session, actor: Actor) -> None:
    """Refuse an account whose sign-in no longer holds (disabled, or its partner is).

    Every file operation re-reads the account, so a session opened before the account
    was disabled can do nothing more, on any worker or node, even before the SFTP
    server ends it.
    """
    if actor.account_id is None:
        return
    # Imported here: the sign-in service loads the account services with it, which the
    # listings (`blindpost files`) never use.
    from gateway.auth import session_refusal

    reason = session_refusal(session.get(Account, actor.account_id))
    if reason is not None:
        raise AuthenticationError(f"signed out: {reason}")


def _delete_quietly(app: App, object_id: str) -> None:
    """Delete an object recorded for deletion; on failure the purger's sweep retries."""
    try:
        pending_objects.delete_now(app, object_id)
    except GatewayError as exc:
        log.warning("could not delete object %s now (%s); the purger will retry",
                    object_id, exc.diagnostics())


class Download:
    """Ranged reads of one stored ciphertext, its download reserved at open.

    :meth:`close` records the ranges served (:mod:`gateway.served`) and audits a
    download when the bytes served to the account reach the file's size, however they
    were split across opens; otherwise it gives the reservation back and audits how
    much this open served.
    """

    def __init__(self, app: App, *, actor: Actor, entry: FileEntry,
                 reader: ObjectReader) -> None:
        assert actor.account_id is not None, "only a signed-in account downloads"
        self._app = app
        self._actor = actor
        self._account_id = actor.account_id
        self.entry = entry
        self.name = entry.name
        self.size = entry.size
        self._reader = reader
        self._sent = 0
        self._served = served.ServedRanges()
        self._started = time.monotonic()
        self._closed = False

    def read_at(self, offset: int, length: int) -> bytes:
        data = self._reader.read_at(offset, length)
        self._sent += len(data)
        self._served.add(offset, offset + len(data))
        return data

    def close(self) -> bool:
        """Release the object; return whether the read counted as a complete download."""
        if self._closed:
            return False
        self._closed = True
        self._reader.close()
        # ``served``: the distinct bytes this open served, which the log adds up per
        # account, so deleting the served ranges stored below lifts no download limit.
        details = {"partner": self.entry.partner, "name": self.name, "bytes": self._sent,
                   "served": self._served.total, **_resumed_at(self._served.ranges),
                   "size": self.size, "seconds": round(time.monotonic() - self._started, 3)}
        with self._app.transaction() as session:
            # Serialises the closes of this file, so each sees what the others served.
            session.execute(select(Transfer.id).where(Transfer.id == self.entry.id)
                            .with_for_update())
            before = max(served.record(session, transfer_id=self.entry.id,
                                       account_id=self._account_id,
                                       ranges=self._served.ranges, now=self._app.clock()),
                         self._app.ledger.served(self.entry.id, self._actor.name, session))
            complete = served.completes_a_download(before=before, added=self._served.total,
                                                   size=self.size)
            if not complete:
                _release_download(session, self.entry.id)
            tag = AuditTag.DOWNLOAD_COMPLETE if complete else AuditTag.DOWNLOAD_INCOMPLETE
            self._app.audit.record(session, tag=tag, actor=self._actor,
                                   subject=f"file:{self.entry.id}", details=details)
        return complete


def _resumed_at(ranges: list[tuple[int, int]]) -> dict[str, int]:
    """For the audit: where a read that did not start at the beginning began."""
    return {"resumed_at": ranges[0][0]} if ranges and ranges[0][0] > 0 else {}


def _release_download(session: Session, transfer_id: str) -> None:
    """Give back a download reserved by an open that did not end in a complete read."""
    session.execute(update(Transfer).where(Transfer.id == transfer_id)
                    .values(downloads=Transfer.downloads - 1))


class TransferService:
    """Inbox listings, uploads, downloads and withdrawals, with their rules."""

    def __init__(self, app: App) -> None:
        self._app = app

    def active_partners(self, actor: Actor, *, receiving: bool = False) -> list[str]:
        """The partners a staff member may address: every one not disabled, or with
        ``receiving`` only those that can receive a file now (an approved key)."""
        self._app.authz.require(actor, Permission.INBOX_READ)
        if actor.role is not Role.STAFF:
            self._app.authz.deny(actor, operation=Permission.INBOX_READ.value, subject="/",
                                 reason="only staff see partner folders")
        query = select(Partner.slug).where(Partner.disabled.is_(False)).order_by(Partner.slug)
        if receiving:
            query = query.where(select(PartnerKey.id).where(
                PartnerKey.partner_id == Partner.id,
                PartnerKey.state == KeyState.APPROVED).exists())
        with self._app.read() as session:
            require_active(session, actor)
            return list(session.scalars(query))

    def inbox(self, actor: Actor, partner: str | None = None) -> list[FileEntry]:
        """Available files of a partner: its own for a partner user, any active one for staff."""
        self._app.authz.require(actor, Permission.INBOX_READ)
        forged: list[IntegrityViolationError] = []
        with self._app.read() as session:
            partner_row = self._visible_partner(session, actor, partner)
            rows = session.scalars(select(Transfer).where(
                Transfer.partner_id == partner_row.id, *_available(self._app.clock()))
                .order_by(Transfer.name))
            entries = []
            for row in rows:
                try:
                    self._app.integrity.verify(row)
                except IntegrityViolationError as violation:
                    forged.append(violation)  # Not listed, and reported below.
                    continue
                entries.append(_entry(row))
        for unlisted in forged:
            self._app.integrity.record_now(unlisted, actor)
        return entries

    def stat(self, actor: Actor, name: str, partner: str | None = None) -> FileEntry:
        self._app.authz.require(actor, Permission.INBOX_READ)
        with self._app.read() as session:
            return _entry(self._find(session, actor, partner, name))

    def begin_upload(self, actor: Actor, *, partner: str, name: str) -> Upload:
        """Start an upload for ``partner``; refused without an approved key."""
        self._app.authz.require(actor, Permission.FILE_UPLOAD, subject=f"partner:{partner}")
        check_file_name(name)
        with self._app.read() as session:
            partner_row = self._visible_partner(session, actor, partner)
            # Never encrypt to a recipient, or apply a limit, the gateway did not write.
            self._app.integrity.verify(partner_row)
            approved = approved_keys(session, partner_row)
            for key in approved:
                self._app.integrity.verify(key)
            # One key type at a time: during a type switch the old keys get nothing new.
            keys = receiving_keys(approved)
            if not keys:
                raise PolicyError(f"partner {partner!r} has no approved encryption key; "
                                  "uploads are refused until an admin approves one")
            upload_keys = [UploadKey(k.id, k.kind, k.fingerprint,
                                     envelope.parse_recipient(k.recipient)) for k in keys]
            target = partner_info(partner_row)
            terms = self._app.agreements.terms(session, partner_row)
        return Upload(self._app, actor=actor, partner=target, name=name, keys=upload_keys,
                      terms=terms)

    def open_download(self, actor: Actor, name: str) -> Download:
        """Open one of the partner user's own available files for reading."""
        self._app.authz.require(actor, Permission.FILE_DOWNLOAD)
        with self._app.transaction() as session:
            row = self._find(session, actor, None, name)
            # The stored count can be reset by a database writer; the log's cannot.
            if (row.max_downloads is not None
                    and self._app.ledger.downloads(row.id, session) >= row.max_downloads):
                raise GoneError(f"{name} is gone: {limit_reached(row.max_downloads)}")
            # Reserve the download now, in one conditional UPDATE, so that parallel reads
            # cannot pass the limit on any backend; close() returns it if the read stops.
            reserved = session.execute(update(Transfer).where(
                Transfer.id == row.id, or_(Transfer.max_downloads.is_(None),
                                           Transfer.downloads < Transfer.max_downloads))
                .values(downloads=Transfer.downloads + 1)
                .execution_options(synchronize_session=False))
            if reserved.rowcount != 1:  # type: ignore[attr-defined]  # A CursorResult.
                assert row.max_downloads is not None
                raise GoneError(f"{name} is gone: {limit_reached(row.max_downloads)}")
            entry, object_id = _entry(row), row.object_id
        try:
            reader = self._app.store.open(object_id)
        except GatewayError:
            with self._app.transaction() as session:
                _release_download(session, entry.id)
            raise
        return Download(self._app, actor=actor, entry=entry, reader=reader)

    def withdraw(self, actor: Actor, name: str, partner: str | None = None) -> None:
        """Remove a file from an inbox now (its ciphertext is deleted), audited."""
        self._app.authz.require(actor, Permission.FILE_WITHDRAW)
        with self._app.transaction() as session:
            row = self._find(session, actor, partner, name, for_update=True)
            row.state = TransferState.WITHDRAWN
            pending_objects.note_deletion(session, row.object_id, now=self._app.clock())
            self._app.audit.record(session, tag=AuditTag.FILE_WITHDRAW, actor=actor,
                                   subject=f"file:{row.id}",
                                   details={"partner": row.partner.slug, "name": row.name})
            object_id = row.object_id
        _delete_quietly(self._app, object_id)

    def files(self, actor: Actor, selection: FileFilter = FileFilter(), *,
              limit: int = 500) -> list[FileEntry]:
        """Every file's metadata for operators (never contents), newest first."""
        self._app.authz.require(actor, Permission.FILE_LIST)
        query = select(Transfer).order_by(Transfer.created_at.desc(), Transfer.id).limit(limit)
        if selection.state is not None:
            query = query.where(Transfer.state == selection.state)
        if selection.since is not None:
            query = query.where(Transfer.created_at >= selection.since)
        if selection.until is not None:
            query = query.where(Transfer.created_at < selection.until)
        with self._app.read() as session:
            if selection.partner is not None:
                query = query.where(Transfer.partner_id == get_partner(session,
                                                                       selection.partner).id)
            return [_entry(row) for row in session.scalars(query)]

    def withdraw_file(self, actor: Actor, *, file_id: str) -> FileEntry:
        """Remove an available file now, as an admin (its ciphertext is deleted)."""
        return self._end(actor, file_id, Permission.FILE_MANAGE, TransferState.WITHDRAWN,
                         AuditTag.FILE_WITHDRAW)

    def purge_file(self, actor: Actor, *, file_id: str) -> FileEntry:
        """Purge an available file now, before it expires (its ciphertext is deleted)."""
        return self._end(actor, file_id, Permission.FILE_PURGE, TransferState.PURGED,
                         AuditTag.FILE_PURGE)

    def _end(self, actor: Actor, file_id: str, permission: Permission, state: TransferState,
             tag: AuditTag) -> FileEntry:
        self._app.authz.require(actor, permission, subject=f"file:{file_id}")
        with self._app.transaction() as session:
            row = session.scalar(select(Transfer).where(Transfer.id == file_id)
                                 .with_for_update(of=Transfer))
            if row is None:
                raise NotFoundError(f"unknown file {file_id!r}")
            if row.state is not TransferState.AVAILABLE:
                raise ConflictError(f"file {file_id} is already {row.state.value}")
            row.state = state
            pending_objects.note_deletion(session, row.object_id, now=self._app.clock())
            self._app.audit.record(session, tag=tag, actor=actor, subject=f"file:{row.id}",
                                   details={"partner": row.partner.slug, "name": row.name,
                                            "reason": f"{state.value} by {actor.name}",
                                            "size": row.size, "sha256": row.sha256})
            entry, object_id = _entry(row), row.object_id
        _delete_quietly(self._app, object_id)
        return entry

    def waiting(self, actor: Actor, *, within: timedelta) -> list[WaitingFiles]:
        """Per partner: files waiting now, their bytes, and how many expire ``within``."""
        self._app.authz.require(actor, Permission.FILE_LIST)
        now = self._app.clock()
        soon = case((Transfer.expires_at <= now + within, 1), else_=0)
        query = (select(Partner.slug, func.count(Transfer.id), func.coalesce(
                    func.sum(Transfer.size), 0), func.coalesce(func.sum(soon), 0))
                 .join(Transfer, Transfer.partner_id == Partner.id)
                 .where(*_available(now)).group_by(Partner.slug).order_by(Partner.slug))
        with self._app.read() as session:
            return [WaitingFiles(slug, int(count), int(size), int(expiring))
                    for slug, count, size, expiring in session.execute(query)]

    def _visible_partner(self, session: Session, actor: Actor, partner: str | None) -> Partner:
        """The partner whose inbox ``actor`` may see: its own, or a named one for staff."""
        require_active(session, actor)
        if actor.role is Role.PARTNER and partner is None and actor.partner_id is not None:
            row = session.get(Partner, actor.partner_id)
        elif actor.role is Role.STAFF and partner is not None:
            try:
                row = get_partner(session, partner)
            except NotFoundError:
                raise NotFoundError("no such partner folder") from None
        else:
            self._app.authz.deny(actor, operation="inbox", subject=f"partner:{partner or '-'}",
                                 reason="a partner account sees only its own inbox, and staff "
                                        "name a partner folder")
        if row is None or row.disabled:
            raise NotFoundError("no such partner folder")
        return row

    def _find(self, session: Session, actor: Actor, partner: str | None, name: str, *,
              for_update: bool = False) -> Transfer:
        partner_row = self._visible_partner(session, actor, partner)
        query = select(Transfer).where(Transfer.partner_id == partner_row.id,
                                       Transfer.name == name, *_available(self._app.clock()))
        row = session.scalar(query.with_for_update(of=Transfer) if for_update else query)
        if row is None:
            raise self._gone(session, partner_row, name)
        self._app.integrity.verify(row)
        return row

    def _gone(self, session: Session, partner: Partner, name: str) -> NotFoundError:
        """Why ``name`` is not there for ``partner``: a :class:`GoneError` saying why when
        the gateway stored a file of that name for it, else a plain miss.

        Only the latest file of the name counts; the reason is told to whoever may see
        the inbox, who saw the file listed before (no contents, no other partner's).
        """
        row = session.scalar(select(Transfer).where(
            Transfer.partner_id == partner.id, Transfer.name == name)
            .order_by(Transfer.created_at.desc(), Transfer.id.desc()).limit(1))
        if row is None:
            return NotFoundError("no such file")
        return GoneError(f"{name} is gone: {gone_reason(row, now=self._app.clock())}")
