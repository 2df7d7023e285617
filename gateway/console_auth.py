"""Console sign-in: a password and a second factor every time, enrolment on first use,
server-side sessions, CSRF tokens, and the fresh second factor a key decision takes.

The rules are the SFTP sign-in's (:mod:`gateway.auth`): the same one-time code checks,
failure counts and lockouts per account and source address, and every success and
failure in the audit log. Only admin and auditor accounts sign in here. The first
sign-in with the one-time password from ``init`` or ``user add`` must set a new
password and enrol a new TOTP secret, in one step. With ``console_require_passkey`` an
admin signs in and confirms key decisions with a passkey, never with a code.
"""

from __future__ import annotations

import dataclasses
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from gateway import passwords, throttle, totp
from gateway.accounts import PASSWORD_ROLES
from gateway.actors import Actor
from gateway.audit import AuditTag
from gateway.auth import Failure, LoginAttempt
from gateway.authz import Permission
from gateway.console_sessions import (
    CLIENT,
    Opened,
    SessionExpiredError,
    SessionInfo,
    Stage,
    end_all,
    info,
    load,
    open_session,
    rotate,
    token_id,
)
from gateway.db.models import Account, ConsoleCredential, ConsoleSession, Role, TOTPSecret
from gateway.errors import (
    AuthenticationError,
    AuthorizationError,
    NotFoundError,
    PolicyError,
    UsageError,
)
from gateway.integrity import IntegrityViolationError, decrypt_totp, encrypt_totp
from gateway.partner_keys import RecipientKey
from gateway.passkeys import SIGN_IN
from gateway.state_keys import SealError

if TYPE_CHECKING:
    from gateway.app import App

# One answer for every refused sign-in, so the page does not tell which part was wrong.
REFUSED = ("sign-in refused: wrong username, password or code, or too many failures "
           "(wait 15 minutes)")
NEEDS_FACTOR = ("this needs a fresh second factor: your current one-time code or your "
                "passkey")


@dataclass(frozen=True)
class Enrolment:
    """The TOTP secret being enrolled, shown to its owner until they confirm a code."""

    username: str
    secret: str
    uri: str


class ConsoleAuthService:
    """Sign-in, enrolment, sessions and step-up for the console."""

    def __init__(self, app: App) -> None:
        self._app = app

    # Sign-in -------------------------------------------------------------------------

    def sign_in(self, *, username: str, password: str, source: str,
                client: str | None = None) -> Opened:
        """Check the password; open a session waiting for the second factor (or for
        enrolment, on the first sign-in)."""
        with self._app.transaction() as session:
            now = self._app.clock()
            account = self._app.auth.usable_account(session, username)
            reason = self._password_refusal(session, account, password, source, now)
            if reason is None:
                assert account is not None
                assert account.password_hash is not None
                if passwords.needs_rehash(account.password_hash):
                    account.password_hash = passwords.hash_password(password)
                enrolled = self._enrolled(session, account)
                token, row = open_session(session, account,
                                          stage=Stage.SECOND_FACTOR if enrolled else Stage.ENROL,
                                          source=source, client=client, now=now)
                session.flush()
                return Opened(token, info(row, account))
            self._fail(session, username, account, reason, "password", source)
        raise AuthenticationError(REFUSED)

    def _password_refusal(self, session: Session, account: Account | None, password: str,
                          source: str, now: datetime) -> str | None:
        # Every path checks a hash, so timing does not tell a known name from an unknown.
        if account is None:
            passwords.verify(None, password)
            if throttle.locked_until(session, scope="source", key=source, now=now):
                return "source locked out"
            return "unknown account"
        if (blocked := self._app.auth.blocked_reason(session, account, source, now)):
            passwords.verify(None, password)
            return blocked
        if account.role not in PASSWORD_ROLES:
            passwords.verify(None, password)
            return f"{account.role.value} accounts have no console access"
        if not passwords.verify(account.password_hash, password):
            return "wrong password"
        # The role and the password hash count only if the gateway wrote them.
        return self._app.auth.unverified(session, account)

    def _enrolled(self, session: Session, account: Account) -> bool:
        """Whether the first sign-in is done (a forged record of it forces enrolment)."""
        credential = session.get(ConsoleCredential, account.id)
        if credential is None:
            return False
        try:
            self._app.integrity.verify(credential)
        except IntegrityViolationError as violation:
            self._app.integrity.record(session, violation)
            return False
        return True

    def second_factor(self, token: str, *, code: str) -> Opened:
        """Complete a sign-in with the account's current one-time code."""
        error: AuthenticationError
        with self._app.transaction() as session:
            now = self._app.clock()
            try:
                row, account = load(session, token_id(token), now=now,
                                    integrity=self._app.integrity,
                                    stages=(Stage.SECOND_FACTOR,))
            except SessionExpiredError as exc:
                error = exc
            else:
                if self._codes_refused(session, account):
                    reason: str | None = "admins sign in with a passkey (console_require_passkey)"
                else:
                    reason = self._app.auth.consume_code(session, account, row.source, code, now)
                if reason is None:
                    return self._signed_in(session, row, account, method="password+totp",
                                           now=now)
                self._fail(session, account.username, account, reason, "totp", row.source)
                error = AuthenticationError(REFUSED)
        raise error

    def passkey_options(self, token: str) -> str:
        """WebAuthn options for signing in with a passkey instead of the code."""
        return self._app.passkeys.assertion_options(token_id(token), purpose=SIGN_IN,
                                                    stages=(Stage.SECOND_FACTOR,))

    def passkey_sign_in(self, token: str, *, credential: str) -> Opened:
        """Complete a sign-in with a passkey assertion answering this session's challenge."""
        error: AuthenticationError
        with self._app.transaction() as session:
            now = self._app.clock()
            try:
                row, account = load(session, token_id(token), now=now,
                                    integrity=self._app.integrity,
                                    stages=(Stage.SECOND_FACTOR,))
            except SessionExpiredError as exc:
                error = exc
            else:
                reason = (self._app.auth.blocked_reason(session, account, row.source, now)
                          or self._app.passkeys.check_assertion(
                              session, row, account, credential=credential, purpose=SIGN_IN,
                              now=now))
                if reason is None:
                    return self._signed_in(session, row, account, method="password+passkey",
                                           now=now)
                self._fail(session, account.username, account, reason, "passkey", row.source)
                error = AuthenticationError(REFUSED)
        raise error

    def _signed_in(self, session: Session, row: ConsoleSession, account: Account, *,
                   method: str, now: datetime) -> Opened:
        throttle.clear(session, scope="account", key=account.username)
        stage = Stage.PASSKEY if self._must_register_passkey(session, account) else Stage.FULL
        opened = rotate(session, row, account, stage=stage, now=now)
        actor = Actor.account(username=account.username, account_id=account.id,
                              role=account.role, partner_id=None, source=row.source,
                              client=CLIENT)
        self._app.audit.record(session, tag=AuditTag.LOGIN_SUCCESS, actor=actor,
                               subject=f"account:{account.username}",
                               details={"method": method})
        return opened

    def _fail(self, session: Session, username: str, account: Account | None, reason: str,
              factor: str, source: str, *, count: bool = True) -> None:
        self._app.auth.record_failure(
            session, LoginAttempt(source=source, client=CLIENT),
            Failure(AuditTag.LOGIN_FAILURE, username, account, reason, factor, source, CLIENT,
                    count=count), now=self._app.clock())

    # Passkey policy ------------------------------------------------------------------

    def _passkey_policy(self, role: Role) -> bool:
        return self._app.settings.console_require_passkey and role is Role.ADMIN

    def _must_register_passkey(self, session: Session, account: Account) -> bool:
        return (self._passkey_policy(account.role)
                and not self._app.passkeys.has_passkey(session, account.id))

    def _codes_refused(self, session: Session, account: Account) -> bool:
        return (self._passkey_policy(account.role)
                and self._app.passkeys.has_passkey(session, account.id))

    # First sign-in -------------------------------------------------------------------

    def enrolment(self, token: str) -> Enrolment:
        """The TOTP secret to enrol in this first sign-in (made on first ask, then kept)."""
        with self._app.transaction() as session:
            row, account = load(session, token_id(token), now=self._app.clock(),
                                integrity=self._app.integrity,
                                stages=(Stage.ENROL,))
            if row.enrol_secret is None:
                # Encrypted like an enrolled secret: the database alone never yields one.
                row.enrol_secret = encrypt_totp(self._app.state_keys, account_id=account.id,
                                                secret=totp.new_secret())
            secret = self._enrol_secret(row)
            return Enrolment(account.username, secret,
                             totp.provisioning_uri(secret, account=account.username))

    def _enrol_secret(self, row: ConsoleSession) -> str:
        assert row.enrol_secret is not None
        try:
            return decrypt_totp(self._app.state_keys, account_id=row.account_id,
                                stored=row.enrol_secret)
        except SealError:
            raise UsageError("the enrolment secret was not written by the gateway; sign in "
                             "again") from None

    def enrol(self, token: str, *, new_password: str, code: str) -> Opened:
        """Replace the one-time password and enrol the shown TOTP secret, in one step."""
        error: AuthenticationError
        with self._app.transaction() as session:
            now = self._app.clock()
            row, account = load(session, token_id(token), now=now, integrity=self._app.integrity,
                                stages=(Stage.ENROL,))
            passwords.check_new(new_password, username=account.username,
                                current=account.password_hash)
            if row.enrol_secret is None:
                raise UsageError("the enrolment expired; reload the page for a new code")
            try:
                step = totp.check_code(self._enrol_secret(row), code, now=now, last_step=None)
            except AuthenticationError:
                # A typo while enrolling is no guess at a secret: audited, not counted.
                self._fail(session, account.username, account, "wrong code at TOTP enrolment",
                           "totp-enrol", row.source, count=False)
                error = AuthenticationError("that code does not match the new secret; check "
                                            "the authenticator app's clock and try the next code")
            else:
                self._store_enrolment(session, row, account, password=new_password, step=step,
                                      now=now)
                return self._signed_in(session, row, account,
                                       method="one-time password+totp enrolment", now=now)
        raise error

    def _store_enrolment(self, session: Session, row: ConsoleSession, account: Account, *,
                         password: str, step: int, now: datetime) -> None:
        assert row.enrol_secret is not None
        account.password_hash = passwords.hash_password(password)
        # The pending secret is already encrypted for this account (see enrolment()).
        secret = session.get(TOTPSecret, account.id)
        if secret is None:
            session.add(TOTPSecret(account_id=account.id, secret=row.enrol_secret,
                                   last_step=step, created_at=now))
        else:
            secret.secret, secret.last_step, secret.created_at = row.enrol_secret, step, now
        row.enrol_secret = None
        session.merge(ConsoleCredential(account_id=account.id, enrolled_at=now,
                                        password_changed_at=now))
        actor = Actor.account(username=account.username, account_id=account.id,
                              role=account.role, partner_id=None, source=row.source,
                              client=CLIENT)
        for tag in (AuditTag.ACCOUNT_PASSWORD_CHANGE, AuditTag.ACCOUNT_TOTP_ENROL):
            self._app.audit.record(session, tag=tag, actor=actor,
                                   subject=f"account:{account.username}")

    # Sessions ------------------------------------------------------------------------

    def resume(self, token: str) -> SessionInfo:
        """The live session of a browser's token, its idle timer restarted; or raise."""
        error: SessionExpiredError
        with self._app.transaction() as session:
            now = self._app.clock()
            try:
                row, account = load(session, token_id(token), now=now,
                                    integrity=self._app.integrity)
            except SessionExpiredError as exc:
                error = exc
            else:
                row.last_seen_at = now
                return info(row, account)
        raise error

    def check_csrf(self, current: SessionInfo, supplied: str | None, *, target: str) -> None:
        """Refuse (and audit) a state-changing request without this session's CSRF token."""
        if supplied and hmac.compare_digest(supplied.encode(), current.csrf.encode()):
            return
        error = AuthorizationError("the form is stale or did not come from this console "
                                   "(CSRF token missing or wrong); reload the page")
        self._app.authz.refused(current.actor, operation="csrf", target=target, error=error,
                                via="console")
        raise error

    def sign_out(self, token: str, *, everywhere: bool = False) -> None:
        """End this session, or every session of its account."""
        with self._app.transaction() as session:
            try:
                row, account = load(session, token_id(token), now=self._app.clock(),
                                    integrity=self._app.integrity)
            except SessionExpiredError:
                return
            actor = info(row, account).actor
            if everywhere:
                ended = end_all(session, account.id)
            else:
                session.delete(row)
                ended = 1
            self._app.audit.record(session, tag=AuditTag.LOGOUT, actor=actor,
                                   subject=f"account:{account.username}",
                                   details={"everywhere": everywhere, "sessions": ended})

    # Step-up -------------------------------------------------------------------------

    def step_up(self, current: SessionInfo, *, purpose: str, code: str | None = None,
                credential: str | None = None) -> Actor:
        """The session's account as a freshly proven actor, for ``purpose`` only.

        A one-time code goes through :meth:`gateway.auth.AuthService.prove`; a passkey
        assertion must answer the challenge this session was given for ``purpose``.
        """
        if not current.complete:
            raise AuthenticationError("sign in first")
        if code:
            if self._passkey_policy(current.role):
                raise PolicyError("admins confirm this with a passkey (console_require_passkey)")
            return self._app.auth.prove(username=current.username, code=code,
                                        source=current.actor.source or "-", purpose=purpose,
                                        client=CLIENT)
        if credential:
            return self._passkey_step_up(current, purpose=purpose, credential=credential)
        raise UsageError(NEEDS_FACTOR)

    def key_options(self, current: SessionInfo, *, verb: str, key_id: int) -> str:
        """WebAuthn options whose assertion confirms one key decision (and nothing else)."""
        permission = {"approve": Permission.KEY_APPROVE, "revoke": Permission.KEY_REVOKE}.get(verb)
        if permission is None:
            raise NotFoundError(f"no key action {verb!r}")
        self._may(current, permission, key_id)
        return self._app.passkeys.assertion_options(current.id,
                                                    purpose=key_purpose(verb, key_id))

    def _may(self, current: SessionInfo, permission: Permission, key_id: int) -> None:
        """Refuse before asking for a factor when even a fresh one would not do."""
        self._app.authz.require(dataclasses.replace(current.actor, standing=False),
                                permission, subject=f"key:{key_id}")

    def _passkey_step_up(self, current: SessionInfo, *, purpose: str,
                         credential: str) -> Actor:
        error: AuthenticationError
        with self._app.transaction() as session:
            now = self._app.clock()
            try:
                row, account = load(session, current.id, now=now, integrity=self._app.integrity,
                                    stages=(Stage.FULL,))
            except SessionExpiredError as exc:
                error = exc
            else:
                reason = (self._app.auth.blocked_reason(session, account, row.source, now)
                          or self._app.passkeys.check_assertion(
                              session, row, account, credential=credential, purpose=purpose,
                              now=now))
                if reason is None:
                    return self._proven(session, account, row.source, purpose)
                self._app.auth.record_failure(
                    session, LoginAttempt(source=row.source, client=CLIENT),
                    Failure(AuditTag.STEP_UP_FAILURE, account.username, account, reason,
                            "passkey", row.source, CLIENT, purpose=purpose), now=now)
                error = AuthenticationError(reason)
        raise error

    def _proven(self, session: Session, account: Account, source: str, purpose: str) -> Actor:
        throttle.clear(session, scope="account", key=account.username)
        actor = Actor.account(username=account.username, account_id=account.id,
                              role=account.role, partner_id=None, source=source, client=CLIENT)
        self._app.audit.record(session, tag=AuditTag.STEP_UP_SUCCESS, actor=actor,
                               subject=f"account:{account.username}",
                               details={"method": "passkey", "purpose": purpose})
        return actor

    def approve_key(self, current: SessionInfo, *, key_id: int, code: str | None = None,
                    credential: str | None = None) -> RecipientKey:
        """Approve a key after a second factor given for this very approval."""
        self._may(current, Permission.KEY_APPROVE, key_id)
        proven = self.step_up(current, purpose=key_purpose("approve", key_id), code=code,
                              credential=credential)
        return self._app.keys.approve(proven, key_id=key_id)

    def revoke_key(self, current: SessionInfo, *, key_id: int, code: str | None = None,
                   credential: str | None = None) -> RecipientKey:
        """Revoke a key after a second factor given for this very revocation."""
        self._may(current, Permission.KEY_REVOKE, key_id)
        proven = self.step_up(current, purpose=key_purpose("revoke", key_id), code=code,
                              credential=credential)
        return self._app.keys.revoke(proven, key_id=key_id)


def key_purpose(verb: str, key_id: int) -> str:
    """The purpose a key decision's second factor is bound to."""
    return f"key {verb} {key_id}"
