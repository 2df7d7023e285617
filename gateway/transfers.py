"""Transfers: staff upload files for a partner, the partner downloads them.

Ingest is the heart of the promise: plaintext written by staff goes straight into a
streaming age encryptor whose recipients are the partner's approved keys, and only the
ciphertext reaches the store. A file that already is age ciphertext (``*.age`` with a
valid header) is stored as it is. Nothing is visible until :meth:`Upload.commit`, which
writes the object, the transfer row and the audit event; an aborted upload leaves nothing.
"""

from __future__ import annotations

import io
import logging
import time
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from gateway import envelope
from gateway.actors import Actor
from gateway.audit import AuditTag
from gateway.db.models import Partner, Role, Transfer, TransferState
from gateway.errors import GatewayError, NotFoundError, PolicyError, UsageError
from gateway.partner_keys import approved_keys
from gateway.partners import get_partner
from gateway.store import ObjectReader, PendingObject

if TYPE_CHECKING:
    from gateway.app import App

log = logging.getLogger(__name__)

AGE_SUFFIX = ".age"
AGE_MAGIC = b"age-encryption.org/v1\n"
ARMOR_MAGIC = b"-----BEGIN AGE ENCRYPTED FILE-----"
MAX_NAME_BYTES = 255
# A pre-encrypted file's header must be complete within this many bytes (a few hundred
# post-quantum stanzas); past it the upload is refused as not an age file.
MAX_HEADER_BYTES = 1 << 20
ARMORED_HEADER_PREFIX = 1 << 16
MIB = 1 << 20
_INVISIBLE_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn")


@dataclass(frozen=True)
class FileEntry:
    """A file as a partner or staff member sees it in an inbox listing."""

    name: str
    size: int
    created_at: datetime
    expires_at: datetime
    downloads: int
    max_downloads: int | None


def _entry(row: Transfer) -> FileEntry:
    return FileEntry(row.name, row.size, row.created_at, row.expires_at, row.downloads,
                     row.max_downloads)


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


def _agrees(head: bytes, magic: bytes) -> bool:
    """Whether ``head`` and ``magic`` are equal over their common length."""
    common = min(len(head), len(magic))
    return head[:common] == magic[:common]


def _header_complete(head: bytes, armored: bool) -> bool:
    """Whether ``head`` holds a whole header (binary: up to the MAC line's newline)."""
    if armored:
        # Armored headers are inside base64; judge once a generous prefix has arrived.
        return len(head) >= ARMORED_HEADER_PREFIX
    mac_line = head.find(b"\n---")
    return mac_line >= 0 and head.find(b"\n", mac_line + 1) >= 0


class _PassThrough:
    """Stores an uploaded age file as it is, after checking its header is well formed."""

    def __init__(self, sink: PendingObject) -> None:
        self._sink = sink
        self._head = bytearray()
        self._checked = False

    def write(self, data: bytes | memoryview) -> None:
        if self._checked:
            self._sink.write(data)
            return
        self._head += data
        self._check_header(final=False)

    def close(self) -> None:
        if not self._checked:
            self._check_header(final=True)

    def _check_header(self, *, final: bool) -> None:
        head = bytes(self._head)
        armored = _agrees(head, ARMOR_MAGIC)
        if not (armored or _agrees(head, AGE_MAGIC)):
            raise UsageError("a *.age upload must be an age-encrypted file; this one is not")
        if not final and len(head) < MAX_HEADER_BYTES and not _header_complete(head, armored):
            return
        try:
            envelope.inspect(io.BytesIO(head))
        except envelope.EnvelopeError as exc:
            raise UsageError("a *.age upload must be an age-encrypted file: "
                             f"{exc.diagnostics()}") from exc
        self._checked = True
        self._sink.write(bytes(self._head))
        self._head.clear()


class Upload:
    """A file being uploaded: write bytes in order, then :meth:`commit` or :meth:`abort`."""

    def __init__(self, app: App, *, actor: Actor, partner: Partner, name: str,
                 recipients: Sequence[envelope.Recipient], key_ids: list[int]) -> None:
        self._app = app
        self._actor = actor
        self._partner = partner
        self._started = time.monotonic()
        self.plain_name = name
        self.stored_name = name if name.endswith(AGE_SUFFIX) else name + AGE_SUFFIX
        self.received = 0
        self._limit = app.settings.max_upload_mib * MIB
        self._key_ids = key_ids
        self._object = app.store.create()
        self._finished = False
        self._writer: envelope.Encryptor | _PassThrough
        if name.endswith(AGE_SUFFIX):
            self._writer = _PassThrough(self._object)
        else:
            self._writer = envelope.Encryptor(self._object, recipients)

    @property
    def finished(self) -> bool:
        return self._finished

    def write(self, data: bytes | memoryview) -> None:
        """Feed the next bytes of the file. Any error aborts the upload before it is raised."""
        if self._finished:
            raise UsageError("the upload is already finished")
        self.received += len(data)
        try:
            if self.received > self._limit:
                raise PolicyError(f"file exceeds the maximum upload size "
                                  f"({self._app.settings.max_upload_mib} MiB)")
            self._writer.write(data)
        except GatewayError as exc:
            self.abort(reason=exc.diagnostics())
            raise

    def commit(self) -> FileEntry:
        """Finish the ciphertext, commit the object, the transfer row and the audit event."""
        if self._finished:
            raise UsageError("the upload is already finished")
        try:
            self._writer.close()
            stored = self._object.commit()
        except GatewayError as exc:
            self.abort(reason=exc.diagnostics())
            raise
        self._finished = True
        try:
            return self._record(stored.object_id, stored.size, stored.sha256)
        except GatewayError as exc:
            # The row never landed: the object must not outlive it.
            self._app.store.delete(stored.object_id)
            self._record_abort(reason=exc.diagnostics())
            raise
        except BaseException:
            self._app.store.delete(stored.object_id)
            raise

    def _record(self, object_id: str, size: int, sha256: str) -> FileEntry:
        app, now = self._app, self._app.clock()
        superseded: list[str] = []
        with app.transaction() as session:
            partner = session.get(Partner, self._partner.id)
            if partner is None or partner.disabled:
                raise PolicyError(f"partner {self._partner.slug!r} is disabled")
            for old in session.scalars(select(Transfer).where(
                    Transfer.partner_id == partner.id, Transfer.name == self.stored_name,
                    Transfer.state == TransferState.AVAILABLE)):
                old.state = TransferState.SUPERSEDED
                superseded.append(old.object_id)
                app.audit.record(session, tag=AuditTag.FILE_SUPERSEDE, actor=self._actor.name,
                                 subject=f"file:{old.id}",
                                 details={"partner": partner.slug, "name": old.name})
            session.flush()
            row = Transfer(id=str(uuid.uuid4()), partner_id=partner.id, name=self.stored_name,
                           size=size, sha256=sha256, object_id=object_id,
                           uploaded_by=self._actor.account_id, created_at=now,
                           expires_at=now + self._retention(partner),
                           downloads=0, max_downloads=partner.max_downloads,
                           state=TransferState.AVAILABLE)
            session.add(row)
            session.flush()
            app.audit.record(session, tag=AuditTag.UPLOAD_COMPLETE, actor=self._actor.name,
                             subject=f"file:{row.id}",
                             details={"partner": partner.slug, "name": row.name, "size": size,
                                      "sha256": sha256, "encrypted_here": not self.plain_name
                                      .endswith(AGE_SUFFIX), "recipient_keys": self._key_ids,
                                      "seconds": round(time.monotonic() - self._started, 3),
                                      **self._actor.audit_details()})
        for object_id_old in superseded:
            app.store.delete(object_id_old)
        return _entry(row)

    def _retention(self, partner: Partner) -> timedelta:
        # The global ceiling wins over a partner's setting made before it was lowered.
        days = min(partner.retention_days, self._app.settings.max_retention_days)
        return timedelta(days=days)

    def abort(self, *, reason: str) -> None:
        """Discard the upload and audit why; safe to call more than once."""
        if self._finished:
            return
        self._finished = True
        self._object.abort()
        self._record_abort(reason=reason)

    def _record_abort(self, *, reason: str) -> None:
        with self._app.transaction() as session:
            self._app.audit.record(session, tag=AuditTag.UPLOAD_ABORTED, actor=self._actor.name,
                                   subject=f"partner:{self._partner.slug}",
                                   details={"name": self.stored_name, "received": self.received,
                                            "reason": reason, **self._actor.audit_details()})


class Download:
    """Ranged reads of one stored ciphertext, its download reserved at open.

    :meth:`close` audits a complete read, or gives the reservation back for an
    incomplete one.
    """

    def __init__(self, app: App, *, actor: Actor, transfer: Transfer,
                 reader: ObjectReader) -> None:
        self._app = app
        self._actor = actor
        self._transfer_id = transfer.id
        self.name = transfer.name
        self.size = transfer.size
        self._reader = reader
        self._sent = 0
        self._reached_end = False
        self._started = time.monotonic()
        self._closed = False

    def read_at(self, offset: int, length: int) -> bytes:
        data = self._reader.read_at(offset, length)
        self._sent += len(data)
        if offset + len(data) >= self.size:
            self._reached_end = True
        return data

    def close(self) -> bool:
        """Release the object; return whether the read counted as a complete download."""
        if self._closed:
            return False
        self._closed = True
        self._reader.close()
        complete = self._reached_end and self._sent >= self.size
        if not complete:
            _release_download(self._app, self._transfer_id)
            return False
        with self._app.transaction() as session:
            self._app.audit.record(session, tag=AuditTag.DOWNLOAD_COMPLETE,
                                   actor=self._actor.name, subject=f"file:{self._transfer_id}",
                                   details={"name": self.name, "bytes": self._sent,
                                            "seconds": round(time.monotonic() - self._started,
                                                             3),
                                            **self._actor.audit_details()})
        return True


def _release_download(app: App, transfer_id: str) -> None:
    """Give back a download reserved by an open that did not end in a complete read."""
    with app.transaction() as session:
        session.execute(update(Transfer).where(Transfer.id == transfer_id)
                        .values(downloads=Transfer.downloads - 1))


class TransferService:
    """Inbox listings, uploads, downloads and withdrawals, with their rules."""

    def __init__(self, app: App) -> None:
        self._app = app

    def active_partners(self, actor: Actor) -> list[str]:
        """The partner folders a staff member sees."""
        _require_role(actor, Role.STAFF)
        with self._app.transaction() as session:
            return list(session.scalars(select(Partner.slug).where(Partner.disabled.is_(False))
                                        .order_by(Partner.slug)))

    def inbox(self, actor: Actor, partner: str | None = None) -> list[FileEntry]:
        """Available files of a partner: its own for a partner user, any active one for staff."""
        with self._app.transaction() as session:
            partner_row = self._visible_partner(session, actor, partner)
            rows = session.scalars(select(Transfer).where(
                Transfer.partner_id == partner_row.id, *_available(self._app.clock()))
                .order_by(Transfer.name))
            return [_entry(row) for row in rows]

    def stat(self, actor: Actor, name: str, partner: str | None = None) -> FileEntry:
        with self._app.transaction() as session:
            return _entry(self._find(session, actor, partner, name))

    def begin_upload(self, actor: Actor, *, partner: str, name: str) -> Upload:
        """Start an upload for ``partner``; refused without an approved key."""
        _require_role(actor, Role.STAFF)
        check_file_name(name)
        with self._app.transaction() as session:
            partner_row = self._visible_partner(session, actor, partner)
            keys = approved_keys(session, partner_row)
            if not keys:
                raise PolicyError(f"partner {partner!r} has no approved encryption key; "
                                  "uploads are refused until an admin approves one")
            recipients = [envelope.parse_recipient(k.recipient) for k in keys]
            key_ids = [k.id for k in keys]
        return Upload(self._app, actor=actor, partner=partner_row, name=name,
                      recipients=recipients, key_ids=key_ids)

    def open_download(self, actor: Actor, name: str) -> Download:
        """Open one of the partner user's own available files for reading."""
        _require_role(actor, Role.PARTNER)
        with self._app.transaction() as session:
            row = self._find(session, actor, None, name)
            # Reserve the download now, in one conditional UPDATE, so that parallel reads
            # cannot pass the limit on any backend; close() returns it if the read stops.
            reserved = session.execute(update(Transfer).where(
                Transfer.id == row.id, or_(Transfer.max_downloads.is_(None),
                                           Transfer.downloads < Transfer.max_downloads))
                .values(downloads=Transfer.downloads + 1))
            if reserved.rowcount != 1:  # type: ignore[attr-defined]  # A CursorResult.
                raise NotFoundError("no such file")
        try:
            reader = self._app.store.open(row.object_id)
        except GatewayError:
            _release_download(self._app, row.id)
            raise
        return Download(self._app, actor=actor, transfer=row, reader=reader)

    def withdraw(self, actor: Actor, name: str, partner: str | None = None) -> None:
        """Remove a file from an inbox now (its ciphertext is deleted), audited."""
        with self._app.transaction() as session:
            row = self._find(session, actor, partner, name)
            row.state = TransferState.WITHDRAWN
            self._app.audit.record(session, tag=AuditTag.FILE_WITHDRAW, actor=actor.name,
                                   subject=f"file:{row.id}",
                                   details={"name": row.name, **actor.audit_details()})
        self._app.store.delete(row.object_id)

    def _visible_partner(self, session: Session, actor: Actor, partner: str | None) -> Partner:
        if actor.role is Role.PARTNER:
            if partner is not None or actor.partner_id is None:
                raise PolicyError("permission denied")
            row = session.get(Partner, actor.partner_id)
        elif actor.role is Role.STAFF and partner is not None:
            try:
                row = get_partner(session, partner)
            except NotFoundError:
                raise NotFoundError("no such partner folder") from None
        else:
            raise PolicyError("permission denied")
        if row is None or row.disabled:
            raise NotFoundError("no such partner folder")
        return row

    def _find(self, session: Session, actor: Actor, partner: str | None, name: str) -> Transfer:
        partner_row = self._visible_partner(session, actor, partner)
        row = session.scalar(select(Transfer).where(
            Transfer.partner_id == partner_row.id, Transfer.name == name,
            *_available(self._app.clock())))
        if row is None:
            raise NotFoundError("no such file")
        return row


def _require_role(actor: Actor, role: Role) -> None:
    if actor.role is not role:
        raise PolicyError("permission denied")
