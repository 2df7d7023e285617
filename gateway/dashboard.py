"""The console's first page: what waits, what expires, what the log says, what is unsafe."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from gateway.actors import Actor
from gateway.audit import AuditEvent, AuditTag
from gateway.transfers import WaitingFiles

if TYPE_CHECKING:
    from gateway.app import App

EXPIRING_WITHIN = timedelta(hours=24)


@dataclass(frozen=True)
class Verification:
    """The last verification of the audit log."""

    time: datetime
    ok: bool
    actor: str


@dataclass(frozen=True)
class Overview:
    """Everything the dashboard shows, read with the actor's own permissions."""

    now: datetime
    waiting: tuple[WaitingFiles, ...]
    expiring_within_hours: int
    audit_size: int
    checkpoint_size: int | None
    checkpoint_at: datetime | None
    last_verification: Verification | None
    recent: tuple[AuditEvent, ...]
    insecure_settings: tuple[str, ...]
    # Cosignatures on the latest checkpoint, and how many it needs (None: no witnesses).
    witness_cosignatures: int | None = None
    witness_quorum: int | None = None

    @property
    def witness_quorum_missed(self) -> bool:
        return (self.witness_quorum is not None and self.witness_cosignatures is not None
                and self.witness_cosignatures < self.witness_quorum)

    @property
    def checkpoint_age(self) -> timedelta | None:
        return self.now - self.checkpoint_at if self.checkpoint_at else None


class DashboardService:
    """Builds the dashboard from the other services (each checks the actor itself)."""

    def __init__(self, app: App) -> None:
        self._app = app

    def overview(self, actor: Actor, *, recent: int = 8) -> Overview:
        app = self._app
        checkpoint = app.audit_view.latest_checkpoint(actor)
        verified = app.audit_view.last_event(actor, AuditTag.AUDIT_VERIFY)
        return Overview(
            now=app.clock(),
            waiting=tuple(app.transfers.waiting(actor, within=EXPIRING_WITHIN)),
            expiring_within_hours=int(EXPIRING_WITHIN.total_seconds() // 3600),
            audit_size=app.audit_view.size(actor),
            checkpoint_size=checkpoint.checkpoint.size if checkpoint else None,
            checkpoint_at=checkpoint.created_at if checkpoint else None,
            last_verification=(Verification(verified.time, bool(verified.details.get("ok")),
                                            verified.actor) if verified else None),
            recent=tuple(app.audit_view.recent(actor, limit=recent)),
            insecure_settings=tuple(app.settings.insecure_switches),
            witness_cosignatures=app.audit_view.latest_cosignature_count(actor),
            witness_quorum=app.settings.audit_witness_quorum if app.settings.witnesses
            else None)
