"""Retention: expired files are purged, and nothing abandoned outlives a crash.

A file is purged when it expires or when its download limit is reached; its ciphertext
is deleted and the purge is audited. The sweep also removes what a crash can leave
behind: partial objects of aborted uploads and committed objects that no transfer row
references (the store commits before the database does).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import and_, or_, select

from gateway.actors import Actor
from gateway.audit import AuditTag
from gateway.db.models import Transfer, TransferState

if TYPE_CHECKING:
    from gateway.app import App

# An upload in progress writes at least this often, so older partials are abandoned.
PARTIAL_GRACE = timedelta(hours=1)
# A committed object gets its row within this time, so older unreferenced ones are orphans.
ORPHAN_GRACE = timedelta(minutes=10)

PURGER = Actor.system("purger")


@dataclass(frozen=True)
class PurgeReport:
    """What one purge run removed."""

    purged: int
    partials: int
    orphans: int


class RetentionService:
    """Purge expired or used-up files and sweep crash leftovers."""

    def __init__(self, app: App) -> None:
        self._app = app

    def purge(self, *, partial_grace: timedelta = PARTIAL_GRACE,
              orphan_grace: timedelta = ORPHAN_GRACE) -> PurgeReport:
        """Run one purge pass; safe to run concurrently on several nodes."""
        purged = self._purge_transfers()
        now = self._app.clock()
        partials = self._app.store.sweep_partials(older_than=now - partial_grace)
        orphans = self._sweep_orphans(older_than=now - orphan_grace)
        return PurgeReport(purged, len(partials), orphans)

    def _purge_transfers(self) -> int:
        now, count = self._app.clock(), 0
        due = or_(Transfer.expires_at <= now,
                  and_(Transfer.max_downloads.is_not(None),
                       Transfer.downloads >= Transfer.max_downloads))
        with self._app.transaction() as session:
            rows = list(session.scalars(select(Transfer).where(
                Transfer.state == TransferState.AVAILABLE, due)))
            for row in rows:
                row.state = TransferState.PURGED
                reason = "expired" if row.expires_at <= now else "download limit reached"
                self._app.audit.record(session, tag=AuditTag.FILE_PURGE, actor=PURGER.name,
                                       subject=f"file:{row.id}",
                                       details={"name": row.name, "reason": reason,
                                                "size": row.size, "sha256": row.sha256})
                count += 1
        # Ciphertext goes after the rows are committed; a crash in between leaves orphans,
        # which the next pass removes.
        for row in rows:
            self._app.store.delete(row.object_id)
        return count

    def _sweep_orphans(self, *, older_than: datetime) -> int:
        with self._app.transaction() as session:
            live = set(session.scalars(select(Transfer.object_id).where(
                Transfer.state == TransferState.AVAILABLE)))
        removed = 0
        for info in self._app.store.list_objects():
            if info.object_id not in live and info.modified_at < older_than:
                self._app.store.delete(info.object_id)
                removed += 1
        return removed
