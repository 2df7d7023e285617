"""Reading the audit log, event by event, into the facts of an exposure report.

The log is read once, in index order, while it is verified. State is kept for each file
until it is known to fall outside the window (uploaded after it, or removed before it),
for each account and recipient key, and nothing else: a log of a million events is read
in a few hundred megabytes at most. Entries arrive undecoded (:meth:`HistoryScan.add_entry`)
and only those that can change the report are decoded: a report on one week of a year
decodes a small part of the log, and costs little more than its verification.

Only what the events say is used. An event written before a field was recorded leaves
that field ``None`` (listed in the file's ``unrecorded``); a file whose upload is not in
the log is reported with what its later events say.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.audit import AuditEvent, AuditTag
from gateway.audit.events import event_from_document
from gateway.audit.leaves import column_datetime
from gateway.exposure.model import (
    BY_GATEWAY,
    BY_UPLOADER,
    DOWNLOAD_LIMIT,
    EXPIRED,
    PURGED_BY_ADMIN,
    REVOKED_PARTNER,
    SUPERSEDED,
    WITHDRAWN,
    AccountExposure,
    DownloadExposure,
    FileExposure,
    KeyExposure,
    PartnerSummary,
    RecipientExposure,
    Window,
)

FILE_TAGS = frozenset({AuditTag.UPLOAD_COMPLETE, AuditTag.DOWNLOAD_COMPLETE,
                       AuditTag.DOWNLOAD_INCOMPLETE, AuditTag.FILE_PURGE,
                       AuditTag.FILE_WITHDRAW, AuditTag.FILE_SUPERSEDE})
OTHER_TAGS = frozenset({AuditTag.KEY_PROPOSE, AuditTag.KEY_APPROVE, AuditTag.KEY_REVOKE,
                        AuditTag.ACCOUNT_CREATE, AuditTag.ACCOUNT_DISABLE,
                        AuditTag.ACCOUNT_ENABLE, AuditTag.PARTNER_DISABLE,
                        AuditTag.LOGIN_SUCCESS})
TAGS = frozenset(tag.value for tag in FILE_TAGS | OTHER_TAGS)
_REMOVALS = frozenset({AuditTag.FILE_PURGE, AuditTag.FILE_WITHDRAW, AuditTag.FILE_SUPERSEDE})
_DOWNLOADS = frozenset({AuditTag.DOWNLOAD_COMPLETE, AuditTag.DOWNLOAD_INCOMPLETE})
# The end of a leaf in the log's usual form whose subject is a file: the last keys of
# the top-level object (a details value cannot end the leaf so), captured file id.
_FILE_SUBJECT_END = re.compile(
    rb',"subject":"file:([^"\\\x00-\x1f]*)","tag":"[^"\\\x00-\x1f]*",'
    rb'"time":"[^"\\\x00-\x1f]*","v":1\}')
# An integer JSON value as the usual form writes it, ending its key's value.
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*+)(?=[,}])")
# A usual-form leaf no longer than this holds no integer json.loads refuses to read
# (Python's limit of 4,300 digits), so reading a field of it without decoding it finds
# what decoding would (decoding such a leaf fails, and it is skipped).
_SHORT_LEAF = 4000
# The time column's form (UTC), as verification hands it for usual entries.
_COLUMN_TIME = "%Y-%m-%d %H:%M:%S.%f"
_LOGIN = AuditTag.LOGIN_SUCCESS.value
_UPLOAD = AuditTag.UPLOAD_COMPLETE.value
# What a usual leaf's field is when it holds an escape: read by decoding instead.
_ESCAPED = object()
_DOWNLOAD_TAGS = frozenset(tag.value for tag in (AuditTag.DOWNLOAD_COMPLETE,
                                                 AuditTag.DOWNLOAD_INCOMPLETE))
_REMOVAL_TAGS = frozenset(tag.value for tag in (AuditTag.FILE_PURGE, AuditTag.FILE_WITHDRAW,
                                                AuditTag.FILE_SUPERSEDE))
_FILE_SUBJECT_TEXT_END = re.compile(_FILE_SUBJECT_END.pattern.decode())
# The classical recipient type; every other one is post-quantum (see RecipientKey).
CLASSICAL_KIND = "x25519"
# The fields of an upload event, in the order `unrecorded` lists what is missing.
_UPLOAD_FIELDS = ("uploaded_at", "uploader", "size", "sha256", "encrypted_by", "recipients",
                  "expires_at")
# Purge reasons as file:purge events write them (gateway.retention), in report words.
_PURGE_REASONS = {"expired": EXPIRED, "download limit reached": DOWNLOAD_LIMIT,
                  "partner disabled": REVOKED_PARTNER}


@dataclass(slots=True)
class _File:
    """What the log has said so far about one file."""

    id: str
    partner: str
    name: str
    size: int | None = None
    sha256: str | None = None
    uploader: str | None = None
    uploaded_at: datetime | None = None
    encrypted_by: str | None = None
    recipients: tuple[RecipientExposure, ...] | None = None
    expires_at: datetime | None = None
    removed_at: datetime | None = None
    removal: str | None = None
    removed_by: str | None = None
    downloads: list[DownloadExposure] = field(default_factory=list)
    data_format: str | None = None
    data_elements: tuple[str, ...] | None = None
    records: int | None = None
    data_read_by: str | None = None
    # Downloads before the window, kept undecoded (time, leaf) until the file is known
    # to be on the server in the window: most files are removed before it opens. The
    # time is the column's text and the leaf text when read from usual rows.
    undecoded: list[tuple[datetime | str, bytes | str]] = field(default_factory=list)

    def value(self) -> FileExposure:
        unrecorded = tuple(name for name in _UPLOAD_FIELDS if getattr(self, name) is None
                           and not (name == "recipients" and self.encrypted_by == BY_UPLOADER))
        return FileExposure(self.id, self.partner, self.name, self.size, self.sha256,
                            self.uploader, self.uploaded_at, self.encrypted_by,
                            self.recipients, self.expires_at, self.removed_at, self.removal,
                            self.removed_by, tuple(self.downloads), unrecorded,
                            self.data_format, self.data_elements, self.records,
                            self.data_read_by)


@dataclass(slots=True)
class _Key:
    id: int
    partner: str | None = None
    kind: str | None = None
    fingerprint: str | None = None
    proposed_by: str | None = None
    approved_by: str | None = None
    approved_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(slots=True)
class _Account:
    username: str
    role: str | None = None
    partner: str | None = None
    created_at: datetime | None = None
    # Periods it could sign in: [start, end), None for an open end (or an unknown start).
    periods: list[list[datetime | None]] = field(default_factory=list)
    sign_ins: int = 0


def _text(details: dict[str, Any], key: str) -> str | None:
    value = details.get(key)
    return value if isinstance(value, str) else None


def _number(details: dict[str, Any], key: str) -> int | None:
    value = details.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _time(details: dict[str, Any], key: str) -> datetime | None:
    text = _text(details, key)
    try:
        return None if text is None else datetime.fromisoformat(text)
    except ValueError:
        return None


def _subject_id(event: AuditEvent, prefix: str) -> str | None:
    return event.subject[len(prefix):] if event.subject.startswith(prefix) else None


def _named(ids: list[Any], kinds: object, fingerprints: object
           ) -> tuple[RecipientExposure, ...] | None:
    """Keys an upload event names with ids, kinds and fingerprints side by side."""
    if not (isinstance(kinds, list) and isinstance(fingerprints, list)
            and len(kinds) == len(fingerprints) == len(ids)):
        return None
    return tuple(RecipientExposure(key_id, kind, fingerprint, _post_quantum(kind))
                 for key_id, kind, fingerprint in zip(ids, kinds, fingerprints, strict=True))


def _post_quantum(kind: str | None) -> bool | None:
    return None if kind is None else kind != CLASSICAL_KIND


class HistoryScan:
    """Builds the report's facts from events handed to :meth:`add` in index order."""

    def __init__(self, window: Window, *, partner: str | None = None) -> None:
        self.window = window
        self.partner = partner
        self.events = 0
        self._files: dict[str, _File] = {}
        # Files known to fall outside the window: later events about them are ignored.
        self._outside: set[str] = set()
        self._keys: dict[int, _Key] = {}
        self._accounts: dict[str, _Account] = {}
        self._partner_disabled: dict[str, datetime] = {}
        # Every file still stored, whatever its partner or window, by id: (object id,
        # partner, name), to name the file of an object the store check finds wrong.
        self._stored: dict[str, tuple[str, str, str]] = {}
        # Equal recipient lists share one tuple: a hundred thousand files usually name
        # a handful of keys.
        self._recipient_sets: dict[tuple[RecipientExposure, ...],
                                   tuple[RecipientExposure, ...]] = {}
        # The window's ends as time column texts, which order as the times do (years
        # 1000 to 9999, the only ones a usual leaf holds).
        self._start_text = _column_text(window.start)
        self._end_text = _column_text(window.end)

    def __call__(self, index: int, time: datetime, tag: str, leaf: bytes) -> None:
        """An :data:`~gateway.audit.verify.EntryReader`: :meth:`add_entry`."""
        self.add_entry(index, time, tag, leaf)

    def usual_rows(self, rows: Sequence[tuple[int, Any, Any, Any, Any]]) -> None:
        """Take in entry rows ``(idx, time text, tag, leaf text, mac)`` that verification
        found in the log's usual form (a :class:`~gateway.audit.verify.UsualRowsReader`):
        each leaf matches :mod:`gateway.audit.leaves`' pattern and its tag and time
        columns are its own, the time in the column's form.

        What :meth:`add_entry` does with each, without a datetime per entry: times are
        compared as column texts, sign-ins in the window and downloads of a file known
        here are read from the leaf text (in the usual form a key's value is found
        without decoding), and only what needs more is decoded.
        """
        wanted, start, end = TAGS, self._start_text, self._end_text
        for index, when, tag, text, _mac in rows:
            if tag not in wanted:
                continue
            if tag == _LOGIN:
                if when < start or when > end:
                    self.events += 1
                    continue
                if len(text) <= _SHORT_LEAF:
                    actor = _usual_text(text, 10)
                    if actor is not None:
                        self.events += 1
                        self._signed_in(actor)
                        continue
            elif tag in _DOWNLOAD_TAGS or tag in _REMOVAL_TAGS:
                file_id = _file_subject(text)
                if file_id is not None and self._usual_file_entry(file_id, when, tag, text):
                    self.events += 1
                    continue
            elif tag == _UPLOAD and when > end and len(text) <= _SHORT_LEAF:
                file_id = _file_subject(text)
                if file_id is not None and self._usual_late_upload(file_id, text):
                    self.events += 1
                    continue
            self.add_entry(index, column_datetime(when), tag, text.encode())

    def _usual_late_upload(self, file_id: str, text: str) -> bool:
        """Take in the usual leaf text of an upload after the window, which is all
        :meth:`add` does with it: where the file is stored, and that it is outside."""
        fields = [_usual_detail_text(text, key) for key in ("partner", "object_id", "name")]
        if any(field is _ESCAPED for field in fields):
            return False
        partner, object_id, name = fields
        if object_id is not None and partner is not None:
            self._stored[file_id] = (str(object_id), str(partner), str(name or "?"))
        if file_id in self._outside or (
                self.partner is not None and partner is not None and partner != self.partner):
            return True
        if file_id not in self._files and partner is not None:
            self._outside.add(file_id)
        return True

    def _usual_file_entry(self, file_id: str, when: str, tag: str, text: str) -> bool:
        """Take in a download or removal of ``file_id`` from its usual leaf text when that
        is all :meth:`add` would do with it; False when it needs decoding."""
        if file_id in self._outside:
            if tag in _REMOVAL_TAGS:
                self._stored.pop(file_id, None)
            return True
        record = self._files.get(file_id)
        if tag in _REMOVAL_TAGS:
            if (when > self._start_text or record is None or record.removed_at is not None
                    or self.partner is not None):
                return False
            # Removed before the window opened, all :meth:`_removed` keeps of it: that
            # it is outside (and no longer stored). Most files of a year end so.
            self._stored.pop(file_id, None)
            del self._files[file_id]
            self._outside.add(file_id)
            return True
        if when <= self._start_text:
            if record is None or record.downloads:
                return False
            record.undecoded.append((when, text))
            return True
        if record is None or self.partner is not None or len(text) > _SHORT_LEAF:
            return False
        actor = _usual_text(text, 10)
        if actor is None:
            return False
        record.downloads.append(DownloadExposure(
            actor, column_datetime(when), tag == AuditTag.DOWNLOAD_COMPLETE,
            _usual_integer(text, "bytes")))
        return True

    def add_entry(self, _index: int, time: datetime, tag: str, leaf: bytes) -> None:
        """Take in the next entry of the log, undecoded (a verification reader).

        Entries that cannot change the report are not decoded: other tags, sign-ins
        outside the window, events about files known to be outside it, and downloads,
        before the window opens, of a file that may yet be removed before it (decoded
        when the file turns out to be in it).
        """
        if tag not in TAGS:
            return
        if tag == AuditTag.LOGIN_SUCCESS and not self.window.holds(time):
            self.events += 1
            return
        if tag in _DOWNLOADS or tag in _REMOVALS:
            file_id = _file_subject(leaf)
            if file_id is not None and self._undecoded(file_id, time, tag, leaf):
                self.events += 1
                return
        try:
            event = event_from_document(json.loads(leaf), leaf, time=time)
        except ValueError:
            return  # Verification reports a malformed leaf; there is no event to read.
        self.add(event)

    def _undecoded(self, file_id: str, time: datetime, tag: str, leaf: bytes) -> bool:
        """Take in a download or removal of ``file_id`` without decoding it, when that
        is all :meth:`add` would do with it; False when it needs reading now."""
        if file_id in self._outside:
            # As add() would: a removal only forgets where the file was stored, and
            # nothing else about a file outside the window counts.
            if tag in _REMOVALS:
                self._stored.pop(file_id, None)
            return True
        if tag in _REMOVALS or time > self.window.start:
            return False
        record = self._files.get(file_id)
        if record is None or record.downloads:
            return False
        record.undecoded.append((time, leaf))
        return True

    def _decode_downloads(self, record: _File) -> None:
        """Read the downloads kept undecoded, before those read already (they came first)."""
        decoded, record.downloads = record.downloads, []
        for time, leaf in record.undecoded:
            try:
                moment = column_datetime(time) if isinstance(time, str) else time
                data = leaf.encode() if isinstance(leaf, str) else leaf
                self.add(event_from_document(json.loads(data), data, time=moment))
            except ValueError:
                continue
            self.events -= 1  # Counted when it was kept.
        record.undecoded.clear()
        record.downloads.extend(decoded)

    def add(self, event: AuditEvent) -> None:
        """Take in the next event (of :data:`TAGS`; others are ignored)."""
        self.events += 1
        if event.tag in FILE_TAGS:
            self._file_event(event)
        elif event.tag in (AuditTag.KEY_PROPOSE, AuditTag.KEY_APPROVE, AuditTag.KEY_REVOKE):
            self._key_event(event)
        elif event.tag in OTHER_TAGS:
            self._account_event(event)

    # -- files ------------------------------------------------------------------------

    def _file_event(self, event: AuditEvent) -> None:
        file_id = _subject_id(event, "file:")
        if file_id is None:
            return
        tag, partner = event.tag, _text(event.details, "partner")
        if tag in _REMOVALS:
            self._stored.pop(file_id, None)
        if tag == AuditTag.UPLOAD_COMPLETE:
            self._track_object(event, file_id, partner)
        if file_id in self._outside or (
                self.partner is not None and partner is not None and partner != self.partner):
            return
        record = self._files.get(file_id)
        if tag == AuditTag.UPLOAD_COMPLETE:
            if record is None and partner is not None:
                self._upload(event, file_id, partner)
            return
        if record is None:
            if partner is None:
                return  # Neither its upload nor its partner is in the log: nothing to say.
            # Its upload is not in the log; report it with what this event says.
            record = self._files[file_id] = _File(file_id, partner,
                                                  _text(event.details, "name") or "?")
        if tag in _REMOVALS:
            if record.removed_at is None:
                self._removed(record, event)
        else:
            record.downloads.append(DownloadExposure(
                event.actor, event.time, tag == AuditTag.DOWNLOAD_COMPLETE,
                _number(event.details, "bytes")))

    def _track_object(self, event: AuditEvent, file_id: str, partner: str | None) -> None:
        """Remember where a file is stored, whatever its partner or window."""
        object_id = _text(event.details, "object_id")
        if object_id is not None and partner is not None:
            self._stored[file_id] = (object_id, partner, _text(event.details, "name") or "?")

    def _upload(self, event: AuditEvent, file_id: str, partner: str) -> None:
        if event.time > self.window.end:
            self._outside.add(file_id)
            return
        details = event.details
        encrypted_here = details.get("encrypted_here")
        record = _File(file_id, partner, _text(details, "name") or "?",
                       size=_number(details, "size"), sha256=_text(details, "sha256"),
                       uploader=event.actor, uploaded_at=event.time,
                       expires_at=_time(details, "expires_at"))
        record.data_format = _text(details, "data_format")
        elements = details.get("data_elements")
        if isinstance(elements, list):
            record.data_elements = tuple(str(name) for name in elements)
        record.records = _number(details, "records")
        record.data_read_by = _text(details, "data_read_by")
        if encrypted_here is True:
            record.encrypted_by = BY_GATEWAY
            record.recipients = self._recipients(details)
        elif encrypted_here is False:
            record.encrypted_by = BY_UPLOADER
            record.recipients = self._declared(details)
        self._files[file_id] = record

    def _recipients(self, details: dict[str, Any]) -> tuple[RecipientExposure, ...] | None:
        """The keys the gateway encrypted to: from the event, else from the key events."""
        ids = details.get("recipient_keys")
        if not isinstance(ids, list):
            return None
        # Events written before uploads named their keys' fingerprints: the key events
        # (key:propose) name them, by the same ids.
        found = _named(ids, details.get("recipient_kinds"),
                       details.get("recipient_fingerprints")) or tuple(
            self._recipient_by_id(key_id) for key_id in ids)
        return self._recipient_sets.setdefault(found, found)

    def _declared(self, details: dict[str, Any]) -> tuple[RecipientExposure, ...] | None:
        """The keys a pre-encrypted file's client said it encrypted to (``blindpost send``
        declares them; the gateway checked they were the partner's approved keys, but
        cannot check the file against them), or ``None`` when it declared none."""
        ids = details.get("declared_key_ids")
        if not isinstance(ids, list):
            return None
        found = _named(ids, details.get("declared_kinds"), details.get("declared_recipients"))
        return None if found is None else self._recipient_sets.setdefault(found, found)

    def _recipient_by_id(self, key_id: object) -> RecipientExposure:
        key = self._keys.get(key_id) if isinstance(key_id, int) else None
        if key is None:
            return RecipientExposure(key_id if isinstance(key_id, int) else None, None, None,
                                     None)
        return RecipientExposure(key.id, key.kind, key.fingerprint, _post_quantum(key.kind))

    def _removed(self, record: _File, event: AuditEvent) -> None:
        record.removed_at, record.removed_by = event.time, event.actor
        if event.tag == AuditTag.FILE_WITHDRAW:
            record.removal = WITHDRAWN
        elif event.tag == AuditTag.FILE_SUPERSEDE:
            record.removal = SUPERSEDED
        else:
            record.removal = _purge_reason(event.details)
        if event.time <= self.window.start:
            # Gone before the window opened: it was not on the server in it.
            del self._files[record.id]
            self._outside.add(record.id)

    # -- keys -------------------------------------------------------------------------

    def _key_event(self, event: AuditEvent) -> None:
        key_id = _number(event.details, "key_id")
        if key_id is None:
            return
        key = self._keys.setdefault(key_id, _Key(key_id))
        key.partner = _text(event.details, "partner") or key.partner
        key.kind = _text(event.details, "kind") or key.kind
        key.fingerprint = _text(event.details, "fingerprint") or key.fingerprint
        if event.tag == AuditTag.KEY_PROPOSE:
            key.proposed_by = event.actor
        elif event.tag == AuditTag.KEY_APPROVE:
            key.approved_by, key.approved_at = event.actor, event.time
        elif key.revoked_at is None:
            key.revoked_at = event.time

    # -- accounts ---------------------------------------------------------------------

    def _account_event(self, event: AuditEvent) -> None:
        if event.tag == AuditTag.PARTNER_DISABLE:
            slug = _subject_id(event, "partner:")
            if slug is not None:
                self._partner_disabled.setdefault(slug, event.time)
            return
        if event.tag == AuditTag.LOGIN_SUCCESS:
            self._sign_in(event)
            return
        username = _subject_id(event, "account:")
        if username is None:
            return
        account = self._accounts.setdefault(username, _Account(username))
        if event.tag == AuditTag.ACCOUNT_CREATE:
            account.role = _text(event.details, "role")
            account.partner = _text(event.details, "partner")
            account.created_at = event.time
            account.periods = [[event.time, None]]
        elif event.tag == AuditTag.ACCOUNT_DISABLE:
            if account.periods and account.periods[-1][1] is None:
                account.periods[-1][1] = event.time
        elif event.tag == AuditTag.ACCOUNT_ENABLE and (
                not account.periods or account.periods[-1][1] is not None):
            account.periods.append([event.time, None])

    def _sign_in(self, event: AuditEvent) -> None:
        if self.window.holds(event.time):
            self._signed_in(event.actor)

    def _signed_in(self, username: str) -> None:
        account = self._accounts.get(username)
        if account is None:
            # Its creation is not in the log, yet it signed in: it could, then.
            account = self._accounts[username] = _Account(username, periods=[[None, None]])
        account.sign_ins += 1

    # -- the result -------------------------------------------------------------------

    def files(self) -> list[FileExposure]:
        """The files on the server at some moment of the window, by partner and upload."""
        chosen = [record for record in self._files.values()
                  if self.window.overlaps(record.uploaded_at, record.removed_at)]
        for record in chosen:
            if record.undecoded:
                self._decode_downloads(record)
        chosen.sort(key=lambda r: (r.partner, r.uploaded_at is not None,
                                   r.uploaded_at or self.window.start, r.id))
        return [record.value() for record in chosen]

    def stored_objects(self) -> dict[str, tuple[str, str, str]]:
        """Object id -> (file id, partner, name) of every file the log says is stored."""
        return {object_id: (file_id, partner, name)
                for file_id, (object_id, partner, name) in self._stored.items()}

    def accounts(self) -> list[AccountExposure]:
        """The accounts that could sign in at some moment of the window."""
        found = []
        for account in sorted(self._accounts.values(), key=lambda a: a.username):
            if self.partner is not None and account.partner != self.partner and (
                    account.role != "staff"):
                continue
            periods = self._periods(account)
            if any(self.window.overlaps(start, end) for start, end in periods):
                found.append(AccountExposure(account.username, account.role, account.partner,
                                             account.created_at, periods[-1][1],
                                             account.sign_ins))
        return found

    def _periods(self, account: _Account) -> list[tuple[datetime | None, datetime | None]]:
        """Its periods, each cut short when its partner was disabled."""
        cut = self._partner_disabled.get(account.partner) if account.partner else None
        if cut is None:
            return [(start, end) for start, end in account.periods]
        return [(start, cut if end is None else min(end, cut))
                for start, end in account.periods]

    def keys(self) -> list[KeyExposure]:
        """The recipient keys approved in the window."""
        return [KeyExposure(key.id, key.partner or "?", key.kind, key.fingerprint,
                            _post_quantum(key.kind), key.proposed_by, key.approved_by or "?",
                            key.approved_at, key.revoked_at)
                for key in sorted(self._keys.values(), key=lambda k: k.id)
                if key.approved_at is not None and self.window.holds(key.approved_at)
                and (self.partner is None or key.partner == self.partner)]


def _file_subject(leaf: bytes | str) -> str | None:
    """The file id a leaf in the log's usual form names as its subject, else None."""
    if isinstance(leaf, str):
        start = leaf.rfind(',"subject":"file:')
        found = _FILE_SUBJECT_TEXT_END.fullmatch(leaf, start) if start >= 0 else None
        return None if found is None else found[1]
    start = leaf.rfind(b',"subject":"file:')
    found_bytes = _FILE_SUBJECT_END.fullmatch(leaf, start) if start >= 0 else None
    return None if found_bytes is None else found_bytes[1].decode()


def _column_text(moment: datetime) -> str:
    """``moment`` as a time column's text (UTC), to compare with the column as text."""
    utc = moment.astimezone(UTC)
    # Before year 1000 (no leaf's time): before every column text.
    return "0" if utc.year < 1000 else utc.strftime(_COLUMN_TIME)


def _usual_text(text: str, at: int) -> str | None:
    """The string value that starts at ``at`` (after its opening quote) in a usual leaf,
    or None when it holds an escape (it is decoded then)."""
    end = text.find('"', at)
    value = text[at:end]
    return None if end < 0 or "\\" in value else value


def _usual_detail_text(text: str, key: str) -> str | object | None:
    """The string value of details key ``key`` in a usual leaf (None when it is absent
    or not a string, as :func:`_text` says of the decoded details), or ``_ESCAPED``
    when it holds an escape (the leaf is decoded then). See :func:`_usual_integer`."""
    at = max(text.rfind(f',"{key}":'), text.rfind(f'{{"{key}":'))
    if at < 0:
        return None
    start = at + len(key) + 4
    if text[start] != '"':
        return None
    value = _usual_text(text, start + 1)
    return _ESCAPED if value is None else value


def _usual_integer(text: str, key: str) -> int | None:
    """The integer value of details key ``key`` in a usual leaf (None when it is absent
    or not an integer, as :func:`_number` says of the decoded details).

    In the usual form the details are flat, no string holds an unescaped quote and no
    top-level key is a details key's name, so ``,"key":`` or ``{"key":`` is that key;
    the last one is the one decoding keeps."""
    at = max(text.rfind(f',"{key}":'), text.rfind(f'{{"{key}":'))
    if at < 0:
        return None
    found = _INTEGER.match(text, at + len(key) + 4)
    return None if found is None else int(found[0])


def summarise(files: Iterable[FileExposure], *, partner: str | None) -> list[PartnerSummary]:
    """Counts per partner of the files listed (the chosen partner even with none)."""
    files = list(files)
    counts: dict[str, list[int]] = {} if partner is None else {partner: [0] * 6}
    for item in files:
        row = counts.setdefault(item.partner, [0] * 6)
        complete = sum(1 for d in item.downloads if d.complete)
        for position, value in enumerate((1, item.size or 0, complete,
                                          len(item.downloads) - complete,
                                          item.removed_at is not None,
                                          item.removed_at is None)):
            row[position] += int(value)
    data: dict[str, tuple[int, set[str], int, int]] = {}
    for item in files:
        records, elements, unknown, unrecorded = data.get(item.partner, (0, set(), 0, 0))
        if item.data_format is None:
            unrecorded += 1
        elif item.data_elements is None:
            unknown += 1
        else:
            records += item.records or 0
            elements |= set(item.data_elements)
        data[item.partner] = (records, elements, unknown, unrecorded)
    summaries = []
    for slug, row in sorted(counts.items()):
        records, elements, unknown, unrecorded = data.get(slug, (0, set(), 0, 0))
        files_, size, complete, incomplete, removed, waiting = row
        summaries.append(PartnerSummary(slug, files_, size, complete, incomplete, removed,
                                        waiting, records=records,
                                        data_elements=tuple(sorted(elements)),
                                        unknown_structure=unknown, not_recorded=unrecorded))
    return summaries


def _purge_reason(details: dict[str, Any]) -> str:
    reason = _text(details, "reason")
    if reason == "key revoked":
        key_id = _number(details, "key_id")
        return f"revoked: key {key_id}" if key_id is not None else "revoked: key"
    if reason is None:
        return "purged (reason not recorded)"
    if reason.startswith("purged by "):
        return PURGED_BY_ADMIN  # Purged early, from the console or the API.
    return _PURGE_REASONS.get(reason, f"purged: {reason}")
