"""Wiring: one :class:`App` holds the settings, database, store, audit log and clock.

Adapters build one ``App`` at start-up and call the services hanging off it; tests build
one per temporary data directory, with a fake clock where time matters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from gateway import state_keys
from gateway.actors import Actor
from gateway.audit import AuditLog, AuditTag
from gateway.config import Settings
from gateway.db import make_engine, make_sessionmaker
from gateway.db.engine import check_reachable, describe_error, snapshot, unavailable_as_error
from gateway.db.models import SettingValue
from gateway.errors import ConflictError, DatabaseError
from gateway.integrity import (
    KEYS_INFO,
    STATE_INFO,
    Integrity,
    IntegrityViolationError,
    ensure_baseline,
)
from gateway.ledger import FOLLOWED_TAGS, ROWS_PER_EVENT, Ledger, LogRolledBackError
from gateway.state_keys import StateKeys

if TYPE_CHECKING:
    # The services are imported when first used: a command pays only for those it calls
    # (`partner list` needs neither the console's nor the store's libraries).
    from gateway.accounts import AccountService
    from gateway.agreements import AgreementService
    from gateway.audit.witnessing import Witnessing
    from gateway.audit_service import AuditService
    from gateway.auth import AuthService
    from gateway.authority import AuthorityService
    from gateway.authz import Authorizer
    from gateway.consequences import ConsequenceService
    from gateway.console_auth import ConsoleAuthService
    from gateway.dashboard import DashboardService
    from gateway.exposure import ExposureService
    from gateway.machines import MachineService
    from gateway.notify.service import NotificationService
    from gateway.partner_keys import PartnerKeyService
    from gateway.partners import PartnerService
    from gateway.passkeys import PasskeyService
    from gateway.portal import PortalService
    from gateway.portal_enrolment import PortalEnrolmentService
    from gateway.retention import RetentionService
    from gateway.store import ObjectStore
    from gateway.tokens import TokenService
    from gateway.transfers import TransferService
    from gateway.web_uploads import WebUploadService

Clock = Callable[[], datetime]
log = logging.getLogger(__name__)


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
        # Sessions carry the state keys, so every row they write is sealed, and the
        # recorder, so every sealed row they write or delete is in the log (integrity.py).
        self.sessions = make_sessionmaker(self.engine,
                                          info={KEYS_INFO: lambda: self.state_keys,
                                                STATE_INFO: self._record_state_rows})
        self._store = store

    def check_database(self) -> None:
        """Raise :class:`~gateway.errors.DatabaseError` if the database cannot be reached."""
        check_reachable(self.engine)

    def check_ready(self, *, serving: bool = False) -> None:
        """Raise if the database cannot be reached or the state key cannot be loaded, and
        record the current-state baseline once.

        An audit log that cannot be followed (rolled back, a gap, an entry without a
        valid MAC) grants nothing either way; a service about to serve (``serving``)
        refuses to start, naming why, while the commands that investigate it still run.
        """
        self.check_database()
        self.state_keys  # noqa: B018  # Loading it is the check (and finishes a rotation).
        try:
            ensure_baseline(self)
        except LogRolledBackError as exc:
            if serving:
                raise DatabaseError(str(exc)) from exc
            log.error("every grant is refused: %s", exc)

    @cached_property
    def ledger(self) -> Ledger:
        """This process's view of which version of each granting row is current."""
        return Ledger(engine=self.engine, keys=lambda: self.state_keys,
                      checkpoint_file=self.settings.audit_checkpoint_path,
                      snapshot_file=self.settings.state_snapshot_path,
                      bootstrap=self._replay_log)

    def _replay_log(self, apply: Callable[[int, Mapping[str, Any]], None]) -> int:
        """Verify the whole log, handing each entry to ``apply``; return its size."""
        from gateway.audit.checkpoint_file import read_latest_checkpoint
        from gateway.audit.errors import VerificationError
        from gateway.audit.verify import verify_database

        kept = read_latest_checkpoint(self.settings.audit_checkpoint_path)
        try:
            with self.read() as session:
                report = verify_database(
                    session, verifier=self.audit.verifier, entry_keys=self.state_keys,
                    kept=kept, reader=lambda index, _time, tag, leaf: (
                        apply(index, json.loads(leaf)) if tag in FOLLOWED_TAGS else None))
        except VerificationError as exc:
            raise LogRolledBackError(f"{exc.summary}; run `blindpost audit verify`") from exc
        return report.size

    def _record_state_rows(self, session: Session, rows: list[str], changed: bool) -> None:
        """Record rows a flush sealed or removed; a change to an existing row is also
        checkpointed at once, so it cannot be cut from the log's tail unnoticed."""
        for start in range(0, len(rows), ROWS_PER_EVENT):
            self.audit.record(session, tag=AuditTag.STATE_SEAL, actor=Actor.system("state"),
                              subject="state:rows",
                              details={"rows": rows[start:start + ROWS_PER_EVENT]})
        if changed:
            self.audit.checkpoint(session)

    @cached_property
    def store(self) -> ObjectStore:
        from gateway.store import open_store

        return self._store or open_store(self.settings)

    @cached_property
    def state_keys(self) -> StateKeys:
        """The keys in ``keys/state_key`` (and ``state_key.new`` mid-rotation).

        Loading registers this process as a user of the key, which a rotation refuses
        to run beside (and waits for a running rotation first)."""
        if self.settings.keys_dir.is_dir():
            state_keys.register_user(self.settings.keys_dir)
        keys = state_keys.load(self.settings.keys_dir)
        if len(keys.key_ids) > 1:
            from gateway.resealing import finish_interrupted_rotation

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
        from gateway.authz import Authorizer

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
        from gateway.audit_service import AuditService

        return AuditService(self)

    @cached_property
    def partners(self) -> PartnerService:
        from gateway.partners import PartnerService

        return PartnerService(self)

    @cached_property
    def consequences(self) -> ConsequenceService:
        from gateway.consequences import ConsequenceService

        return ConsequenceService(self)

    @cached_property
    def accounts(self) -> AccountService:
        from gateway.accounts import AccountService

        return AccountService(self)

    @cached_property
    def auth(self) -> AuthService:
        from gateway.auth import AuthService

        return AuthService(self)

    @cached_property
    def machines(self) -> MachineService:
        from gateway.machines import MachineService

        return MachineService(self)

    @cached_property
    def authority(self) -> AuthorityService:
        from gateway.authority import AuthorityService

        return AuthorityService(self)

    @cached_property
    def agreements(self) -> AgreementService:
        from gateway.agreements import AgreementService

        return AgreementService(self)

    @cached_property
    def keys(self) -> PartnerKeyService:
        from gateway.partner_keys import PartnerKeyService

        return PartnerKeyService(self)

    @cached_property
    def transfers(self) -> TransferService:
        from gateway.transfers import TransferService

        return TransferService(self)

    @cached_property
    def web_uploads(self) -> WebUploadService:
        from gateway.web_uploads import WebUploadService

        return WebUploadService(self)

    @cached_property
    def retention(self) -> RetentionService:
        from gateway.retention import RetentionService

        return RetentionService(self)

    @cached_property
    def console_auth(self) -> ConsoleAuthService:
        from gateway.console_auth import ConsoleAuthService

        return ConsoleAuthService(self)

    @cached_property
    def passkeys(self) -> PasskeyService:
        from gateway.passkeys import PasskeyService

        return PasskeyService(self)

    @cached_property
    def portal(self) -> PortalService:
        from gateway.portal import PortalService

        return PortalService(self)

    @cached_property
    def portal_enrolment(self) -> PortalEnrolmentService:
        from gateway.portal_enrolment import PortalEnrolmentService

        return PortalEnrolmentService(self)

    @cached_property
    def dashboard(self) -> DashboardService:
        from gateway.dashboard import DashboardService

        return DashboardService(self)

    @cached_property
    def tokens(self) -> TokenService:
        from gateway.tokens import TokenService

        return TokenService(self)

    @cached_property
    def exposure(self) -> ExposureService:
        from gateway.exposure import ExposureService

        return ExposureService(self)

    @cached_property
    def notifications(self) -> NotificationService:
        from gateway.notify.service import NotificationService

        return NotificationService(self)

    @cached_property
    def witnessing(self) -> Witnessing:
        """The witnesses that cosign checkpoints (none unless ``audit_witnesses`` is set)."""
        from gateway.audit.witnessing import Witnessing

        return Witnessing(witnesses=self.settings.witnesses,
                          quorum=self.settings.audit_witness_quorum,
                          timeout=self.settings.audit_witness_timeout_seconds,
                          audit=self.audit, read=self.read, transaction=self.transaction,
                          clock=self.clock)

    def close(self) -> None:
        """Keep the followed state for the next start, and release database connections."""
        if "ledger" in self.__dict__:
            self.ledger.save_snapshot()
        self.engine.dispose()
