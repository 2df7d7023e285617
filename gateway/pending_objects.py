"""Store objects that may outlive their purpose, recorded so a crash leaves none behind.

The store and the database cannot commit together. So before an upload writes to the
store its object id is recorded here, and the transaction that ends a transfer (purge,
withdrawal, supersede) records its object for deletion. Whoever finishes the step
removes the row; rows left by a crash are found by :func:`sweep`, which needs no listing
of the store (a bucket may hold millions of objects).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from gateway.db.models import PendingObject, Transfer, TransferState
from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.app import App

log = logging.getLogger(__name__)

UPLOAD = "upload"
DELETE = "delete"
# An upload in progress touches its row at least this often.
HEARTBEAT = timedelta(minutes=1)


def note_upload(app: App, object_id: str) -> None:
    """Record an upload's object before its first byte reaches the store."""
    with app.transaction() as session:
        session.add(PendingObject(object_id=object_id, purpose=UPLOAD, touched_at=app.clock()))


def touch(app: App, object_id: str) -> None:
    """Show that an upload is still going, so the sweep leaves its object alone."""
    with app.transaction() as session:
        session.execute(update(PendingObject).where(PendingObject.object_id == object_id)
                        .values(touched_at=app.clock()))


def note_deletion(session: Session, object_id: str, *, now: datetime) -> None:
    """Record, in the caller's transaction, that an object is to be deleted."""
    row = session.get(PendingObject, object_id)
    if row is None:
        session.add(PendingObject(object_id=object_id, purpose=DELETE, touched_at=now))
    else:
        row.purpose, row.touched_at = DELETE, now


def settled(session: Session, object_id: str) -> None:
    """Forget an object, in the caller's transaction (its upload committed, or it is gone)."""
    session.execute(delete(PendingObject).where(PendingObject.object_id == object_id))


def delete_now(app: App, object_id: str) -> None:
    """Delete an object recorded for deletion, then forget it (the sweep retries failures)."""
    app.store.delete(object_id)
    with app.transaction() as session:
        settled(session, object_id)


def sweep(app: App, *, upload_grace: timedelta) -> int:
    """Delete the objects of stale rows: uploads untouched for ``upload_grace`` and every
    deletion; return how many objects were removed.

    Safe on several nodes at once: deleting an object twice is harmless, and an object
    that an available transfer references is never deleted.
    """
    now = app.clock()
    with app.read() as session:
        rows = list(session.execute(select(PendingObject.object_id, PendingObject.purpose,
                                           PendingObject.touched_at)))
        live = set(session.scalars(select(Transfer.object_id).where(
            Transfer.state == TransferState.AVAILABLE,
            Transfer.object_id.in_([row.object_id for row in rows]))))
    removed = 0
    for object_id, purpose, touched_at in rows:
        if purpose == UPLOAD and touched_at > now - upload_grace:
            continue
        try:
            if object_id not in live and app.store.delete(object_id):
                removed += 1
        except GatewayError as exc:
            # The row stays, so the next pass tries again.
            log.warning("could not delete leftover object %s (%s); will retry",
                        object_id, exc.diagnostics())
            continue
        with app.transaction() as session:
            settled(session, object_id)
    return removed


def is_due(last: datetime, now: datetime) -> bool:
    """Whether an upload that last touched its row at ``last`` should touch it again."""
    return now - last >= HEARTBEAT
