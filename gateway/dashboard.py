"""The console's first page: what needs doing, what waits, what expires, what the log says,
what is unsafe."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from gateway.actors import Actor
from gateway.audit import AuditEvent, AuditTag
from gateway.authz import Permission, permits
from gateway.db.models import KeyState
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
class Todo:
    """One thing that needs an admin, and the page where it is done."""

    kind: str  # alarm, approval, partner or account: how urgent, and what it is about
    text: str
    link: str


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
    # What needs doing, alarms first.
    todo: tuple[Todo, ...] = ()

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
        witness_quorum = (app.settings.audit_witness_quorum if app.settings.witnesses
                          else None)
        cosignatures = app.audit_view.latest_cosignature_count(actor)
        alarms = self._alarms(actor, verified)
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
            witness_cosignatures=cosignatures, witness_quorum=witness_quorum,
            todo=(*alarms, *self._todo(actor)))

    def _alarms(self, actor: Actor, verified: AuditEvent | None) -> list[Todo]:
        """A failed verification, and integrity violations since the last passing one (a
        missed witness quorum has its own warning above the page)."""
        found: list[Todo] = []
        if verified is not None and not verified.details.get("ok"):
            found.append(Todo("alarm", f"The last verification of the audit log FAILED "
                                       f"({verified.time:%Y-%m-%d %H:%M} UTC, by "
                                       f"{verified.actor}): verify again and read the findings",
                              "/audit?tag=audit%3Averify"))
        violation = self._app.audit_view.last_event(actor, AuditTag.INTEGRITY_VIOLATION)
        if violation is not None and (verified is None or violation.index > verified.index
                                      or not verified.details.get("ok")):
            when = violation.time.strftime("%Y-%m-%d %H:%M")
            found.append(Todo("alarm", f"Integrity violation reported {when} UTC "
                                       f"({violation.subject}): rows the gateway did not "
                                       "write were refused", f"/audit/{violation.index}"))
        return found

    def _todo(self, actor: Actor) -> list[Todo]:
        """Approvals waiting, partners that cannot receive, locked accounts: each read
        only when the actor may read it."""
        app = self._app
        keys = app.keys.all(actor) if permits(actor, Permission.KEY_READ) else []
        found = [Todo("approval", f"Key {key.id} for {key.partner} ({key.kind}), proposed by "
                                  f"{key.proposed_by}, waits for a second admin",
                      f"/keys#key-{key.id}")
                 for key in keys if key.state is KeyState.PROPOSED]
        people = permits(actor, Permission.ACCOUNT_READ)
        found += [Todo("approval", f"Change {change.id}: {change.summary}, proposed by "
                                   f"{change.proposed_by}, waits for a second admin",
                       f"/accounts#change-{change.id}")
                  for change in (app.authority.pending(actor) if people else [])]
        found += [Todo("approval", f"Machine account {grant.username} (from "
                                   f"{', '.join(grant.allow_from)}), proposed by "
                                   f"{grant.proposed_by}, waits for a second admin",
                       f"/accounts#grant-{grant.id}")
                  for grant in (app.machines.pending(actor) if people else [])]
        if permits(actor, Permission.PARTNER_READ) and permits(actor, Permission.KEY_READ):
            receiving = {key.partner for key in keys if key.state is KeyState.APPROVED}
            found += [Todo("partner", f"Partner {partner.slug} cannot receive files: it has "
                                      "no approved key", f"/partners/{partner.slug}")
                      for partner in app.partners.all(actor)
                      if not partner.disabled and partner.slug not in receiving]
        found += [Todo("account", f"Account {account.username} is {account.state}",
                       f"/accounts/{account.username}")
                  for account in (app.accounts.all(actor) if people else [])
                  if account.locked_until is not None and not account.disabled]
        return found
