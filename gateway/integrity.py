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
from sqlalchemy.orm import Session, UOWTransaction

from gateway.actors import Actor
from gateway.audit import AuditTag
from gateway.authz import Permission
from gateway.db.base import Base
from gateway.db.models import (
    Account,
    ApiToken,
    AuthorityChange,
    ConsoleCredential,
    ConsoleSession,
    MachineGrant,
    Partner,
    PartnerKey,
    Passkey,
    SSHKey,
    TOTPSecret,
    Transfer,
)
from gateway.errors import NotFoundError, PolicyError, UsageError
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
               "expires_at", "max_downloads", "state"),
    # The console's credentials: an injected token, session or passkey would sign in.
    ApiToken: ("id", "name", "role", "token_hash", "expires_at", "revoked_at"),
    ConsoleSession: ("id", "account_id", "stage", "created_at"),
    Passkey: ("id", "account_id", "credential_id", "public_key", "sign_count"),
    ConsoleCredential: ("account_id", "enrolled_at"),
    MachineGrant: ("id", "account_id", "allow_from", "state", "proposed_by", "approved_by"),
    # A pending change to authority: an injected "approved" row must apply nothing.
    AuthorityChange: ("id", "kind", "target", "params", "state", "proposed_by",
                      "approved_by"),
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
}
# A session's info holds, under this name, a function returning the state keys (sessions
# made by App do; a session without it seals nothing, as an attacker's would).
KEYS_INFO = "blindpost.state_keys"
_TO_SEAL = "blindpost.to_seal"


class IntegrityViolationError(PolicyError):
    """A row's seal does not match it: it was written or changed outside the gateway."""

    def __init__(self, table: str, row: str, reason: str) -> None:
        super().__init__(f"integrity check failed for {table} row {row} ({reason}); it grants "
                         "nothing. See `blindpost integrity check` and docs/security.md")
        self.table = table
        self.row = row
        self.reason = reason
        # The integrity:violation alarm is raised once; the refusal it causes is audited
        # separately (access:denied, login failure) by whoever refuses.
        self.recorded = False


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
    changed = [row for row in session.new if type(row) in SEALED_FIELDS]
    changed += [row for row in session.dirty
                if type(row) in SEALED_FIELDS and _granting_fields_changed(row)]
    if changed:
        session.info.setdefault(_TO_SEAL, []).extend(changed)


@event.listens_for(Session, "after_flush_postexec")
def _seal_flushed(session: Session, _flush: UOWTransaction) -> None:
    # After the flush every row has its primary key, which the seal covers; setting the
    # seal makes the row dirty again, and the commit flushes it before it ends.
    rows = session.info.pop(_TO_SEAL, [])
    keys = _session_keys(session)
    if keys is None:
        return
    for row in rows:
        seal(keys, row)


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

    @property
    def keys(self) -> StateKeys:
        return self._app.state_keys

    def verify(self, row: Base) -> None:
        """Raise :class:`IntegrityViolationError` unless ``row``'s seal matches it."""
        if not is_valid(self.keys, row):
            raise IntegrityViolationError(table_of(row), row_label(row),
                                     "no seal" if not getattr(row, "seal", None)
                                     else "seal does not match")

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
        """Verify every sealed row (for monitoring); the findings are also audited."""
        self._app.authz.require(actor, Permission.AUDIT_READ)
        checked, findings = 0, []
        with self._app.read() as session:
            for row in self._rows(session):
                checked += 1
                if not is_valid(self.keys, row):
                    reason = "no seal" if not getattr(row, "seal", None) else "seal does not match"
                    findings.append(Finding(table_of(row), row_label(row), reason))
        if findings:
            with self._app.transaction() as session:
                for finding in findings:
                    self.record(session, IntegrityViolationError(finding.table, finding.row,
                                                            finding.reason), actor)
        return IntegrityReport(checked, tuple(findings))

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
        if is_valid(app.state_keys, row):
            raise PolicyError(f"{table} row {row_id} verifies; only forged rows are removed "
                              "this way (use the normal commands for the others)")
        session.execute(delete(model).where(key_column == _typed(key_column, row_id)))
        session.flush()
        app.audit.record(session, tag=AuditTag.INTEGRITY_REMOVE, actor=actor,
                         subject=f"{table}:{row_id}", details={"table": table, "row": row_id})


def _typed(column: Any, value: str) -> object:
    if column.type.python_type is int:
        if not value.isdigit():
            raise UsageError(f"row id {value!r} is not a number")
        return int(value)
    return value
