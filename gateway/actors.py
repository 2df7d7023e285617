"""Who is acting: an authenticated account, the local operator, or the system itself."""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.audit import AuditTag
from gateway.db.models import Account, Role

if TYPE_CHECKING:
    from gateway.app import App


def printable(text: str, *, limit: int = 300) -> str:
    """Client-supplied text made safe for logs and audit details (no control characters)."""
    return "".join(ch if ch.isprintable() else "?" for ch in text[:limit])


@dataclass(frozen=True)
class Actor:
    """The subject of an action, as recorded in the audit log.

    ``account_id`` and ``role`` are set for signed-in accounts; the local operator (a
    person with a shell on the host, using the CLI) and the system (the purger) have none.
    """

    name: str
    account_id: int | None = None
    role: Role | None = None
    partner_id: int | None = None
    source: str | None = None
    client: str | None = None

    @classmethod
    def for_account(cls, account: Account, *, source: str | None = None,
                    client: str | None = None) -> Actor:
        return cls(account.username, account.id, account.role, account.partner_id, source, client)

    @classmethod
    def local_operator(cls) -> Actor:
        """The person running the CLI on the host."""
        return cls(f"local:{getpass.getuser()}", source="local")

    @classmethod
    def system(cls, component: str) -> Actor:
        return cls(f"system:{component}", source="local")

    def record_denied(self, app: App, *, operation: str, path: str, reason: str) -> None:
        """Audit a refused request: who, which operation on which path, and why."""
        with app.transaction() as session:
            app.audit.record(session, tag=AuditTag.ACCESS_DENIED, actor=self.name,
                             subject=operation, details={"path": printable(path),
                                                              "reason": reason,
                                                              **self.audit_details()})

    def audit_details(self) -> dict[str, str]:
        """Source address and client version, for audit details."""
        details = {"source": self.source} if self.source else {}
        if self.client:
            details["client"] = self.client
        return details
