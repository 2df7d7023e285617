"""Who may do what: one table of permissions, one check, one rule for auditing refusals.

Every service operation that reads or changes protected state starts with
``app.authz.require(actor, Permission.X)``. Adapters (SFTP, console, CLI) never decide
who may do what; they prove who is acting and hand the :class:`~gateway.actors.Actor` on.
Which *partner* a partner account may touch is data, not a permission: the services
scope those queries to ``actor.partner_id``.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, NoReturn

from gateway.actors import Actor, ActorKind, printable
from gateway.audit import AuditTag
from gateway.db.models import Role
from gateway.errors import AuthorizationError, DatabaseError, GatewayError, NotFoundError

if TYPE_CHECKING:
    from gateway.app import App


class Permission(enum.StrEnum):
    """One operation class of the services."""

    PARTNER_READ = "partner:read"
    PARTNER_MANAGE = "partner:manage"
    ACCOUNT_READ = "account:read"
    ACCOUNT_MANAGE = "account:manage"
    KEY_READ = "key:read"
    KEY_PROPOSE = "key:propose"
    KEY_APPROVE = "key:approve"
    KEY_REVOKE = "key:revoke"
    # A machine account signs in with its key alone: making one, or widening its
    # networks, is proposed by one admin and approved by another, as keys are.
    MACHINE_PROPOSE = "machine:propose"
    MACHINE_APPROVE = "machine:approve"
    # Creating or extending authority (an admin, an admin's credential, an admin token):
    # proposed by one admin, approved by another (gateway.authority). Withdrawing a
    # proposal grants nothing, so whoever administers may.
    AUTHORITY_PROPOSE = "authority:propose"
    AUTHORITY_APPROVE = "authority:approve"
    AUTHORITY_WITHDRAW = "authority:withdraw"
    # SFTP: a partner's own inbox, or staff's partner folders.
    INBOX_READ = "inbox:read"
    FILE_UPLOAD = "file:upload"
    FILE_DOWNLOAD = "file:download"
    FILE_WITHDRAW = "file:withdraw"
    # Operators' view of every file's metadata (never its contents), and removing one now.
    FILE_LIST = "file:list"
    FILE_MANAGE = "file:manage"
    FILE_PURGE = "file:purge"
    AUDIT_READ = "audit:read"
    AUDIT_CHECKPOINT = "audit:checkpoint"
    EXPOSURE_REPORT = "exposure:report"
    # Replacing keys/state_key, removing forged rows: host operations, for the operator.
    INTEGRITY_ADMIN = "integrity:admin"
    TOKEN_MANAGE = "token:manage"


_READ_ALL = {Permission.PARTNER_READ, Permission.ACCOUNT_READ, Permission.KEY_READ,
             Permission.FILE_LIST, Permission.AUDIT_READ, Permission.EXPOSURE_REPORT}
_ADMINISTER = _READ_ALL | {Permission.PARTNER_MANAGE, Permission.ACCOUNT_MANAGE,
                           Permission.FILE_MANAGE, Permission.FILE_PURGE,
                           Permission.AUDIT_CHECKPOINT, Permission.TOKEN_MANAGE,
                           Permission.AUTHORITY_WITHDRAW}
# Recipient keys decide who can read future files, and admins decide recipient keys:
# changing either always takes a person's proof (an admin account), never the local
# operator's shell alone, nor a token.
_KEY_CHANGES = {Permission.KEY_PROPOSE, Permission.KEY_APPROVE, Permission.KEY_REVOKE,
                Permission.MACHINE_PROPOSE, Permission.MACHINE_APPROVE,
                Permission.AUTHORITY_PROPOSE, Permission.AUTHORITY_APPROVE}
# What a standing credential (a console session, an API token) never does: deciding a
# key takes a second factor given for that very decision.
NEEDS_FRESH_PROOF = frozenset({Permission.KEY_APPROVE, Permission.KEY_REVOKE,
                               Permission.MACHINE_APPROVE, Permission.AUTHORITY_APPROVE})

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(_ADMINISTER | _KEY_CHANGES),
    Role.AUDITOR: frozenset(_READ_ALL),
    Role.STAFF: frozenset({Permission.INBOX_READ, Permission.FILE_UPLOAD,
                           Permission.FILE_WITHDRAW}),
    Role.PARTNER: frozenset({Permission.INBOX_READ, Permission.FILE_DOWNLOAD,
                             Permission.FILE_WITHDRAW}),
}
# A machine account's session (a scheduled extract job): upload, and see where to.
MACHINE_PERMISSIONS = frozenset({Permission.INBOX_READ, Permission.FILE_UPLOAD})
OPERATOR_PERMISSIONS = frozenset(_ADMINISTER | {Permission.INTEGRITY_ADMIN})
SYSTEM_PERMISSIONS = frozenset({Permission.FILE_PURGE, Permission.AUDIT_CHECKPOINT,
                                Permission.FILE_LIST})

# Looking a name up is not an access attempt: a miss there is not worth an audit entry.
LOOKUPS = frozenset({"stat", "lstat", "opendir", "realpath", "list"})
# A failed write or close aborts its upload, whose own event says why.
RECORDED_BY_UPLOAD = frozenset({"write", "close"})


def permissions_of(actor: Actor) -> frozenset[Permission]:
    """Everything ``actor`` may do."""
    if actor.kind is ActorKind.OPERATOR:
        return OPERATOR_PERMISSIONS
    if actor.kind is ActorKind.SYSTEM:
        return SYSTEM_PERMISSIONS
    if actor.role is None:
        return frozenset()
    if actor.kind is ActorKind.TOKEN:
        # A token is no person: it neither proposes (a proposal names its admin) nor
        # decides keys, and it does not mint further tokens.
        return ROLE_PERMISSIONS[actor.role] - _KEY_CHANGES - {Permission.TOKEN_MANAGE}
    if actor.account_id is None:
        return frozenset()
    granted = ROLE_PERMISSIONS[actor.role]
    if actor.machine:
        return granted & MACHINE_PERMISSIONS
    return granted - NEEDS_FRESH_PROOF if actor.standing else granted


def permits(actor: Actor, permission: Permission) -> bool:
    """Whether ``actor`` holds ``permission``."""
    return permission in permissions_of(actor)


def refusal_is_audited(operation: str, error: GatewayError) -> bool:
    """The one rule for which refused requests become audit events.

    Every refusal is, except a lookup that found nothing (clients probe names all the
    time, ``stat`` before ``put``, and those misses say nothing about intent), a
    failed write or close of an upload (recorded once, as the upload's abort), and a
    request the database could not serve (no decision was made, and the database would
    not take the record; the adapter logs it).
    """
    if operation in RECORDED_BY_UPLOAD or isinstance(error, DatabaseError):
        return False
    return not (isinstance(error, NotFoundError) and operation in LOOKUPS)


class Authorizer:
    """Checks permissions and audits refusals."""

    def __init__(self, app: App) -> None:
        self._app = app

    def require(self, actor: Actor, permission: Permission, *, subject: str = "-") -> None:
        """Return if ``actor`` holds ``permission``; else audit the refusal and raise."""
        if permits(actor, permission):
            return
        self.deny(actor, operation=permission.value, subject=subject,
                  reason=f"{_who(actor)} may not {permission.value.replace(':', ' ')}")

    def deny(self, actor: Actor, *, operation: str, subject: str, reason: str) -> NoReturn:
        """Audit and raise a refusal decided by scope rather than by the table (a partner
        account asking for another partner's inbox)."""
        error = AuthorizationError(f"permission denied: {reason}")
        self.refused(actor, operation=operation, target=subject, error=error)
        raise error

    def refused(self, actor: Actor, *, operation: str, target: str, error: GatewayError,
                via: str | None = None) -> None:
        """Audit a refused request (unless :func:`refusal_is_audited` says it is noise).

        ``via`` names the adapter (``sftp``), which prefixes the event's subject.
        """
        if error.audited or not refusal_is_audited(operation, error):
            return
        subject = printable(f"{via}:{operation}" if via else operation, limit=64)
        with self._app.transaction() as session:
            self._app.audit.record(session, tag=AuditTag.ACCESS_DENIED, actor=actor,
                                   subject=subject,
                                   details={"path": printable(target),
                                            "reason": error.diagnostics()})
        error.audited = True


def _who(actor: Actor) -> str:
    if actor.kind is ActorKind.TOKEN:
        return f"API {actor.name!r}"
    if actor.standing and actor.role is not None:
        return f"a console session of {actor.role.value} {actor.name!r} (without a fresh " \
               "second factor)"
    if actor.role is not None:
        return f"{actor.role.value} account {actor.name!r}"
    return actor.name
