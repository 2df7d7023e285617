"""Sign-in rules for SSH: a verified public key AND a fresh TOTP code, every time.

The adapter (``sftp_server``) proves the protocol facts — that the client signed with the
key, that a code answers a challenge this connection issued. This module owns the rules:
which key belongs to whom, codes and replays, disabled accounts and partners, failure
counts and lockouts (kept in the database so every worker and node sees them), and the
audit trail of every success, failure and lockout.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import totp
from gateway.accounts import get_account
from gateway.actors import Actor
from gateway.audit import AuditTag
from gateway.db.models import Account, AuthThrottle, SSHKey
from gateway.errors import AuthenticationError, NotFoundError

if TYPE_CHECKING:
    from gateway.app import App


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
        with self._app.transaction() as session:
            return session.scalar(
                select(SSHKey.id).join(Account).where(Account.username == username,
                                                      SSHKey.key_data == data)) is not None

    def accept_public_key(self, attempt: LoginAttempt, *, username: str,
                          key_blob: bytes) -> None:
        """Record the first factor; the caller guarantees the client signed with this key."""
        data = base64.b64encode(key_blob).decode("ascii")
        reason: str | None = None
        with self._app.transaction() as session:
            now = self._app.clock()
            account = self._usable_account(session, username)
            if account is None:
                reason = "unknown account"
            elif (blocked := self._blocked_reason(session, account, attempt, now)) is not None:
                reason = blocked
            else:
                key = next((k for k in account.ssh_keys if k.key_data == data), None)
                if key is None:
                    reason = "unknown key"
                else:
                    attempt.username, attempt.key_fingerprint = username, key.fingerprint
                    return
            self._fail(session, attempt, username=username, account=account, reason=reason,
                       factor="publickey", now=now)
        raise AuthenticationError(reason)

    def accept_code(self, attempt: LoginAttempt, *, username: str, code: str) -> Account:
        """Check the second factor and complete the sign-in, or raise.

        Refused unless a verified public key for the same account came first on this
        connection: a code alone never suffices.
        """
        reason: str
        with self._app.transaction() as session:
            now = self._app.clock()
            account = self._usable_account(session, username)
            if not attempt.has_key or attempt.username != username or account is None:
                reason = "one-time code without a verified public key"
            elif (blocked := self._blocked_reason(session, account, attempt, now)) is not None:
                reason = blocked
            elif account.totp is None:
                reason = "no TOTP secret enrolled"
            else:
                try:
                    step = totp.check_code(account.totp.secret, code, now=now,
                                           last_step=account.totp.last_step)
                except totp.ReplayedCodeError:
                    reason = "replayed code"
                except totp.InvalidCodeError:
                    reason = "wrong code"
                else:
                    account.totp.last_step = step
                    self._succeed(session, attempt, account)
                    return account
            self._fail(session, attempt, username=username, account=account, reason=reason,
                       factor="totp", now=now)
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
            account = self._usable_account(session, claimed) if claimed else None
            self._fail(session, attempt, username=claimed, account=account, reason=reason,
                       factor="none", now=self._app.clock(), count=claimed is not None)

    def _usable_account(self, session: Session, username: str) -> Account | None:
        try:
            return get_account(session, username)
        except NotFoundError:
            return None

    def _blocked_reason(self, session: Session, account: Account, attempt: LoginAttempt,
                        now: datetime) -> str | None:
        if account.disabled:
            return "account disabled"
        if account.partner is not None and account.partner.disabled:
            return "partner disabled"
        for scope, key in (("account", account.username), ("source", attempt.source)):
            row = session.get(AuthThrottle, (scope, key))
            if row and row.locked_until and row.locked_until > now:
                return f"{scope} locked out"
        return None

    def _succeed(self, session: Session, attempt: LoginAttempt, account: Account) -> None:
        attempt.succeeded = True
        row = session.get(AuthThrottle, ("account", account.username))
        if row is not None:
            session.delete(row)
        actor = Actor.for_account(account, source=attempt.source, client=attempt.client)
        self._app.audit.record(session, tag=AuditTag.LOGIN_SUCCESS, actor=account.username,
                               subject=f"account:{account.username}",
                               details={"method": "publickey+totp",
                                        "key": attempt.key_fingerprint,
                                        **actor.audit_details()})

    def _fail(self, session: Session, attempt: LoginAttempt, *, username: str | None,
              account: Account | None, reason: str, factor: str, now: datetime,
              count: bool = True) -> None:
        attempt.failures += 1
        details: dict[str, object] = {"reason": reason, "factor": factor,
                                      "source": attempt.source}
        if attempt.client:
            details["client"] = attempt.client
        subject = f"account:{username}" if username else "account:(none)"
        self._app.audit.record(session, tag=AuditTag.LOGIN_FAILURE, actor=username or "(none)",
                               subject=subject, details=details)
        if reason.endswith("locked out") or not count:
            return
        scopes = [("source", attempt.source)]
        if account is not None:
            scopes.append(("account", account.username))
        for scope, key in scopes:
            self._count_failure(session, scope=scope, key=key, now=now)

    def _count_failure(self, session: Session, *, scope: str, key: str, now: datetime) -> None:
        settings = self._app.settings
        window = timedelta(minutes=settings.lockout_minutes)
        row = session.get(AuthThrottle, (scope, key))
        if row is None:
            row = AuthThrottle(scope=scope, key=key, failures=0, window_start=now)
            session.add(row)
        if now - row.window_start > window:
            row.failures, row.window_start, row.locked_until = 0, now, None
        row.failures += 1
        if row.failures >= settings.lockout_threshold and row.locked_until is None:
            row.locked_until = now + window
            self._app.audit.record(session, tag=AuditTag.LOCKOUT, actor="system:auth",
                                   subject=f"{scope}:{key}",
                                   details={"failures": row.failures,
                                            "until": row.locked_until.isoformat()})
