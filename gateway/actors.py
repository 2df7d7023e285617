"""Who is acting: an authenticated account, the local operator, or the system itself."""

from __future__ import annotations

import getpass
from dataclasses import dataclass

from gateway.db.models import Account, Role


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

    def audit_details(self) -> dict[str, str]:
        """Source address and client version, for audit details."""
        details = {"source": self.source} if self.source else {}
        if self.client:
            details["client"] = self.client
        return details
