"""Sign-in rules: a verified public key AND a fresh TOTP code, every time.

The adapter (``sftp_server``) proves the protocol facts — that the client signed with the
key, that a code answers a challenge this connection issued. This module owns the rules:
which key belongs to whom, codes and replays, disabled accounts and partners, failure
counts and lockouts (kept in the database so every worker and node sees them), and the
audit trail of every success, failure and lockout.

The same code rules prove a person at the command line or in the console before an
action that needs their own authority (approving a recipient key): :meth:`prove`.
"""

from __future__ import annotations

import base64
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from gateway import throttle, totp
from gateway.accounts import get_account
from gateway.actors import MAX_NAME, Actor
from gateway.audit import AuditTag
from gateway.db.base import Base
from gateway.db.models import Account, SSHKey, TOTPSecret
from gateway.errors import AuthenticationError, NotFoundError
from gateway.integrity import IntegrityViolationError, decrypt_totp
from gateway.state_keys import SealError

if TYPE_CHECKING:
    from gateway.app import App


NO_CODE = "no one-time code given"
INTEGRITY_FAILED = "integrity check failed"


@dataclass
class LoginAttempt:
    """The state of one connection's sign-in: which factors have passed, for which account."""

    source: str
    client: str | None
    username: str | None = None
    key_fingerprint: str | None = None
    succeeded: bool = False
    failures: int = field(default=0)

    @property
    def has_key(self) -> bool:
        return self.key_fingerprint is not None


@dataclass(frozen=True)
class Failure:
    """One refused factor, as audited and counted."""

    tag: AuditTag
    username: str | None
    account: Account | None
    reason: str
    factor: str
    source: str
    client: str | None = None
    os_user: str | None = None
    purpose: str | None = None
    count: bool = True


def session_refusal(account: Account | None) -> str | None:
    """Why a signed-in session of ``account`` may not go on, or None while it may.

    Checked at sign-in, on every file operation, and every few seconds for each open
    SFTP session (:meth:`AuthService.sessions_to_end`), so that disabling an account or
    its partner ends what it was doing on every worker and node.
    """
    if account is None:
        return "account removed"
    if account.disabled:
        return "account disabled"
    if account.partner is not None and account.partner.disabled:
        return "partner disabled"
    return None


def _actor_for(account: Account, *, source: str, client: str | None,
               os_user: str | None = None) -> Actor:
    return Actor.account(username=account.username, account_id=account.id, role=account.role,
                         partner_id=account.partner_id, source=source, client=client,
                         os_user=os_user)


class AuthService:
    """Check factors, count failures, lock out, and audit all of it."""

    def __init__(self, app: App) -> None:
        self._app = app

    def begin(self, *, source: str, client: str | None = None) -> LoginAttempt:
        """Start tracking a connection's sign-in."""
        return LoginAttempt(source=source, client=client)

    def key_is_registered(self, *, username: str, key_blob: bytes) -> bool:
        """Answer the unsigned "would this key be accepted?" probe. Grants nothing."""
        data = base64.b64encode(key_blob).decode("ascii")
        with self._app.read() as session:
            return session.scalar(
                select(SSHKey.id).join(Account).where(Account.username == username,
                                                      SSHKey.key_data == data)) is not None

    def accept_public_key(self, attempt: LoginAttempt, *, username: str,
                          key_blob: bytes) -> None:
        """Record the first factor; the caller guarantees the client signed with this key."""
        data = base64.b64encode(key_blob).decode("ascii")
        with self._app.transaction() as session:
            now = self._app.clock()
            account = self.usable_account(session, username)
            if account is None:
                reason = "unknown account"
            elif (blocked := self.blocked_reason(session, account, attempt.source, now)):
                reason = blocked
            else:
                key = next((k for k in account.ssh_keys if k.key_data == data), None)
                if key is None:
                    reason = "unknown key"
                elif (forged := self.unverified(session, account, key)) is not None:
                    reason = forged
                else:
                    attempt.username, attempt.key_fingerprint = username, key.fingerprint
                    return
            self.record_failure(session, attempt, Failure(AuditTag.LOGIN_FAILURE, username, account,
                                                  reason, "publickey", attempt.source,
                                                  attempt.client), now=now)
        raise AuthenticationError(reason)

    def accept_code(self, attempt: LoginAttempt, *, username: str, code: str) -> Actor:
        """Check the second factor and complete the sign-in, or raise.

        Refused unless a verified public key for the same account came first on this
        connection: a code alone never suffices. Returns the signed-in account's actor.
        """
        with self._app.transaction() as session:
            now = self._app.clock()
            account = self.usable_account(session, username)
            reason: str | None
            if not attempt.has_key or attempt.username != username or account is None:
                reason = "one-time code without a verified public key"
            else:
                reason = self.consume_code(session, account, attempt.source, code, now)
            if reason is None:
                assert account is not None
                return self._succeed(session, attempt, account)
            self.record_failure(session, attempt, Failure(AuditTag.LOGIN_FAILURE, username, account,
                                                  reason, "totp", attempt.source,
                                                  attempt.client), now=now)
        raise AuthenticationError(reason)

    def prove(self, *, username: str, code: str, source: str, purpose: str,
              client: str | None = None, os_user: str | None = None) -> Actor:
        """Prove that the person acting holds ``username``'s second factor, now.

        For an action that needs a named person's authority outside an SFTP session (a
        key approval typed at the command line, confirmed in the console): the code
        passes the same replay, lockout and audit rules as a sign-in.
        """
        attempt = LoginAttempt(source=source, client=client)
        with self._app.transaction() as session:
            now = self._app.clock()
            account = self.usable_account(session, username)
            reason: str | None
            if not code.strip():
                reason = NO_CODE
            elif account is None:
                reason = "unknown account"
            else:
                reason = self.consume_code(session, account, source, code, now)
            if reason is None:
                assert account is not None
                throttle.clear(session, scope="account", key=account.username)
                actor = _actor_for(account, source=source, client=client, os_user=os_user)
                self._app.audit.record(session, tag=AuditTag.STEP_UP_SUCCESS, actor=actor,
                                       subject=f"account:{username}",
                                       details={"method": "totp", "purpose": purpose})
                return actor
            # A missing code is audited but is no guess, so it counts toward no lockout.
            self.record_failure(session, attempt, Failure(
                AuditTag.STEP_UP_FAILURE, username, account, reason, "totp", source, client,
                os_user, purpose, count=reason != NO_CODE), now=now)
        raise AuthenticationError(reason)

    def abandon(self, attempt: LoginAttempt, *, reason: str, username: str | None = None) -> None:
        """Audit a connection that closed without signing in and without a recorded failure.

        ``username`` is the name the client claimed, if any. Only a connection that
        claimed one counts toward lockouts: a port scan or a load balancer's health check
        is audited but must not lock its source address out.
        """
        if attempt.succeeded or attempt.failures:
            return
        claimed = attempt.username or username
        with self._app.transaction() as session:
            account = self.usable_account(session, claimed) if claimed else None
            self.record_failure(session, attempt, Failure(AuditTag.LOGIN_FAILURE, claimed, account,
                                                  reason, "none", attempt.source,
                                                  attempt.client, count=claimed is not None),
                       now=self._app.clock())

    def sessions_to_end(self, account_ids: Collection[int]) -> dict[int, str]:
        """Which of these signed-in accounts may no longer be signed in, and why.

        One query for all of a process's open sessions, so that checking every few
        seconds stays cheap however many sessions are open.
        """
        if not account_ids:
            return {}
        reasons: dict[int, str] = {}
        forged: list[IntegrityViolationError] = []
        with self._app.read() as session:
            found = {row.id: row for row in session.scalars(
                select(Account).where(Account.id.in_(set(account_ids))))}
            for account_id in account_ids:
                account = found.get(account_id)
                reason = session_refusal(account)
                if reason is None and account is not None:
                    # Re-enabling an account by editing the database keeps nothing going.
                    violation = self._seal_violation(account)
                    if violation is not None:
                        forged.append(violation)
                        reason = INTEGRITY_FAILED
                if reason is not None:
                    reasons[account_id] = reason
        for violation in forged:
            self._app.integrity.record_now(violation)
        return reasons

    def _seal_violation(self, account: Account) -> IntegrityViolationError | None:
        for row in (account, *([account.partner] if account.partner else [])):
            try:
                self._app.integrity.verify(row)
            except IntegrityViolationError as violation:
                return violation
        return None

    def record_session_end(self, actor: Actor, *, reason: str) -> None:
        """Audit that a signed-in session was ended because its sign-in no longer holds."""
        with self._app.transaction() as session:
            self._app.audit.record(session, tag=AuditTag.SESSION_ENDED,
                                   actor=Actor.system("sftp"), subject=f"account:{actor.name}",
                                   details={"reason": reason,
                                            "session_source": actor.source or "-"})

    def usable_account(self, session: Session, username: str) -> Account | None:
        try:
            return get_account(session, username)
        except NotFoundError:
            return None

    def consume_code(self, session: Session, account: Account, source: str, code: str,
                    now: datetime) -> str | None:
        """Consume ``code`` for ``account``; return why it is refused, or None."""
        if (blocked := self.blocked_reason(session, account, source, now)) is not None:
            return blocked
        if account.totp is None:
            return "no TOTP secret enrolled"
        if (forged := self.unverified(session, account, account.totp)) is not None:
            return forged
        try:
            secret = decrypt_totp(self._app.state_keys, account_id=account.id,
                                  stored=account.totp.secret)
        except SealError:
            self._app.integrity.record(session, IntegrityViolationError(
                "totp_secrets", str(account.id), "secret does not decrypt"))
            return INTEGRITY_FAILED
        try:
            step = totp.check_code(secret, code, now=now, last_step=account.totp.last_step)
        except totp.ReplayedCodeError:
            return "replayed code"
        except totp.InvalidCodeError:
            return "wrong code"
        # One conditional UPDATE decides: whichever worker or node reaches it first uses
        # the step; every other gets no row and the code counts as replayed.
        consumed = session.execute(update(TOTPSecret).where(
            TOTPSecret.account_id == account.id,
            or_(TOTPSecret.last_step.is_(None), TOTPSecret.last_step < step))
            .values(last_step=step).execution_options(synchronize_session=False))
        return None if consumed.rowcount == 1 else "replayed code"  # type: ignore[attr-defined]  # A CursorResult.

    def unverified(self, session: Session, account: Account, *rows: Base) -> str | None:
        """Refuse (and audit) a sign-in whose account, partner, key or enrolment row was
        not written by the gateway; None if every seal holds."""
        checked = [account, *([account.partner] if account.partner else []), *rows]
        for row in checked:
            try:
                self._app.integrity.verify(row)
            except IntegrityViolationError as violation:
                self._app.integrity.record(session, violation)
                return INTEGRITY_FAILED
        return None

    def blocked_reason(self, session: Session, account: Account, source: str,
                        now: datetime) -> str | None:
        if (refusal := session_refusal(account)) is not None:
            return refusal
        for scope, key in (("account", account.username), ("source", source)):
            if throttle.locked_until(session, scope=scope, key=key, now=now) is not None:
                return f"{scope} locked out"
        return None

    def _succeed(self, session: Session, attempt: LoginAttempt, account: Account) -> Actor:
        attempt.succeeded = True
        throttle.clear(session, scope="account", key=account.username)
        actor = _actor_for(account, source=attempt.source, client=attempt.client)
        self._app.audit.record(session, tag=AuditTag.LOGIN_SUCCESS, actor=actor,
                               subject=f"account:{account.username}",
                               details={"method": "publickey+totp",
                                        "key": attempt.key_fingerprint})
        return actor

    def record_failure(self, session: Session, attempt: LoginAttempt, failure: Failure, *,
              now: datetime) -> None:
        attempt.failures += 1
        actor = Actor.anonymous(claimed=failure.username, source=failure.source,
                                client=failure.client, os_user=failure.os_user)
        details: dict[str, object] = {"reason": failure.reason, "factor": failure.factor}
        if failure.purpose:
            details["purpose"] = failure.purpose
        if failure.username and len(failure.username) > MAX_NAME:
            # The actor's name was cut to fit the log; say so, and how long the claim was.
            details["claimed_length"] = len(failure.username)
        self._app.audit.record(session, tag=failure.tag, actor=actor,
                               subject=f"account:{actor.name}", details=details)
        if failure.reason.endswith("locked out") or not failure.count:
            return
        scopes = [("source", failure.source)]
        if failure.account is not None:
            scopes.append(("account", failure.account.username))
        settings = self._app.settings
        for scope, key in scopes:
            counted = throttle.count_failure(
                session, scope=scope, key=key, now=now,
                window=timedelta(minutes=settings.lockout_minutes),
                threshold=settings.lockout_threshold)
            if counted.locked_until is not None:
                self._app.audit.record(session, tag=AuditTag.LOCKOUT,
                                       actor=Actor.system("auth"), subject=f"{scope}:{key}",
                                       details={"failures": counted.failures,
                                                "until": counted.locked_until.isoformat()})
