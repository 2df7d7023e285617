"""Wiring: one :class:`App` holds the settings, database, store, audit log and clock.

Adapters build one ``App`` at start-up and call the services hanging off it; tests build
one per temporary data directory, with a fake clock where time matters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cached_property

from sqlalchemy.orm import Session

from gateway.accounts import AccountService
from gateway.audit import AuditLog
from gateway.auth import AuthService
from gateway.config import Settings
from gateway.db import make_engine, make_sessionmaker
from gateway.db.engine import check_reachable
from gateway.partner_keys import PartnerKeyService
from gateway.partners import PartnerService
from gateway.retention import RetentionService
from gateway.store import LocalStore, ObjectStore
from gateway.transfers import TransferService

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The real clock: an aware UTC datetime."""
    return datetime.now(UTC)


class App:
    """The gateway's services over one installation."""

    def __init__(self, settings: Settings, *, clock: Clock = utc_now,
                 store: ObjectStore | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.engine = make_engine(settings.effective_database_url)
        self.sessions = make_sessionmaker(self.engine)
        self._store = store

    def check_database(self) -> None:
        """Raise :class:`~gateway.errors.DatabaseError` if the database cannot be reached."""
        check_reachable(self.engine)

    @cached_property
    def store(self) -> ObjectStore:
        return self._store or LocalStore(self.settings.store_dir)

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog.from_settings(self.settings, clock=self.clock)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on any exception."""
        with self.sessions.begin() as session:
            yield session

    @cached_property
    def partners(self) -> PartnerService:
        return PartnerService(self)

    @cached_property
    def accounts(self) -> AccountService:
        return AccountService(self)

    @cached_property
    def auth(self) -> AuthService:
        return AuthService(self)

    @cached_property
    def keys(self) -> PartnerKeyService:
        return PartnerKeyService(self)

    @cached_property
    def transfers(self) -> TransferService:
        return TransferService(self)

    @cached_property
    def retention(self) -> RetentionService:
        return RetentionService(self)

    def close(self) -> None:
        """Release database connections."""
        self.engine.dispose()
