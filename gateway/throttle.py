"""Failure counts, lockouts and back-off: the sign-in throttling policy, in one place.

Two scopes, each with its own rule, shared by every worker and node through the database
(the SFTP sign-in in :mod:`gateway.auth` and the console's password sign-in both use
these functions):

- **account** — failures of the account holder's own secret (a wrong one-time code or
  password *after* the first factor proved who is signing in). ``lockout_threshold``
  failures, each within ``lockout_minutes`` of the previous one, lock the account for
  ``lockout_minutes``. Nothing before that proof counts here, so nobody can lock an
  account by claiming its name.
- **source** — failures before any proof (an unknown account, an unregistered key): the
  address is slowed, never banned. After ``source_throttle_threshold`` of them it must
  wait ``source_backoff_seconds``, doubling with each further failure up to
  ``source_backoff_max_minutes``; its failures are forgotten after twice that maximum
  without one. While it waits, only attempts that prove an account (a verified key) get
  through, so colleagues behind the same address are never held back by it.

Deleting or resetting these rows lifts nothing: blocks and the failures counted against
an account are also kept from the audit log (:mod:`gateway.ledger`), and the larger of
the two decides.

A connection counts at most once per scope, however many prompts it answers (the
caller keeps track, see :class:`gateway.auth.LoginAttempt`). Each change is one statement
whose result decides (an upsert that returns the new count, an update whose row count
says who set the block), so concurrent failures on PostgreSQL are counted exactly and a
block is recorded once, whichever worker reaches it first.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import case, delete, func, or_, select, update
from sqlalchemy.orm import Session

from gateway.db.models import AuthThrottle

if TYPE_CHECKING:
    from gateway.config import Settings

# Past this many doublings the block is at its maximum anyway; it keeps 2**n small.
_MAX_DOUBLINGS = 32


class Scope(enum.StrEnum):
    """What a failure counts against."""

    ACCOUNT = "account"
    SOURCE = "source"


@dataclass(frozen=True)
class Rule:
    """How one scope counts failures and how long it blocks."""

    threshold: int
    # Failures are forgotten once this long has passed without one.
    forget_after: timedelta
    first_block: timedelta
    max_block: timedelta

    def block_for(self, failures: int) -> timedelta | None:
        """How long ``failures`` failures block; None below the threshold."""
        if failures < self.threshold:
            return None
        doublings = min(failures - self.threshold, _MAX_DOUBLINGS)
        block: timedelta = self.first_block * (2 ** doublings)
        return min(block, self.max_block)


@dataclass(frozen=True)
class Policy:
    """The rule of each scope, from the settings."""

    account: Rule
    source: Rule

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        lock = timedelta(minutes=settings.lockout_minutes)
        ceiling = timedelta(minutes=settings.source_backoff_max_minutes)
        first = min(timedelta(seconds=settings.source_backoff_seconds), ceiling)
        return cls(account=Rule(settings.lockout_threshold, lock, lock, lock),
                   source=Rule(settings.source_throttle_threshold, 2 * ceiling, first, ceiling))

    def rule(self, scope: Scope) -> Rule:
        return self.account if scope is Scope.ACCOUNT else self.source


@dataclass(frozen=True)
class FailureCount:
    """The count after a failure, and the block this failure set, if it set one."""

    failures: int
    blocked_until: datetime | None


@dataclass(frozen=True)
class Block:
    """A scope key's failures and the block in force (for listings)."""

    scope: Scope
    key: str
    failures: int
    blocked_until: datetime | None


class LoggedLocks(Protocol):
    """The blocks the audit log records (:class:`gateway.ledger.Ledger`): a block row
    deleted behind the gateway's back is still in force there."""

    def locked_until(self, subject: str, now: datetime,
                     session: Session | None = None) -> datetime | None: ...


def blocked_until(session: Session, *, scope: Scope, key: str, now: datetime,
                  logged: LoggedLocks) -> datetime | None:
    """When the block on ``scope:key`` ends, if one is in force at ``now`` in the
    database or in the log."""
    until = session.scalar(select(AuthThrottle.locked_until).where(
        AuthThrottle.scope == scope.value, AuthThrottle.key == key))
    stored = until if until is not None and until > now else None
    recorded = logged.locked_until(f"{scope.value}:{key}", now, session)
    return max((m for m in (stored, recorded) if m is not None), default=None)


def _insert(session: Session) -> Any:
    # Imported here, the one in use: each dialect package takes 5 to 20 ms to load, and
    # the engine has loaded its own already.
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def record_failure(session: Session, policy: Policy, *, scope: Scope, key: str,
                   now: datetime, at_least: int = 0) -> FailureCount:
    """Count one failure against ``scope:key`` and block it if the rule says so.

    A key quiet for the rule's ``forget_after`` starts again from one. A block is set
    only when none is in force (failures during a block are not expected to be counted;
    concurrent ones are not allowed to lengthen it), and ``blocked_until`` in the result
    only for the one call that set it, so that each block is audited once.
    """
    rule, table = policy.rule(scope), AuthThrottle
    last = func.coalesce(table.last_failure, table.window_start)
    stale = last < now - rule.forget_after
    upsert = _insert(session)(table).values(scope=scope.value, key=key, failures=1,
                                            window_start=now, last_failure=now,
                                            locked_until=None)
    upsert = upsert.on_conflict_do_update(
        index_elements=[table.scope, table.key],
        set_={"failures": case((stale, 1), else_=table.failures + 1),
              "window_start": case((stale, now), else_=table.window_start),
              "locked_until": case((stale, None), else_=table.locked_until),
              "last_failure": now},
    ).returning(table.failures)
    # ``at_least``: the failures the log counted, so deleting the row resets nothing.
    failures = max(int(session.execute(upsert).scalar_one()), at_least)
    block = rule.block_for(failures)
    if block is None:
        return FailureCount(failures, None)
    until = now + block
    blocked = session.execute(update(table).where(
        table.scope == scope.value, table.key == key,
        or_(table.locked_until.is_(None), table.locked_until <= now))
        .values(locked_until=until).execution_options(synchronize_session=False))
    return FailureCount(failures, until if blocked.rowcount == 1 else None)  # type: ignore[attr-defined]  # A CursorResult.


def clear(session: Session, *, scope: Scope, key: str) -> Block | None:
    """Forget the failures and any block of ``scope:key`` (after a success, or an admin's
    unlock); return what there was."""
    row = session.scalar(select(AuthThrottle).where(
        AuthThrottle.scope == scope.value, AuthThrottle.key == key))
    if row is None:
        return None
    found = Block(scope, key, row.failures, row.locked_until)
    session.execute(delete(AuthThrottle).where(AuthThrottle.scope == scope.value,
                                               AuthThrottle.key == key)
                    .execution_options(synchronize_session=False))
    return found


def blocks(session: Session, *, scope: Scope, now: datetime) -> list[Block]:
    """Every key of ``scope`` with a block in force at ``now``, soonest end first."""
    rows = session.scalars(select(AuthThrottle).where(
        AuthThrottle.scope == scope.value, AuthThrottle.locked_until > now)
        .order_by(AuthThrottle.locked_until))
    return [Block(scope, row.key, row.failures, row.locked_until) for row in rows]


def failures(session: Session, *, scope: Scope, key: str, now: datetime,
             policy: Policy) -> int:
    """The failures of ``scope:key`` that still count at ``now``."""
    row = session.scalar(select(AuthThrottle).where(
        AuthThrottle.scope == scope.value, AuthThrottle.key == key))
    if row is None:
        return 0
    last = row.last_failure or row.window_start
    return 0 if last < now - policy.rule(scope).forget_after else row.failures
