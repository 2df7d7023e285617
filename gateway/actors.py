"""Who is acting: a signed-in account, the local operator, or the system itself.

An :class:`Actor` is made by whatever proved the identity — the SSH sign-in, a one-time
code typed at the command line, a console session — and handed to the services, which
decide from it alone what may be done (:mod:`gateway.authz`) and record it in the audit
log. Nothing takes a bare name as an identity.
"""

from __future__ import annotations

import enum
import getpass
from dataclasses import dataclass

from gateway.db.models import Role

# Long enough for any username we issue; a claimed name beyond it is cut and marked.
MAX_NAME = 200


TRUNCATED = "…"


def printable(text: str, *, limit: int = 300) -> str:
    """Client-supplied text made safe for logs and audit details: no control characters,
    at most ``limit`` characters, ending in ``…`` when it was cut."""
    if len(text) > limit:
        return printable(text[:limit - len(TRUNCATED)], limit=limit) + TRUNCATED
    return "".join(ch if ch.isprintable() else "?" for ch in text)


class ActorKind(enum.StrEnum):
    """The three kinds of actor, each recorded differently in the audit log."""

    ACCOUNT = "account"
    OPERATOR = "operator"
    SYSTEM = "system"
    TOKEN = "token"


@dataclass(frozen=True)
class Actor:
    """The subject of an action, as authorised and as recorded in the audit log.

    ``account_id``, ``role`` and ``partner_id`` are set for signed-in accounts only. The
    local operator is a person with a shell on the host using the CLI: it administers
    but never acts *as* an account without that account's proof. ``os_user`` names the
    operating-system user behind a CLI action, including an account's proven action.

    ``standing`` marks an actor that rests on a standing credential — a console session
    or an API token — rather than on a proof made for the action at hand. The two-person
    rule's approvals and revocations refuse it (:mod:`gateway.authz`): they take a
    person's fresh second factor.

    ``machine`` marks a machine account's session (signed in by its key alone): it may
    only upload, and everything it does is audited as a machine session.
    """

    kind: ActorKind
    name: str
    account_id: int | None = None
    role: Role | None = None
    partner_id: int | None = None
    source: str | None = None
    client: str | None = None
    os_user: str | None = None
    standing: bool = False
    machine: bool = False

    @classmethod
    def account(cls, *, username: str, account_id: int, role: Role, partner_id: int | None,
                source: str | None, client: str | None = None,
                os_user: str | None = None, standing: bool = False,
                machine: bool = False) -> Actor:
        """A signed-in account; only the code that verified its credentials makes one."""
        return cls(ActorKind.ACCOUNT, username, account_id, role, partner_id, source, client,
                   os_user, standing=standing, machine=machine)

    @classmethod
    def token(cls, *, name: str, role: Role, source: str | None,
              client: str | None = None) -> Actor:
        """An API token, for automation; only :mod:`gateway.tokens` makes one."""
        return cls(ActorKind.TOKEN, f"token:{name}", role=role, source=source, client=client,
                   standing=True)

    @classmethod
    def local_operator(cls) -> Actor:
        """The person running the CLI on the host."""
        user = getpass.getuser()
        return cls(ActorKind.OPERATOR, f"local:{user}", source="local", os_user=user)

    @classmethod
    def system(cls, component: str) -> Actor:
        """A component of the gateway acting on its own (the purger, the supervisor)."""
        return cls(ActorKind.SYSTEM, f"system:{component}", source="local")

    @classmethod
    def anonymous(cls, *, claimed: str | None, source: str, client: str | None = None,
                  os_user: str | None = None) -> Actor:
        """Someone not (yet) proven, recorded under the name they claimed (it grants nothing)."""
        name = "(none)" if not claimed else printable(claimed, limit=MAX_NAME)
        return cls(ActorKind.ACCOUNT, name, source=source, client=client, os_user=os_user)

    @property
    def is_account(self) -> bool:
        return self.kind is ActorKind.ACCOUNT and self.account_id is not None

    def audit_details(self) -> dict[str, str]:
        """Where the action came from, for the audit event's details."""
        details: dict[str, str] = {}
        for key in ("source", "client", "os_user"):
            value = getattr(self, key)
            if value:
                details[key] = value
        if self.machine:
            details["session"] = "machine"
        return details
