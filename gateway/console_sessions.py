"""Console sessions, kept server-side: the browser holds a random token, the database its
SHA-256, the stage the sign-in reached and the timestamps that end it.

A session ends after 15 minutes without a request, 8 hours after sign-in whatever its
use, or 5 minutes after the password while the second factor is still missing. Only a
session in the ``full`` stage acts for its account, and then as a *standing* actor
(:attr:`~gateway.actors.Actor.standing`): approving or revoking a key needs a second
factor given for that decision.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.actors import Actor
from gateway.db.models import Account, ConsoleSession, Role
from gateway.errors import AuthenticationError
from gateway.integrity import Integrity, IntegrityViolationError

IDLE = timedelta(minutes=15)
ABSOLUTE = timedelta(hours=8)
PENDING = timedelta(minutes=5)
CLIENT = "console"


class Stage(enum.StrEnum):
    """How far a sign-in got."""

    SECOND_FACTOR = "mfa"    # password accepted; a one-time code or passkey is due
    ENROL = "enrol"          # one-time password accepted; new password and TOTP are due
    PASSKEY = "passkey"      # signed in, but console_require_passkey wants one registered
    FULL = "full"


class SessionExpiredError(AuthenticationError):
    """The session token is unknown, ended, or timed out."""


@dataclass(frozen=True)
class SessionInfo:
    """A console session as the adapters see it (never the token itself)."""

    id: str
    stage: Stage
    username: str
    account_id: int
    role: Role
    csrf: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    actor: Actor

    @property
    def complete(self) -> bool:
        return self.stage is Stage.FULL


@dataclass(frozen=True)
class Opened:
    """A new session and its token, for the adapter to hand to the browser once."""

    token: str
    session: SessionInfo


def token_id(token: str) -> str:
    """The stored id of a session token."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def expires_at(row: ConsoleSession) -> datetime:
    """When ``row`` ends unless it is used again before."""
    idle = IDLE if row.stage == Stage.FULL else PENDING
    return min(row.last_seen_at + idle, row.created_at + ABSOLUTE)


def info(row: ConsoleSession, account: Account) -> SessionInfo:
    """The value of a session row; its actor grants nothing before the ``full`` stage."""
    stage = Stage(row.stage)
    if stage is Stage.FULL:
        actor = Actor.account(username=account.username, account_id=account.id,
                              role=account.role, partner_id=account.partner_id,
                              source=row.source, client=CLIENT, standing=True)
    else:
        actor = Actor.anonymous(claimed=account.username, source=row.source, client=CLIENT)
    return SessionInfo(row.id, stage, account.username, account.id, account.role, row.csrf,
                       row.created_at, row.last_seen_at, expires_at(row), actor)


def open_session(session: Session, account: Account, *, stage: Stage, source: str,
                 client: str | None, now: datetime) -> tuple[str, ConsoleSession]:
    """Add a session row for ``account``; return its token and the row."""
    token = secrets.token_urlsafe(32)
    row = ConsoleSession(id=token_id(token), account_id=account.id, stage=stage.value,
                         csrf=secrets.token_urlsafe(32), created_at=now, last_seen_at=now,
                         source=source[:200], client=(client or "")[:200])
    session.add(row)
    return token, row


def rotate(session: Session, row: ConsoleSession, account: Account, *, stage: Stage,
           now: datetime) -> Opened:
    """Replace ``row`` by a session with a new token at ``stage`` (on every step up, so a
    token seen before the second factor is worth nothing after it)."""
    token, fresh = open_session(session, account, stage=stage, source=row.source,
                                client=row.client, now=now)
    fresh.created_at = row.created_at
    session.delete(row)
    session.flush()
    return Opened(token, info(fresh, account))


def load(session: Session, session_id: str, *, now: datetime, integrity: Integrity,
         stages: tuple[Stage, ...] | None = None) -> tuple[ConsoleSession, Account]:
    """The live session ``session_id`` (see :func:`token_id`) and its account, or raise
    :class:`SessionExpiredError`.

    An expired session, or one whose account was disabled, is deleted on the way; one
    whose row or account the gateway did not write (no valid seal) grants nothing and
    the violation is recorded. (The caller commits both before it raises.)
    """
    row = session.get(ConsoleSession, session_id, with_for_update=True) if session_id else None
    if row is None:
        raise SessionExpiredError("not signed in, or the session has ended")
    account = session.get(Account, row.account_id)
    for checked in (row, account):
        try:
            if checked is not None:
                integrity.verify(checked)
        except IntegrityViolationError as violation:
            integrity.record(session, violation)
            raise SessionExpiredError("the session failed its integrity check; sign in "
                                      "again") from violation
    if account is None or account.disabled or expires_at(row) <= now:
        session.delete(row)
        raise SessionExpiredError("the session has ended; sign in again")
    if stages is not None and Stage(row.stage) not in stages:
        raise SessionExpiredError(f"this step is not available in the {row.stage!r} stage "
                                  "of the sign-in")
    return row, account


def end_all(session: Session, account_id: int) -> int:
    """Delete every session of an account; return how many there were."""
    # Row by row, not one DELETE: each removal is recorded in the log (integrity.py), so
    # a copy of an ended session put back grants nothing.
    rows = list(session.scalars(select(ConsoleSession).where(
        ConsoleSession.account_id == account_id)))
    for row in rows:
        session.delete(row)
    session.flush()
    return len(rows)
