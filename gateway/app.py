"""Wiring: one :class:`App` holds the settings, database, store, audit log and clock.

Adapters build one ``App`` at start-up and call the services hanging off it; tests build
one per temporary data directory, with a fake clock where time matters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cached_property

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from gateway import state_keys
from gateway.accounts import AccountService
from gateway.actors import Actor
from gateway.audit import AuditLog, AuditTag
from gateway.audit_service import AuditService
from gateway.auth import AuthService
from gateway.authority import AuthorityService
from gateway.authz import Authorizer
from gateway.config import Settings
from gateway.console_auth import ConsoleAuthService
from gateway.dashboard import DashboardService
from gateway.db import make_engine, make_sessionmaker
from gateway.db.engine import check_reachable, describe_error, snapshot, unavailable_as_error
from gateway.db.models import SettingValue
from gateway.errors import ConflictError, DatabaseError
from gateway.exposure import ExposureService
from gateway.integrity import KEYS_INFO, Integrity, IntegrityViolationError
from gateway.machines import MachineService
from gateway.partner_keys import PartnerKeyService
from gateway.partners import PartnerService
from gateway.passkeys import PasskeyService
from gateway.resealing import finish_interrupted_rotation
from gateway.retention import RetentionService
from gateway.state_keys import StateKeys
from gateway.store import ObjectStore, open_store
from gateway.tokens import TokenService
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
        self.engine = make_engine(settings.effective_database_url,
                                  busy_timeout_seconds=settings.sqlite_busy_timeout_seconds)
        # Sessions carry the state keys, so every row they write is sealed (integrity.py).
        self.sessions = make_sessionmaker(self.engine,
                                          info={KEYS_INFO: lambda: self.state_keys})
        self._store = store

    def check_database(self) -> None:
        """Raise :class:`~gateway.errors.DatabaseError` if the database cannot be reached."""
        check_reachable(self.engine)

    def check_ready(self) -> None:
        """Raise if the database cannot be reached or the state key cannot be loaded."""
        self.check_database()
        self.state_keys  # noqa: B018  # Loading it is the check (and finishes a rotation).

    @cached_property
    def store(self) -> ObjectStore:
        return self._store or open_store(self.settings)

    @cached_property
    def state_keys(self) -> StateKeys:
        """The keys in ``keys/state_key`` (and ``state_key.new`` mid-rotation)."""
        keys = state_keys.load(self.settings.keys_dir)
        if len(keys.key_ids) > 1:
            keys = finish_interrupted_rotation(self, keys)
        return keys

    @cached_property
    def integrity(self) -> Integrity:
        return Integrity(self)

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog.from_settings(self.settings, clock=self.clock,
                                      entry_keys=self.state_keys)

    @contextmanager
    def transaction(self, *, conflict: str | None = None) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on any exception.

        This is the one place database errors become gateway errors: a unique or foreign
        key constraint that refuses the change is a :class:`ConflictError` (saying
        ``conflict`` when given, so a lost race reads like the slow path); a database
        that cannot be reached, or stays locked past the busy timeout, is a
        :class:`~gateway.errors.DatabaseUnavailableError`; anything else the database
        raises is a :class:`DatabaseError`.
        """
        try:
            with unavailable_as_error(), self.sessions.begin() as session:
                yield session
        except IntegrityViolationError as violation:
            # The transaction that met the forged row is gone; the alarm is not.
            self.integrity.record_now(violation)
            raise
        except IntegrityError as exc:
            raise ConflictError(conflict or "the change conflicts with the current "
                                "state; reload and try again") from exc
        except DBAPIError as exc:
            raise DatabaseError(f"database error: {describe_error(exc)}") from exc

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session: on SQLite it takes no write lock, so readers never queue."""
        try:
            with unavailable_as_error(), snapshot(self.engine) as session:
                yield session
        except IntegrityViolationError as violation:
            self.integrity.record_now(violation)
            raise
        except DBAPIError as exc:
            raise DatabaseError(f"database error: {describe_error(exc)}") from exc

    @cached_property
    def authz(self) -> Authorizer:
        return Authorizer(self)

    def record_settings(self, *, component: str) -> None:
        """Audit each setting whose value differs from the last one the log saw.

        Services call this as they start, so a change made in ``blindpost.toml`` or the
        environment is in the log (``setting:change``, old and new value) before it acts.
        """
        actor = Actor.system(component)
        with self.transaction() as session:
            # Under the log's sequencer lock, so two services starting at once record a
            # change once.
            self.audit.lock(session)
            known = {row.name: row for row in session.scalars(select(SettingValue))}
            for name, value in self.settings.audited_values().items():
                row = known.get(name)
                if row is not None and row.value == value:
                    continue
                self.audit.record(session, tag=AuditTag.SETTING_CHANGE, actor=actor,
                                  subject=f"setting:{name}",
                                  details={"old": row.value if row else None, "new": value})
                if row is None:
                    session.add(SettingValue(name=name, value=value))
                else:
                    row.value = value

    @cached_property
    def audit_view(self) -> AuditService:
        return AuditService(self)

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
    def machines(self) -> MachineService:
        return MachineService(self)

    @cached_property
    def authority(self) -> AuthorityService:
        return AuthorityService(self)

    @cached_property
    def keys(self) -> PartnerKeyService:
        return PartnerKeyService(self)

    @cached_property
    def transfers(self) -> TransferService:
        return TransferService(self)

    @cached_property
    def retention(self) -> RetentionService:
        return RetentionService(self)

    @cached_property
    def console_auth(self) -> ConsoleAuthService:
        return ConsoleAuthService(self)

    @cached_property
    def passkeys(self) -> PasskeyService:
        return PasskeyService(self)

    @cached_property
    def dashboard(self) -> DashboardService:
        return DashboardService(self)

    @cached_property
    def tokens(self) -> TokenService:
        return TokenService(self)

    @cached_property
    def exposure(self) -> ExposureService:
        return ExposureService(self)

    def close(self) -> None:
        """Release database connections."""
        self.engine.dispose()
