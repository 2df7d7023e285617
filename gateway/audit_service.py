"""Reading and verifying the audit log on behalf of an actor: the CLI and the console.

:class:`~gateway.audit.AuditLog` records events inside the services' transactions; this
is the other side, with authorization: who may read, verify, prove and export the log.
Filters that the tables do not index (partner, file) are applied to the decoded events,
so a query streams the log once in index order and never loads it whole.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import IO, TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.actors import Actor
from gateway.audit import (
    AuditEvent,
    AuditLog,
    AuditTag,
    NoteVerifier,
    SignedCheckpoint,
    VerifyReport,
    verify_database,
    verify_from,
)
from gateway.audit.checkpoint_file import read_latest_checkpoint
from gateway.audit.cosignature import CosignatureVerifier, require_quorum
from gateway.audit.errors import StaleStateError, VerificationError
from gateway.audit.events import decode_leaf, event_from_document
from gateway.audit.models import AuditEntry
from gateway.audit.proof import TlogProof
from gateway.audit.verified_file import keep_verified_state, read_verified_state
from gateway.audit.verify import EntryReader
from gateway.authz import Permission
from gateway.db.engine import snapshot
from gateway.errors import GatewayError, NotFoundError
from gateway.reconcile import CHECKS, REPLAY, reconcile

if TYPE_CHECKING:
    from gateway.app import App

MAX_DIFFERENCES = 100
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EventFilter:
    """Which events to read; every field that is set must match."""

    tag: AuditTag | None = None
    actor: str | None = None
    partner: str | None = None
    file: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    start: int = 0
    # An account: what it did, and what was done to it.
    user: str | None = None
    # Words that must each appear (case-insensitive) in the actor, subject or tag.
    search: str | None = None

    def matches(self, event: AuditEvent) -> bool:
        """Whether ``event`` passes the filters the database could not apply."""
        if self.actor is not None and event.actor != self.actor:
            return False
        if self.search is not None and not _found(event, self.search):
            return False
        if self.user is not None and not _names_user(event, self.user):
            return False
        if self.partner is not None and not _names_partner(event, self.partner):
            return False
        return self.file is None or _names_file(event, self.file)


def _found(event: AuditEvent, search: str) -> bool:
    fields = f"{event.actor}\n{event.subject}\n{event.tag}".casefold()
    return all(word in fields for word in search.casefold().split())


def _names_user(event: AuditEvent, username: str) -> bool:
    return event.actor == username or event.subject == f"account:{username}"


def _names_partner(event: AuditEvent, slug: str) -> bool:
    return event.details.get("partner") == slug or event.subject == f"partner:{slug}"


def _names_file(event: AuditEvent, file: str) -> bool:
    """A file is named by its transfer id (``file:<id>``) or by its stored name."""
    return event.subject == f"file:{file}" or event.details.get("name") == file


def newest_page(log: AuditLog, session: Session, selection: EventFilter, *,
                before: int | None, size: int) -> tuple[list[AuditEvent], int | None]:
    """:meth:`AuditService.newest` without the permission check (bench/audit.py times it)."""
    # Each of these names appears verbatim in a matching leaf: the database narrows by
    # them before the fields are checked here.
    contains = [*(selection.search or "").split(),
                *(name for name in (selection.actor, selection.user, selection.partner,
                                    selection.file) if name)]
    found: list[AuditEvent] = []
    for event in log.events(session, since=selection.since, until=selection.until,
                            tag=selection.tag, start=selection.start, before=before,
                            newest_first=True, contains=contains, batch=size + 1):
        if not selection.matches(event):
            continue
        if len(found) == size:
            return found, found[-1].index
        found.append(event)
    return found, None


class AuditService:
    """The audit log as admins, auditors and the local operator read it."""

    def __init__(self, app: App) -> None:
        self._app = app

    def events(self, actor: Actor, selection: EventFilter = EventFilter(), *,
               limit: int | None = None) -> Iterator[AuditEvent]:
        """Yield matching events in index order (at most ``limit``)."""
        self._app.authz.require(actor, Permission.AUDIT_READ)
        log, count = self._app.audit, 0
        with snapshot(self._app.engine) as session:
            for event in log.events(session, since=selection.since, until=selection.until,
                                    tag=selection.tag, start=selection.start):
                if not selection.matches(event):
                    continue
                yield event
                count += 1
                if limit is not None and count >= limit:
                    return

    def newest(self, actor: Actor, selection: EventFilter, *, before: int | None = None,
               size: int) -> tuple[list[AuditEvent], int | None]:
        """One page of matching events, newest first, below index ``before``; and the
        ``before`` of the next (older) page, or None when this is the last.

        The database applies what it can (index range, time, tag, and a coarse text match
        for the actor and the search words), so a page costs about its own rows.
        """
        self._app.authz.require(actor, Permission.AUDIT_READ)
        with snapshot(self._app.engine) as session:
            return newest_page(self._app.audit, session, selection, before=before, size=size)

    def page(self, actor: Actor, selection: EventFilter, *, size: int) -> list[AuditEvent]:
        """One page of matching events; the next page starts after the last one's index."""
        return list(self.events(actor, selection, limit=size))

    def verify(self, actor: Actor, *, outside: Sequence[tuple[str, str]] = (),
               verifier: NoteVerifier | None = None,
               witnesses: Sequence[CosignatureVerifier] = (), quorum: int = 0,
               incremental: bool = False) -> VerifyReport:
        """Verify the log, then the database against it.

        The log: its tree, its stored checkpoints, the given outside ones and the one kept
        in the data directory, and the MAC of every entry no checkpoint covers. The
        database: every granting row's seal, and the state the log implies (partners,
        accounts, keys, enrolments, recipient keys, transfers), row by row and field by
        field. ``verifier`` replaces the key in the data directory (one obtained elsewhere).
        With ``witnesses``, the latest checkpoint must carry ``quorum`` valid cosignatures
        from them, and the log is held to the largest checkpoint each of them cosigned
        (stored, and as each configured witness serves it now).
        The outcome is itself recorded (``audit:verify``), so the console can show when
        the log was last verified and whether it passed.

        ``incremental``: the log is verified from where the last successful verification
        ended (kept in ``audit-verified.json`` in the data directory), checking only
        what was appended since; without a usable state, or with another ``verifier``,
        or when the log no longer extends that state, the whole log is verified. The
        database is compared with the whole log either way.
        """
        self._app.authz.require(actor, Permission.AUDIT_READ)
        try:
            if witnesses:
                outside = [*outside, *self._witnessed(witnesses)]
            report = self._verify(actor, outside=outside, verifier=verifier,
                                  incremental=incremental)
            if witnesses:
                self._require_quorum(witnesses, quorum)
        except VerificationError as exc:
            self._record_verification(actor, {"ok": False, "findings": len(exc.problems)})
            raise
        self._record_verification(actor, {"ok": True, "size": report.size,
                                          "outside": report.outside, "from": report.start})
        if verifier is None:
            keep_verified_state(self._app.settings.audit_verified_path, report.state,
                                key=self._app.audit.verifier.key_string())
        return report

    def _witnessed(self, witnesses: Sequence[CosignatureVerifier]) -> list[tuple[str, str]]:
        """The checkpoints the witnesses cosigned: stored, and live from each configured
        witness whose key was given (one that cannot be reached is skipped: the quorum
        check decides)."""
        # The witnessing module is imported where it is used, here and below: it brings
        # the HTTP client, which `audit verify` without --witness has no use for.
        from gateway.audit.witnessing import fetch_witness_checkpoint, witnessed_checkpoints

        with self._app.read() as session:
            found = witnessed_checkpoints(session, witnesses)
        keys = {witness.key_string() for witness in witnesses}
        for endpoint in self._app.settings.witnesses:
            if endpoint.verifier.key_string() not in keys:
                continue
            note = fetch_witness_checkpoint(endpoint.url, self._app.audit.origin,
                                            self._app.settings.audit_witness_timeout_seconds)
            if note is None:
                log.warning("witness %s: its latest checkpoint cannot be fetched",
                            endpoint.name)
                continue
            try:
                require_quorum(note, [endpoint.verifier], 1, label=f"witness {endpoint.name}")
            except VerificationError as exc:
                raise VerificationError(f"witness {endpoint.name} served a checkpoint it "
                                        f"did not cosign: {exc.summary}") from exc
            found.append((f"witness {endpoint.name}'s latest checkpoint", note))
        return found

    def _require_quorum(self, witnesses: Sequence[CosignatureVerifier], quorum: int) -> None:
        from gateway.audit.witnessing import cosigned_note, latest_stored

        with self._app.read() as session:
            latest = latest_stored(session)
            if latest is None:
                raise VerificationError("no checkpoint to require witness cosignatures on")
            note = cosigned_note(session, latest.note)
        require_quorum(note, witnesses, quorum,
                       label=f"the latest checkpoint ({latest.checkpoint.size} entries)")

    def _verify_log(self, session: Session, *, outside: Sequence[tuple[str, str]],
                    verifier: NoteVerifier | None, incremental: bool) -> VerifyReport:
        kept = read_latest_checkpoint(self._app.settings.audit_checkpoint_path)
        chosen = verifier or self._app.audit.verifier
        trusted = read_verified_state(self._app.settings.audit_verified_path,
                                      key=chosen.key_string()) if incremental else None
        if trusted is not None and verifier is None:
            try:
                return verify_from(session, trusted=trusted, verifier=chosen, outside=outside,
                                   entry_keys=self._app.state_keys, kept=kept)
            except StaleStateError as exc:
                log.warning("%s; verifying the whole log", exc.problems[0])
        return verify_database(session, verifier=chosen, outside=outside,
                               entry_keys=self._app.state_keys, kept=kept)

    def _verify(self, actor: Actor, *, outside: Sequence[tuple[str, str]],
                verifier: NoteVerifier | None, incremental: bool) -> VerifyReport:
        with snapshot(self._app.engine) as session:
            report = self._verify_log(session, outside=outside, verifier=verifier,
                                      incremental=incremental)
            events = self._app.audit.events(session, tags=(*REPLAY, *CHECKS))
            problems = [str(d) for d in reconcile(events, session)]
        problems += [str(finding) for finding in self._app.integrity.check(actor).findings]
        if problems:
            shown = problems[:MAX_DIFFERENCES]
            if len(problems) > MAX_DIFFERENCES:
                shown.append(f"... and {len(problems) - MAX_DIFFERENCES} more")
            raise VerificationError(
                f"audit log verified, but the database does not match it: {len(problems)} "
                "finding(s) (events the state then did not allow, rows the log does not imply, "
                "rows that fail their seal or are not current)", shown)
        return report

    def _record_verification(self, actor: Actor, details: dict[str, object]) -> None:
        # Best effort: a log too damaged to append to has just been reported as such by
        # the verification itself, which is what the caller must see.
        try:
            with self._app.transaction() as session:
                self._app.audit.record(session, tag=AuditTag.AUDIT_VERIFY, actor=actor,
                                       subject="audit:log", details=details)
        except GatewayError as exc:
            log.warning("could not record the verification: %s", exc.diagnostics())

    def last_event(self, actor: Actor, tag: AuditTag) -> AuditEvent | None:
        """The newest event with ``tag``, if any."""
        self._app.authz.require(actor, Permission.AUDIT_READ)
        with self._app.read() as session:
            leaf = session.scalar(select(AuditEntry.leaf).where(AuditEntry.tag == tag.value)
                                  .order_by(AuditEntry.idx.desc()).limit(1))
        return decode_leaf(leaf.encode()) if leaf is not None else None

    def event(self, actor: Actor, index: int) -> AuditEvent:
        """Entry ``index`` (for a link to one event)."""
        self._app.authz.require(actor, Permission.AUDIT_READ)
        with self._app.read() as session:
            leaf = session.scalar(select(AuditEntry.leaf).where(AuditEntry.idx == index))
        if leaf is None:
            raise NotFoundError(f"there is no audit entry {index}")
        return decode_leaf(leaf.encode())

    def recent(self, actor: Actor, *, limit: int = 10) -> list[AuditEvent]:
        """The newest ``limit`` events, newest first."""
        self._app.authz.require(actor, Permission.AUDIT_READ)
        with self._app.read() as session:
            leaves = session.scalars(select(AuditEntry.leaf).order_by(AuditEntry.idx.desc())
                                     .limit(limit)).all()
        return [decode_leaf(leaf.encode()) for leaf in leaves]

    def size(self, actor: Actor) -> int:
        """How many entries the log holds."""
        self._app.authz.require(actor, Permission.AUDIT_READ)
        with self._app.read() as session:
            return self._app.audit.size(session)

    def read_verified(self, actor: Actor, read: Callable[[AuditEvent], None] | None, *,
                      tags: Collection[str] | None = None,
                      raw: EntryReader | None = None,
                      outside: Sequence[tuple[str, str]] = (),
                      verifier: NoteVerifier | None = None) -> VerifyReport:
        """Verify the log alone, handing ``read`` every event as it is verified.

        The log is held to the same rules as in :meth:`verify` (tree, stored, outside and
        kept checkpoints, entry MACs); the database is not compared with it, for a
        reader that builds from the log alone (the exposure report). ``read`` gets every
        event (of ``tags``, if given) in index order, from the snapshot being verified
        and in the same pass, so a report over the whole log costs one read of it. The
        verdict comes at the end: if the log fails, this raises
        :class:`~gateway.audit.VerificationError` after ``read`` saw every event, and
        what the caller built from them is unverified. A reader that decodes only some
        entries passes ``raw`` (an :data:`~gateway.audit.verify.EntryReader`) instead.
        """
        self._app.authz.require(actor, Permission.AUDIT_READ)
        kept = read_latest_checkpoint(self._app.settings.audit_checkpoint_path)
        with snapshot(self._app.engine) as session:
            return verify_database(session, verifier=verifier or self._app.audit.verifier,
                                   outside=outside, entry_keys=self._app.state_keys,
                                   kept=kept,
                                   reader=raw if read is None else _event_reader(read, tags))

    def latest_checkpoint(self, actor: Actor) -> SignedCheckpoint | None:
        self._app.authz.require(actor, Permission.AUDIT_READ)
        with self._app.read() as session:
            return self._app.audit.latest_checkpoint(session)

    def checkpoint(self, actor: Actor) -> SignedCheckpoint:
        """A checkpoint of the whole log, signing a new one if the log grew."""
        self._app.authz.require(actor, Permission.AUDIT_CHECKPOINT)
        with self._app.transaction() as session:
            return self._app.audit.checkpoint(session)

    def latest_cosignature_count(self, actor: Actor) -> int | None:
        """How many configured witnesses cosigned the latest checkpoint (None: no witnesses
        are configured). Counts stored rows; ``audit verify --witness`` checks them."""
        self._app.authz.require(actor, Permission.AUDIT_READ)
        keys = [witness.verifier.key_string() for witness in self._app.settings.witnesses]
        if not keys:
            return None
        from gateway.audit.witnessing import count_cosignatures, latest_stored

        with self._app.read() as session:
            latest = latest_stored(session)
            return 0 if latest is None else count_cosignatures(session, latest.id, keys)

    def cosigned_checkpoint(self, actor: Actor) -> str:
        """A checkpoint of the whole log with the witnesses' cosignatures.

        Signs a new checkpoint if the log grew, and asks the witnesses that have not
        cosigned it yet (see :mod:`gateway.audit.witnessing`).
        """
        from gateway.audit.witnessing import cosigned_note, latest_stored

        self.checkpoint(actor)
        self._app.witnessing.cosign_latest()
        with self._app.read() as session:
            latest = latest_stored(session)
            assert latest is not None  # One was just signed.
            return cosigned_note(session, latest.note)

    def prove(self, actor: Actor, index: int) -> str:
        """A self-contained tlog-proof of entry ``index``, carrying the cosignatures.

        Reading a proof may sign a new checkpoint (when the latest does not cover the
        entry yet) and ask the witnesses to cosign it; that is the log's own
        housekeeping, allowed to every reader.
        """
        self._app.authz.require(actor, Permission.AUDIT_READ)
        with self._app.transaction() as session:
            size = self._app.audit.size(session)
            if not 0 <= index < size:
                raise NotFoundError(f"there is no audit entry {index}; the log has {size} "
                                    f"entries (0 to {size - 1})")
            proof = TlogProof.parse(self._app.audit.prove(session, index))
        self._app.witnessing.cosign_latest()
        from gateway.audit.witnessing import cosigned_note

        with self._app.read() as session:
            note = cosigned_note(session, proof.checkpoint_note)
        return replace(proof, checkpoint_note=note).text()

    def export(self, actor: Actor, out: IO[bytes]) -> int:
        """Write every entry as one JSON line; return how many."""
        self._app.authz.require(actor, Permission.AUDIT_READ)
        with snapshot(self._app.engine) as session:
            return self._app.audit.export(session, out)


def _event_reader(read: Callable[[AuditEvent], None],
                  tags: Collection[str] | None) -> EntryReader:
    """Hands ``read`` the well-formed events of ``tags`` among the entries verified."""
    wanted = None if tags is None else frozenset(tags)

    def visit(_index: int, time: datetime, tag: str, leaf: bytes) -> None:
        # The tag column, checked against the leaf by the verification: entries of
        # other tags are never decoded.
        if wanted is not None and tag not in wanted:
            return
        try:
            event = event_from_document(json.loads(leaf), leaf, time=time)
        except ValueError:
            return  # Verification reports a malformed leaf; there is no event to read.
        read(event)

    return visit
