"""Machine accounts: scheduled extract jobs that sign in with a key alone, under two admins.

No person can answer a one-time code for a job that runs at 3 a.m., so a *machine*
staff account signs in with its SSH key alone — and only from the networks listed for
it. That makes its key as strong a credential as a key and a code together, so making
an account a machine account, or widening its networks, follows the two-person rule of
recipient keys: one admin proposes (with their own proof), a different admin approves
(with theirs), and only the approval changes the account. Narrowing needs no approval.
Every step is audited; proposals are sealed rows, verified before they are applied.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.actors import Actor
from gateway.audit import AuditTag
from gateway.authz import Permission
from gateway.db.models import Account, GrantState, MachineGrant
from gateway.errors import ConflictError, NotFoundError
from gateway.partner_keys import active_admin, second_admin

if TYPE_CHECKING:
    from gateway.app import App

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MachineGrantInfo:
    """A proposal to make an account a machine account, or to widen its networks."""

    id: int
    username: str
    allow_from: tuple[str, ...]
    state: GrantState
    proposed_by: str
    proposed_at: datetime
    approved_by: str | None
    approved_at: datetime | None


def grant_info(row: MachineGrant) -> MachineGrantInfo:
    return MachineGrantInfo(row.id, row.account.username, tuple(row.allow_from.split(",")),
                            row.state, row.proposer.username, row.proposed_at,
                            row.approver.username if row.approver else None, row.approved_at)


class MachineService:
    """Propose, approve and list machine account grants."""

    def __init__(self, app: App) -> None:
        self._app = app

    def propose_in(self, session: Session, actor: Actor, *, account: Account,
                   allow_from: str) -> int:
        """Propose, in the caller's transaction, that ``account`` sign in with its key
        alone from ``allow_from`` (canonical CIDRs); return the proposal's id.

        The caller has required ``Permission.MACHINE_PROPOSE`` before its transaction
        began (a refusal is audited in a transaction of its own). An earlier proposal for
        the same account still waiting is superseded.
        """
        proposer = active_admin(session, actor)
        # Through the ORM, so the superseded rows are sealed anew (state is sealed).
        for earlier in session.scalars(select(MachineGrant).where(
                MachineGrant.account_id == account.id,
                MachineGrant.state == GrantState.PROPOSED)):
            earlier.state = GrantState.SUPERSEDED
        grant = MachineGrant(account_id=account.id, allow_from=allow_from,
                             state=GrantState.PROPOSED, proposed_by=proposer.id,
                             proposed_at=self._app.clock())
        session.add(grant)
        session.flush()
        self._app.audit.record(session, tag=AuditTag.ACCOUNT_MACHINE_PROPOSE, actor=actor,
                               subject=f"account:{account.username}",
                               details={"grant_id": grant.id, "allow_from": allow_from,
                                        "change": "widen" if account.machine else "create",
                                        "previous": account.allow_from})
        return grant.id

    def approve(self, actor: Actor, *, grant_id: int) -> MachineGrantInfo:
        """Apply a proposal; the approver must not be the proposer."""
        self._app.authz.require(actor, Permission.MACHINE_APPROVE, subject=f"grant:{grant_id}")
        with self._app.transaction() as session:
            approver = active_admin(session, actor)
            grant = session.scalar(select(MachineGrant).where(MachineGrant.id == grant_id)
                                   .with_for_update(of=MachineGrant))
            if grant is None:
                raise NotFoundError(f"unknown machine grant {grant_id}")
            # Never apply a proposal, or change an account, the gateway did not write.
            self._app.integrity.verify(grant)
            self._app.integrity.verify(grant.account)
            if grant.state is not GrantState.PROPOSED:
                raise ConflictError(f"machine grant {grant_id} is {grant.state.value}, "
                                    "not proposed")
            second_admin(self._app, session, actor, approver, proposed_by=grant.proposed_by,
                         what="a machine account", which=f"machine grant {grant.id}",
                         details={"grant_id": grant.id, "account": grant.account.username})
            account = grant.account
            account.machine, account.allow_from = True, grant.allow_from
            grant.state, grant.approver, grant.approved_at = (GrantState.APPROVED, approver,
                                                              self._app.clock())
            self._app.audit.record(session, tag=AuditTag.ACCOUNT_MACHINE_APPROVE, actor=actor,
                                   subject=f"account:{account.username}",
                                   details={"grant_id": grant.id, "allow_from": grant.allow_from,
                                            "proposed_by": grant.proposer.username})
            return grant_info(grant)

    def pending(self, actor: Actor) -> list[MachineGrantInfo]:
        """Proposals waiting for a second admin, oldest first."""
        self._app.authz.require(actor, Permission.ACCOUNT_READ)
        with self._app.read() as session:
            rows = session.scalars(select(MachineGrant).where(
                MachineGrant.state == GrantState.PROPOSED).order_by(MachineGrant.id))
            return [grant_info(row) for row in rows]

