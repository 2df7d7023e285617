"""Failure counts and lockouts, shared by every worker and node through the database.

Each change is one statement whose result decides (an upsert that returns the new count,
an update whose row count says who locked), so concurrent failures on PostgreSQL are
counted exactly and a lockout is recorded once, whichever worker reaches it first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from gateway.db.models import AuthThrottle


@dataclass(frozen=True)
class FailureCount:
    """The count after a failure, and the lock this failure set, if it set one."""

    failures: int
    locked_until: datetime | None


def locked_until(session: Session, *, scope: str, key: str, now: datetime) -> datetime | None:
    """When the lock on ``scope:key`` ends, if one is in force at ``now``."""
    until = session.scalar(select(AuthThrottle.locked_until).where(
        AuthThrottle.scope == scope, AuthThrottle.key == key))
    return until if until is not None and until > now else None


def _insert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def count_failure(session: Session, *, scope: str, key: str, now: datetime,
                  window: timedelta, threshold: int) -> FailureCount:
    """Add one failure to ``scope:key`` (a fresh window once the old one is over).

    Reaching ``threshold`` locks it until ``now + window``; ``locked_until`` in the
    result is set only for the one call whose failure set the lock.
    """
    table = AuthThrottle
    stale = table.window_start < now - window
    upsert = _insert(session)(table).values(scope=scope, key=key, failures=1,
                                            window_start=now, locked_until=None)
    upsert = upsert.on_conflict_do_update(
        index_elements=[table.scope, table.key],
        set_={"failures": case((stale, 1), else_=table.failures + 1),
              "window_start": case((stale, now), else_=table.window_start),
              "locked_until": case((stale, None), else_=table.locked_until)},
    ).returning(table.failures)
    failures = int(session.execute(upsert).scalar_one())
    if failures < threshold:
        return FailureCount(failures, None)
    until = now + window
    locked = session.execute(update(table).where(
        table.scope == scope, table.key == key, table.locked_until.is_(None))
        .values(locked_until=until).execution_options(synchronize_session=False))
    return FailureCount(failures, until if locked.rowcount == 1 else None)  # type: ignore[attr-defined]  # A CursorResult.


def clear(session: Session, *, scope: str, key: str) -> None:
    """Forget the failures of ``scope:key`` (after a success)."""
    session.execute(delete(AuthThrottle).where(AuthThrottle.scope == scope,
                                               AuthThrottle.key == key)
                    .execution_options(synchronize_session=False))
