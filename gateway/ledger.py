"""Current state: the latest version of every granting row, as the audit log records it.

A seal (:mod:`gateway.integrity`) proves that the gateway wrote a row once, not that the
row is still the one in force. A database writer who kept an earlier copy — a recipient
key while it was approved, an account before it was disabled, a TOTP secret before its
reset — can put it back, seal and all, and can delete the rows that record restrictions.
The audit log is what such a writer cannot roll back: its entries carry MACs under the
state key, the latest checkpoint is kept on disk, and each process remembers how far it
has read. So the log decides which version of a row is current:

* every flush that writes or deletes a sealed row appends a ``state:seal`` event naming
  each row and a digest of its granting fields (``-`` for a deleted row); a flush that
  changes or deletes an existing row is also covered by a checkpoint in the same
  transaction, so cutting it from the log's tail afterwards fails against the kept
  checkpoint (:mod:`gateway.integrity` records them);
* each process follows the log (:meth:`Ledger.catch_up`): it reads the entries after the
  last one it saw, refuses a log shorter than what it or the kept checkpoint saw, a gap,
  or an entry whose MAC fails, and keeps the latest digest of each row;
* a sealed row grants only if its digest is the latest one (:meth:`Ledger.stale`);
* restrictions are kept from the log too, so deleting or resetting the rows that count
  them lifts nothing (:class:`Restrictions`).

A process does not replay the log at every start: what it follows is kept in a snapshot
file beside the database, MAC'd with the state key and bound to the log entry it ends
at; a process starts from it and reads only the entries after it. Without a usable
snapshot (a new node, a rotated key) the whole log is replayed once, through full
verification (:func:`gateway.audit.verify.verify_database`).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.orm import Session

from gateway.audit import AuditTag
from gateway.audit.checkpoint_file import read_latest_checkpoint
from gateway.audit.events import parse_time
from gateway.audit.log import entries, first_appended
from gateway.audit.note import Checkpoint, unverified_text
from gateway.db.engine import reader
from gateway.state_keys import StateKeys

log = logging.getLogger(__name__)

REMOVED = "-"
# Rows per state:seal event, so a leaf stays well under the log's size limit.
ROWS_PER_EVENT = 250
# A process rewrites its snapshot once it has read this many entries beyond it.
SNAPSHOT_EVERY = 20_000
# ... and at once after a single follow of more than this many (a whole-log replay, or a
# long absence): a short-lived process, a command line that never closes the app, would
# otherwise leave the next one to pay for the same replay.
LONG_FOLLOW = 10_000
SNAPSHOT_VERSION = 1
RUNBOOK = "deploy/runbooks/backup-and-restore.md"
# How many of an account's latest address codes (notify:verify:sent) are kept: the
# notification service's allowance per hour (gateway.notify.service.VERIFY_SENDS).
ADDRESS_CODES_KEPT = 3

RowKey = tuple[str, str]
# Kept in a session's info: what its transaction recorded (gateway.integrity), and that
# this ledger caught up for it.
PENDING_ROWS = "blindpost.state_pending"
_CAUGHT_UP = "blindpost.ledger.caught_up"


def row_digest(message: bytes) -> str:
    """The digest of a row's sealed message (table and granting fields) as the log keeps
    it: 128 bits of SHA-256. Not keyed, so rotating the state key changes no digest."""
    return base64.urlsafe_b64encode(hashlib.sha256(message).digest()[:16]).decode().rstrip("=")


def encode_row(table: str, row: str, digest: str) -> str:
    """One row of a ``state:seal`` event: ``table/row/digest``."""
    return f"{table}/{row}/{digest}"


def _decode_row(text: str) -> tuple[RowKey, str] | None:
    table, _, rest = text.partition("/")
    row, _, digest = rest.rpartition("/")
    if not table or not row or not digest:
        return None
    return (table, row), digest


class LogRolledBackError(Exception):
    """The audit log is shorter, has a gap, or holds an entry without a valid MAC."""


@dataclass(frozen=True)
class Version:
    """The latest digest of one row, where the log recorded it, and the one it replaced."""

    digest: str
    index: int
    previous: str | None = None


@dataclass
class Restrictions:
    """What limits grants, kept from the log so that resetting a row lifts nothing.

    ``steps``: the last TOTP step each account used (by account id); ``locks``: blocks
    in force until an unlock (``account:NAME`` or ``source:ADDR``); ``guesses``: wrong
    codes counted against an account since its last success or unlock, with the time of
    the last; ``downloads``: complete downloads of each file; ``served``: bytes served of
    each file to each account; ``address_codes``: when the latest codes confirming a
    notification address were mailed for each account (by name, oldest first).
    """

    steps: dict[str, int] = field(default_factory=dict)
    locks: dict[str, str] = field(default_factory=dict)
    guesses: dict[str, tuple[int, str]] = field(default_factory=dict)
    downloads: dict[str, int] = field(default_factory=dict)
    served: dict[str, int] = field(default_factory=dict)
    address_codes: dict[str, list[str]] = field(default_factory=dict)


# The tags whose entries change the followed state (the others are read, MAC-checked and
# counted, not decoded).
FOLLOWED_TAGS = frozenset({
    AuditTag.STATE_SEAL, AuditTag.STATE_BASELINE, AuditTag.TOTP_USE, AuditTag.LOCKOUT,
    AuditTag.ACCOUNT_UNLOCK, AuditTag.SOURCE_UNBLOCK, AuditTag.LOGIN_FAILURE,
    AuditTag.STEP_UP_FAILURE, AuditTag.LOGIN_SUCCESS, AuditTag.STEP_UP_SUCCESS,
    AuditTag.DOWNLOAD_COMPLETE, AuditTag.DOWNLOAD_INCOMPLETE, AuditTag.FILE_PURGE,
    AuditTag.NOTIFY_VERIFY_SENT})


def _subject_name(subject: str) -> str:
    return subject.partition(":")[2]


def _apply_restriction(limits: Restrictions, tag: str, subject: str, actor: str,
                       details: Mapping[str, Any], time: str) -> None:
    if tag == AuditTag.TOTP_USE:
        account, step = str(details.get("account_id")), details.get("step")
        if isinstance(step, int) and step > limits.steps.get(account, -1):
            limits.steps[account] = step
    elif tag == AuditTag.LOCKOUT and isinstance(details.get("until"), str):
        limits.locks[subject] = details["until"]
    elif tag in (AuditTag.ACCOUNT_UNLOCK, AuditTag.SOURCE_UNBLOCK):
        limits.locks.pop(subject, None)
        limits.guesses.pop(_subject_name(subject), None)
    elif tag in (AuditTag.LOGIN_FAILURE, AuditTag.STEP_UP_FAILURE):
        if "account" in (details.get("counted") or ()):
            name = _subject_name(subject)
            count = limits.guesses.get(name, (0, time))[0]
            limits.guesses[name] = (count + 1, time)
    elif tag in (AuditTag.LOGIN_SUCCESS, AuditTag.STEP_UP_SUCCESS):
        limits.guesses.pop(_subject_name(subject), None)
    elif tag in (AuditTag.DOWNLOAD_COMPLETE, AuditTag.DOWNLOAD_INCOMPLETE):
        _served(limits, tag, _subject_name(subject), actor, details)
    elif tag == AuditTag.FILE_PURGE:
        limits.downloads.pop(_subject_name(subject), None)
    elif tag == AuditTag.NOTIFY_VERIFY_SENT:
        sent = limits.address_codes.setdefault(_subject_name(subject), [])
        sent.append(time)
        del sent[:-ADDRESS_CODES_KEPT]


def _served(limits: Restrictions, tag: str, transfer: str, actor: str,
            details: Mapping[str, Any]) -> None:
    if tag == AuditTag.DOWNLOAD_COMPLETE:
        limits.downloads[transfer] = limits.downloads.get(transfer, 0) + 1
    served = details.get("served")
    if isinstance(served, int) and served > 0:
        key = f"{transfer}/{actor}"
        limits.served[key] = limits.served.get(key, 0) + served


class LedgerState:
    """The followed state: row versions and restrictions up to ``size`` entries."""

    def __init__(self) -> None:
        self.size = 0
        # The MAC of the last entry applied: the next read checks it is still there.
        self.last_mac: str | None = None
        self.rows: dict[RowKey, Version] = {}
        self.limits = Restrictions()
        # Set once the log holds a state:baseline: from then on a row the log never
        # named is not current (see Ledger.ensure_baseline).
        self.baseline = False

    def apply(self, index: int, document: Mapping[str, Any]) -> None:
        """Apply one entry's decoded leaf."""
        tag, details = document.get("tag"), document.get("details")
        if not isinstance(tag, str) or not isinstance(details, dict):
            return
        if tag in (AuditTag.STATE_SEAL, AuditTag.STATE_BASELINE):
            self._apply_rows(index, details.get("rows") or (),
                             keep_known=tag == AuditTag.STATE_BASELINE)
            if tag == AuditTag.STATE_BASELINE and details.get("complete"):
                self.baseline = True
            return
        _apply_restriction(self.limits, tag, str(document.get("subject", "")),
                           str(document.get("actor", "")), details,
                           str(document.get("time", "")))

    def _apply_rows(self, index: int, rows: Iterable[object], *, keep_known: bool) -> None:
        for text in rows:
            decoded = _decode_row(text) if isinstance(text, str) else None
            if decoded is None:
                continue
            key, digest = decoded
            known = self.rows.get(key)
            # A baseline never overrides what the log already said about a row: writing
            # a second one cannot make an old copy current again.
            if keep_known and known is not None:
                continue
            self.rows[key] = Version(digest, index, known.digest if known else None)

    def judge(self, key: RowKey, digest: str) -> Staleness | None:
        """Why the row ``key`` with ``digest`` is not the current version, or None."""
        version = self.rows.get(key)
        if version is None:
            if not self.baseline:
                return None
            return Staleness("not current: the audit log has no record of this row")
        if version.digest == digest:
            return None
        older = (f"not current: an older version (the current one was recorded at audit "
                 f"entry {version.index})")
        if version.previous == digest:
            # The version just before the current one: either the change committed while
            # the caller held the row, or an old copy was put back. The caller tells
            # them apart by reading the row again.
            return Staleness(older, transient=True)
        if version.digest == REMOVED:
            return Staleness(f"not current: removed at audit entry {version.index}")
        return Staleness(older)

    def as_document(self) -> dict[str, Any]:
        return {"size": self.size, "last_mac": self.last_mac, "baseline": self.baseline,
                "rows": {f"{t}/{r}": [v.digest, v.index] for (t, r), v in self.rows.items()},
                "limits": {"steps": self.limits.steps, "locks": self.limits.locks,
                           "guesses": {k: list(v) for k, v in self.limits.guesses.items()},
                           "downloads": self.limits.downloads, "served": self.limits.served,
                           "address_codes": self.limits.address_codes}}

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> LedgerState:
        state = cls()
        state.size = int(document["size"])
        state.last_mac = document.get("last_mac")
        state.baseline = bool(document["baseline"])
        for text, (digest, index) in document["rows"].items():
            table, _, row = text.partition("/")
            state.rows[(table, row)] = Version(str(digest), int(index))
        limits = document["limits"]
        state.limits = Restrictions(
            steps={str(k): int(v) for k, v in limits["steps"].items()},
            locks={str(k): str(v) for k, v in limits["locks"].items()},
            guesses={str(k): (int(v[0]), str(v[1])) for k, v in limits["guesses"].items()},
            downloads={str(k): int(v) for k, v in limits["downloads"].items()},
            served={str(k): int(v) for k, v in limits["served"].items()},
            # Absent from a snapshot written before codes were followed: at worst the
            # codes of the hour before the upgrade go uncounted.
            address_codes={str(k): [str(t) for t in v]
                           for k, v in limits.get("address_codes", {}).items()})
        return state


@dataclass(frozen=True)
class Staleness:
    """Why a row is not the current version. ``transient``: it is the version just before
    the current one, which a request that read the row just before the change also holds
    (then no forgery; see :meth:`gateway.integrity.Integrity.verify`)."""

    reason: str
    transient: bool = False


Bootstrap = Callable[[Callable[[int, Mapping[str, Any]], None]], int]


class Ledger:
    """One process's view of the current state, following the audit log.

    ``bootstrap`` replays the whole log through full verification, handing each entry's
    decoded leaf to the callback, and returns the log size it verified; it runs only
    when no usable snapshot exists.
    """

    def __init__(self, *, engine: Engine, keys: Callable[[], StateKeys],
                 checkpoint_file: Path, snapshot_file: Path, bootstrap: Bootstrap) -> None:
        self._engine = reader(engine)
        self._keys = keys
        self._checkpoint_file = checkpoint_file
        self.snapshot_file = snapshot_file
        self._bootstrap = bootstrap
        self._lock = threading.RLock()
        self._state: LedgerState | None = None
        self._snapshot_size = 0
        self._kept: tuple[int, int, int] | None = None  # (mtime_ns, file size, log size)
        self._broken: str | None = None

    # -- following the log -------------------------------------------------------

    @property
    def state(self) -> LedgerState:
        """The followed state, caught up with the log; raise :class:`LogRolledBackError`."""
        return self.fresh(None)

    def fresh(self, session: Session | None) -> LedgerState:
        """The followed state, caught up once per database transaction of the caller's:
        every request reads what was committed before it began, and no more often.

        The entries are read on the caller's own connection, sparing a second connection
        per request; once its transaction has appended entries, only those before its
        first are read (the rest are not committed, so they are not followed)."""
        if session is None:
            self.catch_up()
        elif session.info.get(_CAUGHT_UP) is not self:
            self.catch_up(session.connection(), before=first_appended(session))
            session.info[_CAUGHT_UP] = self
        assert self._state is not None
        if self._broken is not None:
            raise LogRolledBackError(self._broken)
        return self._state

    def catch_up(self, connection: Connection | None = None, *,
                 before: int | None = None) -> int:
        """Read the entries appended since the last call (on ``connection``, or one of its
        own), up to entry ``before`` if given; return the log size followed."""
        if connection is not None:
            with self._lock:
                if self._follow(connection, before=before, judge_absence=False):
                    return self._after_follow()
        # The caller's connection may see an older snapshot than what this process has
        # already read: a log shorter than that is judged on a connection of the
        # ledger's own, which sees everything committed. It is checked out before the
        # lock is taken. A thread that waits for a pooled connection must not hold the
        # lock: a writer holding the database's write lock may be waiting for it while
        # every pooled connection is held by a thread waiting for that write lock, a
        # deadlock only SQLite's 30 s busy timeout ended, by failing sign-ins.
        with self._engine.connect() as own, self._lock:
            self._follow(own, before=before, judge_absence=True)
            return self._after_follow()

    def _follow(self, connection: Connection, *, before: int | None,
                judge_absence: bool) -> bool:
        """Apply what ``connection`` sees beyond the followed state (the lock held);
        False if it does not see the last entry read and ``judge_absence`` is off."""
        if self._broken is not None:
            raise LogRolledBackError(self._broken)
        try:
            if self._state is None:
                self._start()
            return self._read_new(self._followed(), connection, before=before,
                                  judge_absence=judge_absence)
        except LogRolledBackError as exc:
            self._broken = str(exc)
            log.error("current state cannot be followed: %s", exc)
            raise

    def _after_follow(self) -> int:
        """The followed log size, the snapshot saved first if it lags by more than
        LONG_FOLLOW entries (the lock held)."""
        size = self._followed().size
        if size - self._snapshot_size > LONG_FOLLOW:
            self.save_snapshot()
        return size

    def _followed(self) -> LedgerState:
        assert self._state is not None
        return self._state

    def _start(self) -> None:
        state = self._load_snapshot()
        # What the snapshot file covers: nothing when the whole log is replayed.
        self._snapshot_size = 0 if state is None else state.size
        if state is None:
            state = LedgerState()
            state.size = self._bootstrap(state.apply)
            state.last_mac = self._entry_mac(state.size - 1) if state.size else None
            log.info("current state replayed from the whole audit log (%d entries)",
                     state.size)
        self._state = state

    def _read_new(self, state: LedgerState, connection: Connection, *, before: int | None,
                  judge_absence: bool) -> bool:
        """Apply the entries ``connection`` sees beyond ``state`` (and before entry
        ``before``); False if it does not see the last entry read (and ``judge_absence``
        is off: the caller asks again)."""
        kept = self._kept_size()
        keys = self._keys()
        start = state.size
        # One query: the entry read last (it must still be there, as it was) and any after.
        query = select(entries.c.idx, entries.c.leaf, entries.c.mac).where(
            entries.c.idx >= max(start - 1, 0)).order_by(entries.c.idx)
        if before is not None:
            query = query.where(entries.c.idx < before)
        rows = connection.execute(query).all()
        if start > 0:
            if not rows or rows[0].idx != start - 1:
                if not judge_absence:
                    return False
                raise LogRolledBackError(self._shorter(
                    rows[0].idx if rows else 0, start, "this process read"))
            if rows[0].mac != state.last_mac:
                raise LogRolledBackError(f"audit entry {start - 1} is not the one this "
                                         "process read: the log was rewritten")
            rows = rows[1:]
        for idx, leaf, mac in rows:
            if idx != state.size:
                raise LogRolledBackError(
                    f"audit entries {state.size} to {idx - 1} are missing (deleted)")
            data = leaf.encode()
            if not mac or not keys.check_mac("audit", idx.to_bytes(8, "big") + data, mac):
                raise LogRolledBackError(f"audit entry {idx} does not carry a valid MAC: "
                                         "it was written or changed without the state key")
            state.apply(idx, json.loads(data))
            state.size, state.last_mac = idx + 1, mac
        if state.size < kept:
            if not judge_absence:
                return False
            raise LogRolledBackError(self._shorter(state.size, kept,
                                                   "the checkpoint kept on disk covers"))
        if state.size - self._snapshot_size >= SNAPSHOT_EVERY:
            self.save_snapshot()
        return True

    @staticmethod
    def _shorter(size: int, seen: int, who: str) -> str:
        return (f"the audit log holds {size} entries but {who} {seen}: the database was "
                f"rolled back or restored from an older backup. It is not served; see "
                f"{RUNBOOK} (restore) for a restore made on purpose")

    def _kept_size(self) -> int:
        """The size of the checkpoint kept on disk, re-read only when the file changed."""
        try:
            status = self._checkpoint_file.stat()
        except FileNotFoundError:
            return 0
        if self._kept is not None and self._kept[:2] == (status.st_mtime_ns, status.st_size):
            return self._kept[2]
        note = read_latest_checkpoint(self._checkpoint_file)
        size = Checkpoint.parse(unverified_text(note)).size if note else 0
        self._kept = (status.st_mtime_ns, status.st_size, size)
        return size

    # -- what grants ---------------------------------------------------------------

    def stale(self, table: str, row: str, digest: str,
              session: Session | None = None) -> Staleness | None:
        """Why the row ``table/row`` with ``digest``, read in ``session``, is not the
        current version, or None. What the session's own, uncommitted transaction wrote
        is current to it (see :func:`gateway.integrity.record_rows`)."""
        key = (table, row)
        pending: Mapping[RowKey, str] = session.info.get(PENDING_ROWS, {}) if session else {}
        if key in pending:
            return None if pending[key] == digest else Staleness(
                "changed in this transaction", transient=True)
        return self.fresh(session).judge(key, digest)

    def totp_step(self, account_id: int, session: Session | None = None) -> int:
        """The last TOTP step ``account_id`` used, per the log (-1 if none)."""
        return self.fresh(session).limits.steps.get(str(account_id), -1)

    def locked_until(self, subject: str, now: datetime,
                     session: Session | None = None) -> datetime | None:
        """When the block on ``subject`` (``account:NAME``/``source:ADDR``) ends, per the
        log, if one is in force at ``now``."""
        until = self.fresh(session).limits.locks.get(subject)
        if until is None:
            return None
        moment = datetime.fromisoformat(until)
        return moment if moment > now else None

    def guesses(self, username: str, *, now: datetime, forget_after: timedelta,
                session: Session | None = None) -> int:
        """Wrong codes counted against ``username`` that still count at ``now``."""
        count, last = self.fresh(session).limits.guesses.get(username, (0, ""))
        if not count or parse_time(last) < now - forget_after:
            return 0
        return count

    def downloads(self, transfer_id: str, session: Session | None = None) -> int:
        """Complete downloads of a file, per the log."""
        return self.fresh(session).limits.downloads.get(transfer_id, 0)

    def served(self, transfer_id: str, username: str, session: Session | None = None) -> int:
        """Bytes of a file served to an account, per the log."""
        return self.fresh(session).limits.served.get(f"{transfer_id}/{username}", 0)

    def address_codes(self, username: str, session: Session | None = None) -> list[datetime]:
        """When the latest codes confirming a notification address were mailed for
        ``username``, oldest first (at most :data:`ADDRESS_CODES_KEPT`), per the log."""
        times = self.fresh(session).limits.address_codes.get(username, [])
        return [parse_time(time) for time in times]

    # -- snapshot ------------------------------------------------------------------

    def save_snapshot(self) -> None:
        """Write the followed state to the snapshot file (if it covers more entries).

        The file is replaced atomically, 0600, and belongs to the data directory's owner
        even when written by root (an operator's command): the service, running as that
        owner, must be able to read and replace it. A file that cannot be written is
        logged and skipped; the next process replays the log again, nothing is lost.
        """
        with self._lock:
            state = self._state
            if state is None or self._broken is not None or state.size == 0:
                return
            if state.last_mac is None:
                return
            document = state.as_document()
            document["version"] = SNAPSHOT_VERSION
            body = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
            keys = self._keys()
            text = json.dumps({"mac": keys.mac("audit", b"ledger-snapshot\n" + body),
                               "body": body.decode()})
            try:
                _replace_if_larger(self.snapshot_file, text, state.size)
            except OSError as exc:
                log.warning("the current-state snapshot %s could not be saved (%s); the next "
                            "process replays the log", self.snapshot_file, exc)
                return
            self._snapshot_size = state.size

    def _load_snapshot(self) -> LedgerState | None:
        try:
            text = self.snapshot_file.read_text(encoding="utf-8")
            wrapper = json.loads(text)
            body = wrapper["body"].encode()
            if not self._keys().check_mac("audit", b"ledger-snapshot\n" + body,
                                          wrapper["mac"]):
                log.warning("%s does not verify with the state key; replaying the log",
                            self.snapshot_file)
                return None
            document = json.loads(body)
            if document.get("version") != SNAPSHOT_VERSION:
                return None
            state = LedgerState.from_document(document)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s is unreadable (%s); replaying the log", self.snapshot_file, exc)
            return None
        found = self._entry_mac(state.size - 1)
        if found is None or found != document.get("last_mac"):
            raise LogRolledBackError(
                f"the audit log does not hold entry {state.size - 1} as this node last "
                f"saw it ({self.snapshot_file}): the database was rolled back, replaced or "
                f"restored from an older backup. It is not served; see {RUNBOOK} (restore)")
        return state

    def _entry_mac(self, index: int) -> str | None:
        with self._engine.connect() as connection:
            value = connection.execute(select(entries.c.mac).where(entries.c.idx == index)
                                       ).scalar()
        return str(value) if value else None


def _replace_if_larger(path: Path, text: str, size: int) -> None:
    owner = path.parent.stat()
    lock = os.open(path.with_name(path.name + ".lock"),
                   os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        _give_to(lock, owner)
        # Every process of a node writes the same file; none may replace a newer one.
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            current = json.loads(json.loads(path.read_text(encoding="utf-8"))["body"])
            if int(current["size"]) > size:
                return
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            pass
        temporary = path.with_name(path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            _give_to(fd, owner)
            handle.write(text)
        temporary.replace(path)
    finally:
        os.close(lock)


def _give_to(fd: int, owner: os.stat_result) -> None:
    """Make the open file ``fd`` belong to the owner of the data directory, when this
    process is root and they differ: a file root left there (the lock, the snapshot)
    would be one the service, running as that owner, cannot read or replace."""
    if os.geteuid() == 0 and os.fstat(fd).st_uid != owner.st_uid:
        os.fchown(fd, owner.st_uid, owner.st_gid)
