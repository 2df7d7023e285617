"""Retention: expired files are purged, and nothing abandoned outlives a crash.

A file is purged when it expires, when its download limit is reached, or at once when
its partner can no longer receive (its last recipient key revoked, the partner
disabled); its ciphertext is deleted and the purge is audited with the reason. The
sweep also removes what a crash can leave behind, from the objects recorded in
:mod:`gateway.pending_objects`: uploads abandoned mid-way, and objects whose transfer
ended but whose deletion did not finish.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from gateway import pending_objects
from gateway.actors import Actor
from gateway.audit import AuditTag
from gateway.authz import Permission
from gateway.db.models import PendingObject, Transfer, TransferState
from gateway.errors import GatewayError
from gateway.integrity import IntegrityViolationError, is_valid

if TYPE_CHECKING:
    from gateway.app import App

log = logging.getLogger(__name__)

# An upload in progress touches its pending row every minute, so one untouched for this
# long was abandoned by a crash.
UPLOAD_GRACE = timedelta(hours=1)

PURGER = Actor.system("purger")

# Why a file was purged, as file:purge events say it (the exposure report reads them).
EXPIRED = "expired"
DOWNLOAD_LIMIT = "download limit reached"
KEY_REVOKED = "key revoked"
PARTNER_DISABLED = "partner disabled"


@dataclass(frozen=True)
class PurgeReport:
    """What one purge run removed."""

    purged: int
    swept: int
    partials: int = 0
    orphans: int = 0


class RetentionService:
    """Purge expired or used-up files and sweep crash leftovers."""

    def __init__(self, app: App) -> None:
        self._app = app

    def purge(self, actor: Actor = PURGER, *, upload_grace: timedelta = UPLOAD_GRACE,
              full: bool = False) -> PurgeReport:
        """Run one purge pass; safe to run concurrently on several nodes.

        ``full`` also lists the whole store for partial and unreferenced objects (for a
        store written before pending objects were recorded, or after a restore).
        """
        self._app.authz.require(actor, Permission.FILE_PURGE)
        purged = self._purge_transfers(actor)
        swept = pending_objects.sweep(self._app, upload_grace=upload_grace)
        if not full:
            return PurgeReport(purged, swept)
        older_than = self._app.clock() - upload_grace
        partials = self._app.store.sweep_partials(older_than=older_than)
        return PurgeReport(purged, swept, len(partials), self._sweep_orphans(older_than))

    def _purge_transfers(self, actor: Actor) -> int:
        now, purged = self._app.clock(), []
        due = or_(Transfer.expires_at <= now,
                  and_(Transfer.max_downloads.is_not(None),
                       Transfer.downloads >= Transfer.max_downloads))
        with self._app.transaction() as session:
            rows = list(session.scalars(select(Transfer).where(
                Transfer.state == TransferState.AVAILABLE, due)))
            for row in rows:
                reason = EXPIRED if row.expires_at <= now else DOWNLOAD_LIMIT
                if purge_file(self._app, session, row, actor=actor, reason=reason, now=now):
                    purged.append(row.object_id)
        delete_purged(self._app, purged)
        return len(purged)

    def _sweep_orphans(self, older_than: datetime) -> int:
        with self._app.read() as session:
            live = set(session.scalars(select(Transfer.object_id).where(
                Transfer.state == TransferState.AVAILABLE)))
            live |= set(session.scalars(select(PendingObject.object_id).where(
                PendingObject.purpose == pending_objects.UPLOAD)))
        removed = 0
        for info in self._app.store.list_objects():
            if info.object_id not in live and info.modified_at < older_than:
                self._app.store.delete(info.object_id)
                removed += 1
        return removed


def purge_file(app: App, session: Session, row: Transfer, *, actor: Actor, reason: str,
               now: datetime, details: Mapping[str, object] | None = None) -> bool:
    """Purge one available file in the caller's transaction and audit why.

    One conditional UPDATE per file: when two nodes purge at once, each file is purged
    (and audited) by exactly one of them. Returns whether this call purged it; the
    caller deletes the object after its commit (:func:`delete_purged`).
    """
    taken = session.execute(update(Transfer).where(
        Transfer.id == row.id, Transfer.state == TransferState.AVAILABLE)
        .values(state=TransferState.PURGED)
        .execution_options(synchronize_session=False))
    if taken.rowcount != 1:  # type: ignore[attr-defined]  # A CursorResult.
        return False
    _reseal_purged(app, session, row)
    pending_objects.note_deletion(session, row.object_id, now=now)
    app.audit.record(session, tag=AuditTag.FILE_PURGE, actor=actor, subject=f"file:{row.id}",
                     details={"partner": row.partner.slug, "name": row.name, "reason": reason,
                              "size": row.size, "sha256": row.sha256, **(details or {})})
    return True


def _reseal_purged(app: App, session: Session, row: Transfer) -> None:
    """Seal a purged row's new state, if the gateway wrote the old one.

    A forged row is purged all the same (that takes access away), but keeps its
    invalid seal, so `blindpost integrity check` still reports it.
    """
    if is_valid(app.state_keys, row):
        row.state = TransferState.PURGED  # The ORM change re-seals the row.
    else:
        app.integrity.record(session, IntegrityViolationError("transfers", row.id,
                                                              "seal does not match"))


def purge_waiting(app: App, session: Session, *, partner_id: int, actor: Actor, reason: str,
                  details: Mapping[str, object] | None = None) -> list[str]:
    """Purge every file waiting for a partner, in the caller's transaction.

    For a partner that can no longer receive: its last key revoked, or it is disabled.
    Returns the objects to delete once the caller's transaction has committed.
    """
    now = app.clock()
    rows = list(session.scalars(select(Transfer).where(
        Transfer.partner_id == partner_id, Transfer.state == TransferState.AVAILABLE)
        .order_by(Transfer.created_at, Transfer.id)))
    return [row.object_id for row in rows if purge_file(
        app, session, row, actor=actor, reason=reason, now=now, details=details)]


def delete_purged(app: App, object_ids: Iterable[str]) -> None:
    """Delete purged objects after their rows committed.

    What fails here stays recorded as pending and the purger's sweep deletes it.
    """
    for object_id in object_ids:
        try:
            pending_objects.delete_now(app, object_id)
        except GatewayError as exc:
            log.warning("could not delete purged object %s (%s); will retry",
                        object_id, exc.diagnostics())
