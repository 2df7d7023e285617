"""Authority changes: nothing that creates or extends authority is done by one person.

Creating an admin or auditor account, resetting the console credentials (password and
second factor, or the password alone) of one, adding an SSH key to one, enabling a
disabled one, and creating an admin API token: each is *proposed* by one admin (with
their own proof, or from their console session) and *applied* only when a different
admin approves it with a fresh second factor given for that very change. Until then the
change is a sealed row that grants nothing, listed with its proposer, and anyone who
administers may withdraw it.
The approval applies it in the same transaction, and its events name both people.

Nobody who proposed a new admin learns its secrets: the one-time password of a created
or reset console account goes to the approver, and the holder enrols their own second
factor at their first console sign-in (the enrolment secret is made then, in their
session). A token's secret likewise goes to the approver.

API tokens never propose or approve (they are no person), and the local operator
proposes only through a named admin's proof. One exception, the bootstrap: while the
installation has fewer than two active admins, the operator creates admin and auditor
accounts directly (audited with ``bootstrap``), so that a new installation gets the
second admin the rule needs.

The rule cannot be starved: disabling an admin, resetting their factor or removing their
last passkey is refused when it would leave fewer admins with a usable second factor
than an approval needs, and nobody disables their own account.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import rfc8785
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from gateway.actors import Actor, ActorKind
from gateway.audit import AuditTag
from gateway.authz import Permission
from gateway.db.models import (
    MAX_INTEGER,
    Account,
    AuthorityChange,
    ChangeState,
    Passkey,
    Role,
    TOTPSecret,
)
from gateway.errors import ConflictError, NotFoundError, PolicyError
from gateway.partner_keys import active_admin, second_admin

if TYPE_CHECKING:
    from gateway.app import App

log = logging.getLogger(__name__)

# The admins an approval needs: a proposer and a different approver.
APPROVAL_NEEDS = 2


class ChangeKind(enum.StrEnum):
    """What an authority change does once approved."""

    ACCOUNT_CREATE = "account-create"
    CONSOLE_RESET = "console-reset"
    SSH_KEY_ADD = "ssh-key-add"
    ACCOUNT_ENABLE = "account-enable"
    TOKEN_CREATE = "token-create"  # noqa: S105 - a kind of change, not a secret
    AGREEMENT_SET = "agreement-set"
    PASSWORD_RESET = "password-reset"  # noqa: S105 - a kind of change, not a secret


# What each kind does, in the words of listings, refusals and the audit log.
WHAT: dict[ChangeKind, str] = {
    ChangeKind.ACCOUNT_CREATE: "creating an admin or auditor account",
    ChangeKind.CONSOLE_RESET: "resetting an admin's or auditor's password and second factor",
    ChangeKind.SSH_KEY_ADD: "adding an SSH key to an admin or auditor account",
    ChangeKind.ACCOUNT_ENABLE: "enabling a disabled admin or auditor account",
    ChangeKind.TOKEN_CREATE: "creating an admin API token",
    ChangeKind.AGREEMENT_SET: "setting a partner's data-sharing agreement",
    ChangeKind.PASSWORD_RESET: "resetting an admin's or auditor's password",
}


@dataclass(frozen=True)
class AuthorityChangeInfo:
    """A proposed (or decided) authority change, as listed."""

    id: int
    kind: ChangeKind
    target: str
    params: Mapping[str, Any]
    state: ChangeState
    proposed_by: str
    proposed_at: datetime
    approved_by: str | None
    approved_at: datetime | None
    withdrawn_by: str | None
    withdrawn_at: datetime | None

    @property
    def summary(self) -> str:
        """One line saying what the change does."""
        params = self.params
        return {
            ChangeKind.ACCOUNT_CREATE: f"create {params.get('role')} account {self.target}",
            ChangeKind.CONSOLE_RESET: f"reset the password and second factor of {self.target}",
            ChangeKind.SSH_KEY_ADD: f"add SSH key {params.get('fingerprint')} to {self.target}",
            ChangeKind.ACCOUNT_ENABLE: f"enable account {self.target}",
            ChangeKind.TOKEN_CREATE: f"create admin API token {self.target}",
            ChangeKind.AGREEMENT_SET: (
                f"set the data-sharing agreement of {self.target}: columns "
                f"{', '.join(params.get('columns', []))}, max records "
                f"{params.get('max_records') or 'unlimited'}, files of unknown structure "
                f"{'allowed' if params.get('allow_opaque') else 'refused'}"),
            ChangeKind.PASSWORD_RESET: f"reset the password of {self.target} (their "
                                       "second factor stays)",
        }[self.kind]


@dataclass(frozen=True)
class Outcome:
    """What applying a change made: one-time secrets for the approver, and what the
    approval's audit event adds (never a secret)."""

    one_time_password: str | None = None
    token: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AppliedChange:
    """An approved change and the one-time secret it made, shown to the approver only."""

    change: AuthorityChangeInfo
    one_time_password: str | None = None
    token: str | None = None


def change_info(row: AuthorityChange) -> AuthorityChangeInfo:
    return AuthorityChangeInfo(row.id, ChangeKind(row.kind), row.target, json.loads(row.params),
                               row.state, row.proposer.username, row.proposed_at,
                               row.approver.username if row.approver else None,
                               row.approved_at, row.withdrawn_by, row.withdrawn_at)


def canonical(params: Mapping[str, Any]) -> str:
    """A change's parameters as stored and sealed: RFC 8785 JSON."""
    return rfc8785.dumps(dict(params)).decode("utf-8")


def active_admins(session: Session) -> int:
    """How many admin accounts are not disabled."""
    return len(session.scalars(select(Account.id).where(
        Account.role == Role.ADMIN, Account.disabled.is_(False))).all())


def usable_admins(session: Session) -> set[int]:
    """The admins who can give a fresh proof now: not disabled, with an enrolled one-time
    code or a passkey."""
    enrolled = exists().where(TOTPSecret.account_id == Account.id,
                              TOTPSecret.enrol_until.is_(None))
    passkey = exists().where(Passkey.account_id == Account.id)
    return set(session.scalars(select(Account.id).where(
        Account.role == Role.ADMIN, Account.disabled.is_(False), enrolled | passkey)))


# Applies one kind of change in the approval's transaction; returns the one-time secrets.
Applier = Callable[[Session, Actor, AuthorityChange, dict[str, Any]], Outcome]


class AuthorityService:
    """Propose, approve, withdraw and list authority changes."""

    def __init__(self, app: App) -> None:
        self._app = app

    # -- rules shared with the account and token services -------------------------------

    @property
    def needed(self) -> int:
        """Admins with a usable factor an approval needs (one, under the insecure setting)."""
        return 1 if self._app.settings.insecure_single_admin_key_approval else APPROVAL_NEEDS

    def bootstrapping(self, actor: Actor) -> bool:
        """Whether ``actor`` is the local operator of an installation with fewer than two
        active admins, who may create its admins and auditors directly."""
        if actor.kind is not ActorKind.OPERATOR:
            return False
        with self._app.read() as session:
            return active_admins(session) < APPROVAL_NEEDS

    def check_not_starved(self, session: Session, account: Account, *, action: str) -> None:
        """Refuse ``action`` when taking ``account``'s usable factor (or the account) away
        would leave fewer admins able to approve than an approval needs."""
        usable = usable_admins(session)
        if account.id in usable and len(usable) - 1 < self.needed:
            raise PolicyError(f"{action} would leave fewer than {self.needed} active admins "
                              "with a usable second factor, and nothing that takes two admins "
                              "could be approved any more; add an admin first")

    def refuse_alone(self, actor: Actor, kind: ChangeKind, *, subject: str) -> None:
        """Refuse (audited) an actor who may not even propose ``kind``: a token, or the
        local operator without an admin's proof. Returns for everyone else."""
        what = WHAT[kind]
        if actor.kind is ActorKind.TOKEN:
            self._app.authz.deny(actor, operation=Permission.AUTHORITY_PROPOSE.value,
                                 subject=subject,
                                 reason=f"an API token never creates or extends authority: "
                                        f"{what} is proposed by an admin and approved by "
                                        "a second admin with a fresh second factor")
        if actor.kind is ActorKind.OPERATOR:
            self._app.authz.deny(actor, operation=Permission.AUTHORITY_PROPOSE.value,
                                 subject=subject,
                                 reason=f"the local operator does not act alone: {what} is "
                                        "proposed by a named admin with their own proof and "
                                        "approved by a second admin")

    # -- proposing ----------------------------------------------------------------------

    def propose(self, actor: Actor, *, kind: ChangeKind, target: str,
                params: Mapping[str, Any], shown: Mapping[str, Any] | None = None
                ) -> AuthorityChangeInfo:
        """Record ``kind`` on ``target`` as proposed by the acting admin; it grants nothing.

        ``shown`` is what the audit event says of the parameters (defaults to all of them).
        An earlier proposal of the same kind for the same target still waiting is
        superseded.
        """
        subject = f"{kind.value}:{target}"
        self.refuse_alone(actor, kind, subject=subject)
        self._app.authz.require(actor, Permission.AUTHORITY_PROPOSE, subject=subject)
        with self._app.transaction() as session:
            proposer = active_admin(session, actor)
            # Through the ORM, so the superseded rows are sealed anew (state is sealed).
            for earlier in session.scalars(select(AuthorityChange).where(
                    AuthorityChange.kind == kind.value, AuthorityChange.target == target,
                    AuthorityChange.state == ChangeState.PROPOSED)):
                earlier.state = ChangeState.SUPERSEDED
            row = AuthorityChange(kind=kind.value, target=target, params=canonical(params),
                                  state=ChangeState.PROPOSED, proposed_by=proposer.id,
                                  proposed_at=self._app.clock(), proposer=proposer)
            session.add(row)
            session.flush()
            self._app.audit.record(session, tag=AuditTag.AUTHORITY_PROPOSE, actor=actor,
                                   subject=f"change:{row.id}",
                                   details={"change_id": row.id, "kind": kind.value,
                                            "target": target,
                                            **dict(params if shown is None else shown)})
            return change_info(row)

    # -- deciding -----------------------------------------------------------------------

    def approve(self, actor: Actor, *, change_id: int) -> AppliedChange:
        """Apply a proposed change; the approver is a different admin than the proposer
        and not the change's target, proven freshly for this change."""
        subject = f"change:{change_id}"
        if actor.kind is ActorKind.TOKEN:
            self._app.authz.deny(actor, operation=Permission.AUTHORITY_APPROVE.value,
                                 subject=subject,
                                 reason="an API token never approves an authority change: "
                                        "that takes an admin's fresh second factor")
        self._app.authz.require(actor, Permission.AUTHORITY_APPROVE, subject=subject)
        with self._app.transaction() as session:
            approver = active_admin(session, actor)
            row = self._get(session, change_id, for_update=True)
            # Never apply a change the gateway did not write.
            self._app.integrity.verify(row)
            if row.state is not ChangeState.PROPOSED:
                raise ConflictError(f"change {change_id} is {row.state.value}, not proposed")
            kind = ChangeKind(row.kind)
            # A token's and an agreement's target is no account. A password reset keeps the
            # holder's second factor and gives the one-time password to the approver: the
            # holder may approve it (and receives it directly), so two admins suffice to
            # reset one of them.
            if (kind not in (ChangeKind.TOKEN_CREATE, ChangeKind.AGREEMENT_SET,
                             ChangeKind.PASSWORD_RESET)
                    and row.target == approver.username):
                raise PolicyError("an admin does not approve a change to their own account: "
                                  "another admin approves it")
            second_admin(self._app, session, actor, approver, proposed_by=row.proposed_by,
                         what="an authority change", which=f"authority change {row.id}",
                         details={"change_id": row.id, "kind": row.kind,
                                  "target": row.target})
            applied = self._appliers()[kind](session, actor, row, json.loads(row.params))
            row.state, row.approver, row.approved_at = (ChangeState.APPROVED, approver,
                                                        self._app.clock())
            self._app.audit.record(session, tag=AuditTag.AUTHORITY_APPROVE, actor=actor,
                                   subject=subject,
                                   details={"change_id": row.id, "kind": kind.value,
                                            "target": row.target,
                                            "proposed_by": row.proposer.username,
                                            "approved_by": approver.username,
                                            **dict(applied.extra)})
            info = change_info(row)
        return AppliedChange(info, applied.one_time_password, applied.token)

    def _appliers(self) -> dict[ChangeKind, Applier]:
        accounts, tokens = self._app.accounts, self._app.tokens
        return {ChangeKind.ACCOUNT_CREATE: accounts.apply_create,
                ChangeKind.CONSOLE_RESET: accounts.apply_console_reset,
                ChangeKind.SSH_KEY_ADD: accounts.apply_key,
                ChangeKind.ACCOUNT_ENABLE: accounts.apply_enable,
                ChangeKind.TOKEN_CREATE: tokens.apply_create,
                ChangeKind.AGREEMENT_SET: self._app.agreements.apply_set,
                ChangeKind.PASSWORD_RESET: accounts.apply_password_reset}

    def withdraw(self, actor: Actor, *, change_id: int) -> AuthorityChangeInfo:
        """Withdraw a proposed change: its proposer, any admin, the local operator (or a
        token: withdrawing grants nothing). Audited."""
        subject = f"change:{change_id}"
        self._app.authz.require(actor, Permission.AUTHORITY_WITHDRAW, subject=subject)
        with self._app.transaction() as session:
            row = self._get(session, change_id, for_update=True)
            if row.state is not ChangeState.PROPOSED:
                raise ConflictError(f"change {change_id} is {row.state.value}, not proposed")
            row.state, row.withdrawn_by, row.withdrawn_at = (ChangeState.WITHDRAWN, actor.name,
                                                             self._app.clock())
            self._app.audit.record(session, tag=AuditTag.AUTHORITY_WITHDRAW, actor=actor,
                                   subject=subject,
                                   details={"change_id": row.id, "kind": row.kind,
                                            "target": row.target,
                                            "proposed_by": row.proposer.username})
            return change_info(row)

    # -- reading ------------------------------------------------------------------------

    def pending(self, actor: Actor) -> list[AuthorityChangeInfo]:
        """Changes waiting for a second admin, oldest first."""
        self._app.authz.require(actor, Permission.ACCOUNT_READ)
        with self._app.read() as session:
            rows = session.scalars(select(AuthorityChange).where(
                AuthorityChange.state == ChangeState.PROPOSED).order_by(AuthorityChange.id))
            return [change_info(row) for row in rows]

    def get(self, actor: Actor, change_id: int) -> AuthorityChangeInfo:
        self._app.authz.require(actor, Permission.ACCOUNT_READ, subject=f"change:{change_id}")
        with self._app.read() as session:
            return change_info(self._get(session, change_id))

    @staticmethod
    def _get(session: Session, change_id: int, *, for_update: bool = False) -> AuthorityChange:
        if not 1 <= change_id <= MAX_INTEGER:
            raise NotFoundError(f"unknown authority change {change_id}")
        query = select(AuthorityChange).where(AuthorityChange.id == change_id)
        row = session.scalar(query.with_for_update(of=AuthorityChange) if for_update else query)
        if row is None:
            raise NotFoundError(f"unknown authority change {change_id}")
        return row
