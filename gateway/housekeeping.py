"""The chores of a long-running Blindpost process, each surviving its own failure.

``blindpost serve`` and ``blindpost sftp`` record their start and stop in the audit log,
sign a checkpoint whenever one is due (on a timer, so that a quiet log is covered too)
and at shutdown, and send due notifications (gateway/notify) on the same tick; ``serve``
also purges expired files every minute. A chore that fails —
the database restarting, the store unreachable — is logged in one line, audited when
the database takes the record, and tried again at its next turn: it never ends the process.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Protocol

from gateway.actors import Actor
from gateway.audit import AuditTag
from gateway.errors import GatewayError
from gateway.retention import PurgeReport

if TYPE_CHECKING:
    from gateway.app import App
    from gateway.config import Settings

log = logging.getLogger(__name__)

PURGE_INTERVAL_SECONDS = 60.0
MAX_CHECKPOINT_TICK_SECONDS = 30.0


class StopRequest(Protocol):
    """What the loop waits on between chores (a :class:`~gateway.stop_signals.StopSignals`)."""

    def wait(self, timeout: float | None) -> bool: ...


def checkpoint_tick_seconds(settings: Settings) -> float:
    """How often to look for a due checkpoint.

    A tenth of ``audit_checkpoint_seconds`` (at most 30 s, at least 1 s): the newest entry
    then waits for a signed checkpoint at most ``audit_checkpoint_seconds`` plus one tick.
    """
    return max(1.0, min(MAX_CHECKPOINT_TICK_SECONDS, settings.audit_checkpoint_seconds / 10))


class Housekeeping:
    """Service events, checkpoints and purges of one process, named ``component``."""

    def __init__(self, app: App, *, component: str) -> None:
        self._app = app
        self.component = component
        self._actor = Actor.system(component)

    def record(self, tag: AuditTag, **details: object) -> bool:
        """Audit a service event; log and return False if the database refuses it."""
        try:
            with self._app.transaction() as session:
                self._app.audit.record(session, tag=tag, actor=self._actor,
                                       subject=f"service:{self.component}",
                                       details={"component": self.component, **details})
        except GatewayError as exc:
            log.warning("could not audit %s of %s: %s", tag, self.component, exc.diagnostics())
            return False
        return True

    def started(self, **details: object) -> None:
        self.record(AuditTag.SERVICE_START, pid=os.getpid(), **details)

    def stopped(self, **details: object) -> None:
        self.record(AuditTag.SERVICE_STOP, pid=os.getpid(), **details)

    def purge(self) -> PurgeReport | None:
        """One purge pass; a failure is logged and audited, and the next pass retries."""
        try:
            return self._app.retention.purge()
        except GatewayError as exc:
            reason = exc.diagnostics()
            log.error("purge pass failed: %s; retrying in %d s", reason, PURGE_INTERVAL_SECONDS)
        except Exception as exc:  # A bug must not stop later passes either.
            reason = f"unexpected {type(exc).__name__}"
            log.exception("purge pass failed; retrying in %d s", PURGE_INTERVAL_SECONDS)
        self.record(AuditTag.SERVICE_PURGE_FAILURE, reason=reason)
        return None

    def checkpoint_if_due(self) -> None:
        """Sign a checkpoint if one is due, then have the witnesses cosign the latest; a
        failure waits for the next tick."""
        try:
            with self._app.transaction() as session:
                self._app.audit.checkpoint_if_due(session)
        except GatewayError as exc:
            log.warning("could not sign a due audit checkpoint: %s; retrying later",
                        exc.diagnostics())
        self.witness()

    def final_checkpoint(self) -> None:
        """Sign a checkpoint of the whole log (at shutdown) and have it cosigned; raises if
        the database fails."""
        with self._app.transaction() as session:
            self._app.audit.checkpoint(session)
        self.witness()

    def witness(self) -> None:
        """Send the latest checkpoint to the witnesses that lack it (after the checkpoint's
        transaction: a witness never holds a lock a transfer needs). Failures are
        reported by the round itself; this only keeps them from ending the process."""
        try:
            self._app.witnessing.cosign_latest()
        except GatewayError as exc:
            log.error("could not ask the audit witnesses: %s; retrying at the next tick",
                      exc.diagnostics())
        except Exception:  # A bug in one round must not stop the checkpoints.
            log.exception("could not ask the audit witnesses; retrying at the next tick")

    def notify(self) -> None:
        """Plan and send due notifications (gateway/notify); a relay that is down is the
        outbox's to retry, and a failure here only waits for the next tick."""
        if not self._app.notifications.enabled:
            return
        try:
            self._app.notifications.run_once()
        except GatewayError as exc:
            log.error("could not send notifications: %s; retrying at the next tick",
                      exc.diagnostics())
        except Exception:  # A bug in one pass must not stop the checkpoints.
            log.exception("could not send notifications; retrying at the next tick")

    def run(self, stop: StopRequest, *, purge: bool) -> None:
        """Do the chores on their timers until ``stop`` says to stop."""
        tick = checkpoint_tick_seconds(self._app.settings)
        next_purge = time.monotonic()
        while True:
            if purge and time.monotonic() >= next_purge:
                self.purge()
                next_purge = time.monotonic() + PURGE_INTERVAL_SECONDS
            self.checkpoint_if_due()
            self.notify()
            if stop.wait(tick):
                return
