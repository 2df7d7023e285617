"""The exposure report as a service: verify the log, read it once, check the store."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from gateway import envelope
from gateway.actors import Actor
from gateway.audit import AuditTag, VerificationError, VerifyReport
from gateway.authz import Permission
from gateway.errors import GatewayError
from gateway.exposure.model import (
    PLAINTEXT_NONE,
    ExposureReport,
    LogVerification,
    StoreCheck,
    StoreProblem,
    Window,
)
from gateway.exposure.scan import HistoryScan, summarise
from gateway.partners import get_partner

if TYPE_CHECKING:
    from gateway.app import App

# An age header is read from the first bytes of an object; a header with many
# post-quantum stanzas may need more (the same ceiling uploads allow).
HEADER_PROBE = 64 * 1024
HEADER_LIMIT = 1 << 20


class ExposureService:
    """Breach-exposure reports, from the verified audit log."""

    def __init__(self, app: App) -> None:
        self._app = app

    def report(self, actor: Actor, *, start: datetime, end: datetime,
               partner: str | None = None, checkpoints: Sequence[tuple[str, str]] = (),
               unverified: bool = False) -> ExposureReport:
        """Every file on the server at any moment in ``[start, end]``, with its history.

        The audit log is verified first (against its stored checkpoints and the outside
        ``checkpoints``, ``(label, signed note)`` pairs) in the same pass that reads it.
        A log that fails gives no report — the
        :class:`~gateway.audit.VerificationError` is raised — unless ``unverified``:
        then the report is built and marked unverified on every page.
        """
        self._app.authz.require(actor, Permission.EXPOSURE_REPORT,
                                subject=f"partner:{partner}" if partner else "-")
        window = Window(start, end)
        if partner is not None:
            with self._app.read() as session:
                get_partner(session, partner)
        scan = HistoryScan(window, partner=partner)
        try:
            verified = self._app.audit_view.read_verified(actor, None, raw=scan,
                                                          outside=checkpoints)
            verification = _verified(verified)
        except VerificationError as exc:
            if not unverified:
                raise
            verification = LogVerification(False, None, None, None, None, len(checkpoints),
                                           None, (exc.summary, *exc.problems))
        report = self._assemble(actor, window, scan, verification)
        self._record(actor, report)
        return report

    def _record(self, actor: Actor, report: ExposureReport) -> None:
        # Who looked at which window is itself security-relevant: the report names
        # accounts and files. Recorded after the report, so it never appears in it.
        details = {"from": report.window_start.isoformat(),
                   "to": report.window_end.isoformat(),
                   "partner": report.partner or "-",
                   "verified": report.verification.verified, "files": len(report.files)}
        with self._app.transaction() as session:
            self._app.audit.record(session, tag=AuditTag.EXPOSURE_REPORT, actor=actor,
                                   subject=f"partner:{report.partner}" if report.partner
                                   else "-", details=details)

    def _assemble(self, actor: Actor, window: Window, scan: HistoryScan,
                  verification: LogVerification) -> ExposureReport:
        files = scan.files()
        store = self.check_store(scan.stored_objects())
        plaintext = PLAINTEXT_NONE if not store.problems else (
            f"NOT SHOWN: {len(store.problems)} stored object(s) are not age ciphertext")
        return ExposureReport(window.start, window.end, scan.partner, self._app.clock(),
                              actor.name, verification, plaintext,
                              tuple(summarise(files, partner=scan.partner)), tuple(files),
                              tuple(scan.accounts()), tuple(scan.keys()), store)

    def check_store(self, known: dict[str, tuple[str, str, str]]) -> StoreCheck:
        """Check that every object now in the store starts with an age header.

        ``known`` names the file of each object the log knows; an object it does not
        know is checked all the same (the claim is about everything stored).
        """
        problems, count = [], 0
        for info in self._app.store.list_objects():
            count += 1
            problem = self._header_problem(info.object_id, info.size)
            if problem is not None:
                file_id, partner, name = known.get(info.object_id, (None, None, None))
                problems.append(StoreProblem(info.object_id, file_id, partner, name, problem))
        return StoreCheck(count, tuple(problems))

    def _header_problem(self, object_id: str, size: int) -> str | None:
        try:
            reader = self._app.store.open(object_id)
        except GatewayError as exc:
            return f"cannot be read: {exc.diagnostics()}"
        try:
            head = reader.read_at(0, HEADER_PROBE)
            problem = _age_problem(head)
            if problem is not None and size > len(head):
                problem = _age_problem(reader.read_at(0, HEADER_LIMIT))
            return problem
        except GatewayError as exc:
            return f"cannot be read: {exc.diagnostics()}"
        finally:
            reader.close()


def _age_problem(head: bytes) -> str | None:
    try:
        envelope.inspect(io.BytesIO(head))
    except envelope.EnvelopeError as exc:
        return f"not age ciphertext: {exc.diagnostics()}"
    return None


def _verified(report: VerifyReport) -> LogVerification:
    anchor = report.anchor
    if anchor is None:
        return LogVerification(True, report.size, None, None, None, report.outside,
                               report.size, ())
    return LogVerification(True, report.size, anchor.label, anchor.size,
                           base64.b64encode(anchor.root).decode(), report.outside,
                           report.size - anchor.size, ())
