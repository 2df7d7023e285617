"""One page's worth about a partner or an account, gathered for the console.

Each part is read through the service that owns it, with the actor's own permissions, so
this module decides nothing; it only gathers. Session and passkey rows are read here
(no service lists another account's) as values, never their secrets or tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from gateway.account_values import AccountInfo
from gateway.actors import Actor
from gateway.audit import AuditEvent
from gateway.audit_service import EventFilter
from gateway.authz import Permission, permits
from gateway.db.models import Account, ConsoleSession, Passkey, TransferState
from gateway.partner_keys import RecipientKey
from gateway.partners import PartnerInfo
from gateway.transfers import FileEntry, FileFilter

if TYPE_CHECKING:
    from gateway.app import App

HISTORY = 25


@dataclass(frozen=True)
class PartnerDetail:
    """A partner with its keys, people and the files waiting for it."""

    partner: PartnerInfo
    keys: tuple[RecipientKey, ...]
    people: tuple[AccountInfo, ...]
    waiting: tuple[FileEntry, ...]

    @property
    def can_receive(self) -> bool:
        return any(key.receiving for key in self.keys)


@dataclass(frozen=True)
class SessionSummary:
    """A console session of an account: when and from where, never its token."""

    created_at: datetime
    last_seen_at: datetime
    source: str
    client: str
    stage: str


@dataclass(frozen=True)
class FactorSummary:
    """A registered passkey, by name."""

    name: str
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True)
class AccountDetail:
    """An account with its keys and factors, console sessions and recent history."""

    account: AccountInfo
    passkeys: tuple[FactorSummary, ...]
    sessions: tuple[SessionSummary, ...]
    history: tuple[AuditEvent, ...]
    more_history: bool


def partner_detail(app: App, actor: Actor, slug: str) -> PartnerDetail:
    """The partner page: its keys, its accounts and its waiting files (with expiry)."""
    partner = app.partners.get(actor, slug)
    return PartnerDetail(
        partner=partner, keys=tuple(app.keys.all(actor, partner=slug)),
        people=tuple(a for a in app.accounts.all(actor) if a.partner == slug),
        waiting=tuple(app.transfers.files(actor, FileFilter(
            partner=slug, state=TransferState.AVAILABLE))))


def account_detail(app: App, actor: Actor, username: str) -> AccountDetail:
    """The account page: keys, factors, console sessions and what it did or underwent."""
    account = app.accounts.get(actor, username)
    with app.read() as session:
        row_id = session.scalar(select(Account.id).where(Account.username == username))
        passkeys = tuple(FactorSummary(p.name, p.created_at, p.last_used_at)
                         for p in session.scalars(select(Passkey).where(
                             Passkey.account_id == row_id).order_by(Passkey.id)))
        sessions = tuple(SessionSummary(s.created_at, s.last_seen_at, s.source, s.client,
                                        s.stage)
                         for s in session.scalars(select(ConsoleSession).where(
                             ConsoleSession.account_id == row_id)
                             .order_by(ConsoleSession.last_seen_at.desc()).limit(20)))
    history: tuple[AuditEvent, ...] = ()
    more = False
    if permits(actor, Permission.AUDIT_READ):
        events, following = app.audit_view.newest(actor, EventFilter(user=username),
                                                  size=HISTORY)
        history, more = tuple(events), following is not None
    return AccountDetail(account, passkeys, sessions, history, more)
