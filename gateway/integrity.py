"""Signed state: every row that grants something carries a seal the gateway made.

The breach this product answers began with a SQL injection that wrote rows the
application then trusted. Here, each granting row (accounts, SSH keys, TOTP enrolments,
partners, recipient keys, machine grants, authority changes, transfers) carries ``seal``:
an HMAC-SHA256, under a key derived from ``keys/state_key`` (never in the database), over
the RFC 8785 JSON of the table name and the row's granting fields, its primary key among
them. A row written or edited by anyone without that key — an injection, a leaked
database password, a tampered backup — has no valid seal; a valid row copied to another
identity, or a field swapped between rows, no longer matches its own.

Sealing needs no call in the services: a session made by :class:`~gateway.app.App`
carries the keys, and the flush hooks below seal every new or changed row of a sealed
table. Before changing a row they check its existing seal, so the gateway never
launders an injected row by editing it. Verifying is explicit, where trust is placed:
:meth:`Integrity.verify` at sign-in, before encrypting to a recipient, before applying a
limit. A failure grants nothing, is an ``integrity:violation`` audit event naming the
table and row, and a log line at error level.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import rfc8785
from sqlalchemy import delete, event, inspect, select
from sqlalchemy.orm import Session, UOWTransaction, object_session

from gateway.actors import Actor
from gateway.audit import AuditTag
from gateway.authz import Permission
from gateway.db.base import Base
from gateway.db.engine import reader
from gateway.db.models import (
    Account,
    Agreement,
    ApiToken,
    AuthorityChange,
    ConsoleCredential,
    ConsoleSession,
    MachineGrant,
    Partner,
    PartnerKey,
    Passkey,
    PortalEnrolment,
    SSHKey,
    TOTPSecret,
    Transfer,
)
from gateway.errors import NotFoundError, PolicyError, UsageError
from gateway.ledger import (
    PENDING_ROWS,
    REMOVED,
    ROWS_PER_EVENT,
    LedgerState,
    LogRolledBackError,
    RowKey,
    encode_row,
    row_digest,
)
from gateway.notify.models import NotificationSubscription
from gateway.state_keys import StateKeys

if TYPE_CHECKING:
    from gateway.app import App

log = logging.getLogger(__name__)

# The fields of each table that grant something, the primary key first. Changing a list
# invalidates the seals made with the old one: rotate (which re-seals) in the same upgrade.
SEALED_FIELDS: dict[type[Base], tuple[str, ...]] = {
    Partner: ("id", "slug", "retention_seconds", "max_downloads", "disabled"),
    Account: ("id", "username", "role", "partner_id", "password_hash", "disabled",
              "machine", "allow_from"),
    SSHKey: ("id", "account_id", "key_type", "key_data", "fingerprint", "shared"),
    TOTPSecret: ("account_id", "secret", "enrol_until"),
    PartnerKey: ("id", "partner_id", "recipient", "kind", "fingerprint", "state",
                 "proposed_by", "approved_by", "revoked_by"),
    Transfer: ("id", "partner_id", "name", "size", "sha256", "object_id", "uploaded_by",
               "expires_at", "max_downloads", "state", "data_format", "data_elements",
               "record_count", "elements_source"),
    # The console's credentials: an injected token, session or passkey would sign in.
    ApiToken: ("id", "name", "role", "token_hash", "expires_at", "revoked_at"),
    ConsoleSession: ("id", "account_id", "stage", "created_at"),
    Passkey: ("id", "account_id", "credential_id", "public_key", "sign_count"),
    ConsoleCredential: ("account_id", "enrolled_at"),
    MachineGrant: ("id", "account_id", "allow_from", "state", "proposed_by", "approved_by"),
    # A pending change to authority: an injected "approved" row must apply nothing.
    AuthorityChange: ("id", "kind", "target", "params", "state", "proposed_by",
                      "approved_by"),
    # A looser agreement put back would let forbidden columns through.
    Agreement: ("partner_id", "columns", "aliases", "max_records", "allow_opaque",
                "change_id"),
    # A code that lets its holder register a first portal passkey (gateway.portal_enrolment).
    PortalEnrolment: ("account_id", "code_hash", "expires_at"),
    # Where an account's notifications go: an injected or redirected address is refused.
    NotificationSubscription: ("account_id", "email"),
}
# Fields added to a table after its rows were first sealed, with the value every older
# row holds. A field at that value is left out of the sealed message, so seals made
# before it existed stay valid without re-sealing; any other value is covered like every
# field (the message with the field and the message without it differ, so setting it
# to its initial value behind the gateway's back breaks the seal too).
ADDED_FIELDS: dict[str, dict[str, object]] = {
    "accounts": {"machine": False, "allow_from": None},
    "ssh_keys": {"shared": False},
    "totp_secrets": {"enrol_until": None},
    "transfers": {"data_format": None, "data_elements": None, "record_count": None,
                  "elements_source": None},
}
# A session's info holds, under this name, a function returning the state keys (sessions
# made by App do; a session without it seals nothing, as an attacker's would).
KEYS_INFO = "blindpost.state_keys"
# A session's info holds, under this name, the function that records the rows a flush
# sealed or deleted (App.record_state_rows): the log is what says which version is current.
STATE_INFO = "blindpost.state_recorder"
_TO_SEAL = "blindpost.to_seal"
_REMOVED_ROWS = "blindpost.removed_rows"

StateRecorder = Callable[[Session, list[str], bool], None]


class IntegrityViolationError(PolicyError):
    """A row's seal does not match it (it was written or changed outside the gateway), or
    it is not the current version the audit log records (an old copy put back)."""

    def __init__(self, table: str, row: str, reason: str, *, transient: bool = False) -> None:
        super().__init__(f"integrity check failed for {table} row {row} ({reason}); it grants "
                         "nothing. See `blindpost integrity check` and docs/security.md")
        self.table = table
        self.row = row
        self.reason = reason
        # The integrity:violation alarm is raised once; the refusal it causes is audited
        # separately (access:denied, login failure) by whoever refuses. A row that changed
        # while a request held it is refused without an alarm: nobody forged anything.
        self.recorded = transient


def _plain(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def table_of(row: Base) -> str:
    return str(row.__tablename__)


def row_label(row: Base) -> str:
    """The row's primary key, as violations name it."""
    return str(getattr(row, SEALED_FIELDS[type(row)][0]))


def seal_message(table: str, values: dict[str, object]) -> bytes:
    """The canonical bytes a seal covers: table name and granting fields (an added field
    at its initial value left out, see :data:`ADDED_FIELDS`)."""
    initial = ADDED_FIELDS.get(table, {})
    document = {"table": table, "fields": {
        name: _plain(value) for name, value in values.items()
        if name not in initial or value != initial[name]}}
    return rfc8785.dumps(document)  # type: ignore[arg-type]  # Plain values only.


def current_values(row: Base) -> dict[str, object]:
    return {name: getattr(row, name) for name in SEALED_FIELDS[type(row)]}


def _before_change(row: Base, name: str) -> object:
    """An attribute as the database holds it, before this flush changes it."""
    history = inspect(row).attrs[name].history
    return history.deleted[0] if history.deleted else getattr(row, name)


def _granting_fields_changed(row: Base) -> bool:
    state = inspect(row)
    return any(state.attrs[name].history.has_changes() for name in SEALED_FIELDS[type(row)])


def is_valid(keys: StateKeys, row: Base) -> bool:
    """Whether ``row``'s seal matches its current granting fields."""
    return _matches(keys, table_of(row), current_values(row), getattr(row, "seal", None))


def _was_valid(keys: StateKeys, row: Base) -> bool:
    """Whether ``row``'s seal matched it as the database holds it, before this flush."""
    values = {name: _before_change(row, name) for name in SEALED_FIELDS[type(row)]}
    seal_value = _before_change(row, "seal")
    return _matches(keys, table_of(row), values, seal_value if isinstance(seal_value, str)
                    else None)


def _matches(keys: StateKeys, table: str, values: dict[str, object],
             seal_value: str | None) -> bool:
    return bool(seal_value) and keys.check_mac("row", seal_message(table, values),
                                               seal_value or "")


def _seal_check(keys: StateKeys, row: Base) -> tuple[bytes, str | None]:
    """``row``'s sealed message (one encoding serves the seal and the digest) and why
    its seal fails, or None when it holds."""
    message = seal_message(table_of(row), current_values(row))
    seal_value = getattr(row, "seal", None)
    if not seal_value:
        return message, "no seal"
    if not keys.check_mac("row", message, seal_value):
        return message, "seal does not match"
    return message, None


def digest_of(row: Base) -> str:
    """The digest of ``row``'s granting fields, as ``state:seal`` events record it."""
    return row_digest(seal_message(table_of(row), current_values(row)))


def seal(keys: StateKeys, row: Base) -> None:
    """Set ``row.seal`` for its current granting fields."""
    row.seal = keys.mac("row", seal_message(table_of(row), current_values(row)))  # type: ignore[attr-defined]  # Every sealed model has the column.


def _session_keys(session: Session) -> StateKeys | None:
    provider: Callable[[], StateKeys] | None = session.info.get(KEYS_INFO)
    return provider() if provider is not None else None


@event.listens_for(Session, "before_flush")
def _check_before_change(session: Session, _flush: UOWTransaction, _instances: Any) -> None:
    keys = _session_keys(session)
    if keys is None:
        return
    # Editing a row vouches for it with a fresh seal, so the old one must hold: an
    # injected row stays unsealed even when an admin later changes it.
    for row in session.dirty:
        if (type(row) in SEALED_FIELDS and _granting_fields_changed(row)
                and not _was_valid(keys, row)):
            raise IntegrityViolationError(table_of(row), row_label(row), "seal does not match")


@event.listens_for(Session, "after_flush")
def _collect(session: Session, _flush: UOWTransaction) -> None:
    # New rows, and rows whose granting fields changed (their old seal was checked in
    # before_flush). A row whose other columns changed (a download count) keeps its
    # seal, valid or not: the gateway vouches only for what it wrote.
    if session.info.get(KEYS_INFO) is None:
        return
    new = [row for row in session.new if type(row) in SEALED_FIELDS]
    changed = [row for row in session.dirty
               if type(row) in SEALED_FIELDS and _granting_fields_changed(row)]
    if new or changed:
        session.info.setdefault(_TO_SEAL, []).extend((row, False) for row in new)
        session.info[_TO_SEAL].extend((row, True) for row in changed)
    removed = [encode_row(table_of(row), row_label(row), REMOVED)
               for row in session.deleted if type(row) in SEALED_FIELDS]
    if removed:
        session.info.setdefault(_REMOVED_ROWS, []).extend(removed)


@event.listens_for(Session, "after_flush_postexec")
def _seal_flushed(session: Session, _flush: UOWTransaction) -> None:
    # After the flush every row has its primary key, which the seal covers; setting the
    # seal makes the row dirty again, and the commit flushes it before it ends.
    rows: list[tuple[Base, bool]] = session.info.pop(_TO_SEAL, [])
    removed: list[str] = session.info.pop(_REMOVED_ROWS, [])
    keys = _session_keys(session)
    if keys is None:
        return
    recorded = list(removed)
    for row, _changed in rows:
        seal(keys, row)
        recorded.append(encode_row(table_of(row), row_label(row), digest_of(row)))
    record_rows(session, recorded, changed=bool(removed) or any(c for _, c in rows))


def record_rows(session: Session, rows: list[str], *, changed: bool) -> None:
    """Record sealed or removed rows (``table/row/digest``) in the audit log, in the
    session's transaction, and remember them as this transaction's own."""
    recorder: StateRecorder | None = session.info.get(STATE_INFO)
    if not rows or recorder is None:
        return
    pending: dict[RowKey, str] = session.info.setdefault(PENDING_ROWS, {})
    for text in rows:
        table, _, rest = text.partition("/")
        label, _, digest = rest.rpartition("/")
        pending[(table, label)] = digest
    recorder(session, rows, changed)


@dataclass(frozen=True)
class Finding:
    """One row that fails its seal."""

    table: str
    row: str
    reason: str

    def __str__(self) -> str:
        return f"{self.table} row {self.row}: {self.reason}"


@dataclass(frozen=True)
class IntegrityReport:
    """What ``blindpost integrity check`` found."""

    checked: int
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not self.findings


class Integrity:
    """Verification of sealed rows, and the audit of what fails."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._log_alarmed = False

    @property
    def keys(self) -> StateKeys:
        return self._app.state_keys

    def verify(self, row: Base) -> None:
        """Raise :class:`IntegrityViolationError` unless ``row``'s seal matches it and it
        is the current version of the row, as the audit log records it."""
        message, failed = _seal_check(self.keys, row)
        if failed is not None:
            raise IntegrityViolationError(table_of(row), row_label(row), failed)
        try:
            stale = self._app.ledger.stale(table_of(row), row_label(row), row_digest(message),
                                           object_session(row))
        except LogRolledBackError as exc:
            raise self._log_failure(exc) from exc
        if stale is not None:
            changed = stale.transient and self._committed_digest(row) != digest_of(row)
            raise IntegrityViolationError(table_of(row), row_label(row), stale.reason
                                          if not changed else "changed while in use; try again",
                                          transient=changed)

    def _committed_digest(self, row: Base) -> str | None:
        """The digest of ``row`` as committed now, read apart from the caller's session."""
        model, key = type(row), SEALED_FIELDS[type(row)][0]
        with Session(reader(self._app.engine)) as session:
            fresh = session.scalar(select(model).where(getattr(model, key)
                                                       == getattr(row, key)))
            return digest_of(fresh) if fresh is not None else None

    def _log_failure(self, exc: LogRolledBackError) -> IntegrityViolationError:
        """The violation of a log that cannot be followed: alarmed once per process."""
        violation = IntegrityViolationError("audit_entries", "log", str(exc))
        violation.recorded = self._log_alarmed
        self._log_alarmed = True
        return violation

    def holds(self, session: Session, row: Base) -> bool:
        """Whether ``row``'s seal matches; one that does not is recorded (audited in
        ``session``'s transaction, logged), for callers that refuse rather than raise."""
        try:
            self.verify(row)
        except IntegrityViolationError as violation:
            self.record(session, violation)
            return False
        return True

    def record(self, session: Session, violation: IntegrityViolationError,
               actor: Actor | None = None) -> None:
        """Audit a violation in ``session``'s transaction and log it at error level."""
        if violation.recorded:
            return
        log.error("integrity violation: %s row %s: %s", violation.table, violation.row,
                  violation.reason)
        self._app.audit.record(session, tag=AuditTag.INTEGRITY_VIOLATION,
                               actor=actor or Actor.system("integrity"),
                               subject=f"{violation.table}:{violation.row}",
                               details={"table": violation.table, "row": violation.row,
                                        "reason": violation.reason})
        violation.recorded = True

    def record_now(self, violation: IntegrityViolationError, actor: Actor | None = None) -> None:
        """Audit a violation in a transaction of its own."""
        if violation.recorded:
            return
        with self._app.transaction() as session:
            self.record(session, violation, actor)

    def check(self, actor: Actor) -> IntegrityReport:
        """Verify every sealed row (for monitoring): its seal, that it is the current
        version the audit log records, and that no row the log says exists is missing.
        The findings are also audited."""
        self._app.authz.require(actor, Permission.AUDIT_READ)
        checked, findings = 0, []
        try:
            state: LedgerState | None = self._app.ledger.state
        except LogRolledBackError as exc:
            state, findings = None, [Finding("audit_entries", "log", str(exc))]
        seen: set[RowKey] = set()
        with self._app.read() as session:
            for row in self._rows(session):
                checked += 1
                key = (table_of(row), row_label(row))
                seen.add(key)
                reason = self._row_finding(row, state)
                if reason is not None:
                    findings.append(Finding(*key, reason))
        known = state.rows if state is not None else {}
        findings += [Finding(table, label, f"missing: the audit log records it at entry "
                             f"{version.index}, the database has no such row")
                     for (table, label), version in sorted(known.items())
                     if version.digest != REMOVED and (table, label) not in seen]
        if findings:
            with self._app.transaction() as session:
                for finding in findings:
                    self.record(session, IntegrityViolationError(finding.table, finding.row,
                                                            finding.reason), actor)
        return IntegrityReport(checked, tuple(findings))

    def _row_finding(self, row: Base, state: LedgerState | None) -> str | None:
        message, failed = _seal_check(self.keys, row)
        if failed is not None:
            return failed
        stale = state.judge((table_of(row), row_label(row)), row_digest(message)) \
            if state is not None else None
        return stale.reason if stale is not None else None

    @staticmethod
    def _rows(session: Session) -> Iterator[Base]:
        for model in SEALED_FIELDS:
            yield from session.scalars(select(model).execution_options(yield_per=1000))


def _totp_context(account_id: int) -> bytes:
    return f"blindpost totp secret of account {account_id}".encode()


def encrypt_totp(keys: StateKeys, *, account_id: int, secret: str) -> str:
    """A TOTP secret as stored: encrypted, and bound to its account."""
    return keys.encrypt(secret.encode("ascii"), context=_totp_context(account_id))


def decrypt_totp(keys: StateKeys, *, account_id: int, stored: str) -> str:
    """The TOTP secret of ``account_id``; raise :class:`SealError` if it does not open."""
    return keys.decrypt(stored, context=_totp_context(account_id)).decode("ascii")


def remove_forged(app: App, actor: Actor, *, table: str, row_id: str) -> None:
    """Delete one row that fails its seal (audited); a row that verifies is refused."""
    app.authz.require(actor, Permission.INTEGRITY_ADMIN, subject=f"{table}:{row_id}")
    model = next((m for m in SEALED_FIELDS if m.__tablename__ == table), None)
    if model is None:
        raise UsageError(f"unknown sealed table {table!r}; accepted: "
                         + ", ".join(sorted(str(m.__tablename__) for m in SEALED_FIELDS)))
    key_column = getattr(model, SEALED_FIELDS[model][0])
    conflict = (f"{table} row {row_id} is referenced by other rows; remove those that fail "
                "their seal first (`blindpost integrity check`)")
    with app.transaction(conflict=conflict) as session:
        row = session.scalar(select(model).where(key_column == _typed(key_column, row_id)))
        if row is None:
            raise NotFoundError(f"no {table} row {row_id}")
        try:
            app.integrity.verify(row)
        except IntegrityViolationError:
            pass
        else:
            raise PolicyError(f"{table} row {row_id} verifies and is current; only forged or "
                              "rolled-back rows are removed this way (use the normal "
                              "commands for the others)")
        session.execute(delete(model).where(key_column == _typed(key_column, row_id)))
        session.flush()
        _record_removal(app, session, table, row_id)
        app.audit.record(session, tag=AuditTag.INTEGRITY_REMOVE, actor=actor,
                         subject=f"{table}:{row_id}", details={"table": table, "row": row_id})


def _record_removal(app: App, session: Session, table: str, row_id: str) -> None:
    """Record a removal the flush hooks did not see (a forged row removed by statement),
    unless the log says the current version of that row exists: then the row removed
    was an old copy standing in for it, and the log keeps saying what is current."""
    version = app.ledger.state.rows.get((table, row_id))
    if version is None or version.digest == REMOVED:
        record_rows(session, [encode_row(table, row_id, REMOVED)], changed=True)


def ensure_baseline(app: App) -> int:
    """Record, once per installation, every sealed row the audit log does not name yet.

    An installation from before current state has rows no ``state:seal`` event named;
    they are trusted once, as they are (forged rows excluded), by a ``state:baseline``
    whose last event says it is complete. From then on a row the log never named grants
    nothing. Later baselines (two services starting at once) change nothing the log
    already said. Returns the number of rows recorded.
    """
    if app.ledger.state.baseline:
        return 0
    with app.transaction() as session:
        app.audit.lock(session)
        state = app.ledger.state
        if state.baseline:
            return 0
        rows = [encode_row(table_of(row), row_label(row), digest_of(row))
                for row in Integrity._rows(session)
                if is_valid(app.state_keys, row)
                and (table_of(row), row_label(row)) not in state.rows]
        chunks = [rows[start:start + ROWS_PER_EVENT]
                  for start in range(0, len(rows), ROWS_PER_EVENT)] or [[]]
        for number, chunk in enumerate(chunks, start=1):
            app.audit.record(session, tag=AuditTag.STATE_BASELINE,
                             actor=Actor.system("integrity"), subject="state:baseline",
                             details={"rows": chunk, "complete": number == len(chunks)})
    app.ledger.catch_up()
    return len(rows)


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _forget_pending(session: Session) -> None:
    session.info.pop(PENDING_ROWS, None)


def _typed(column: Any, value: str) -> object:
    if column.type.python_type is int:
        if not value.isdigit():
            raise UsageError(f"row id {value!r} is not a number")
        return int(value)
    return value
