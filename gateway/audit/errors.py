"""The audit log's errors: one family under :class:`gateway.errors.GatewayError`."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.errors import GatewayError


class AuditError(GatewayError):
    """The audit log cannot do what was asked (bad event, missing key, unusable input)."""


class VerificationError(AuditError):
    """The log, a proof or a checkpoint failed verification.

    ``problems`` lists every finding, each naming the entry index or checkpoint at
    fault, so an incident report can quote them as they are.
    """

    def __init__(self, summary: str, problems: Sequence[str] = ()) -> None:
        self.summary = summary
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("\n".join([summary, *(f"  - {problem}" for problem in problems)]))

    def diagnostics(self) -> str:
        """Return the summary followed by one line per finding."""
        return str(self)


class StaleStateError(VerificationError):
    """The log no longer extends the state an incremental verification started from:
    entries it covered were changed or removed, or the database was restored."""
