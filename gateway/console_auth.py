"""Console sign-in: a password and a second factor every time, enrolment on first use,
server-side sessions, CSRF tokens, and the fresh second factor a key decision takes.

The rules are the SFTP sign-in's (:mod:`gateway.auth`, :mod:`gateway.throttle`), with the
password in the place of the SSH key as the first factor:

- a refusal before the password is verified (unknown name, wrong password, an account
  without console access, a row the gateway did not write) counts against the source
  address only, slowed by back-off, and says nothing about whether the account exists;
  while the address is held back, no password from it is checked at all;
- a refused second factor after the verified password counts against the account, once
  per sign-in however many codes it tries; the sign-in ends after
  :data:`gateway.auth.MAX_CODE_ATTEMPTS` of them;
- only after the password is verified is the reason told (locked until when, code
  already used, disabled).

Every success and failure is in the audit log. Admin and auditor accounts sign in here
with a password; partner users (to the portal) and staff (to the upload page) sign in
with their one-time code and a passkey (:meth:`ConsoleAuthService.code_sign_in`). The
first sign-in with a one-time password must set a new password, in one step with the
second factor: an account that already holds an enrolled TOTP secret (the one ``init``
and ``user add`` printed at the bootstrap, or one kept through a password reset)
confirms a code of *that* secret; an account without one (created or reset on a second
admin's approval) enrols a new secret here, shown in this session only. So a secret is
enrolled once, by its holder, and what the CLI printed is what is asked for. With
``console_require_passkey`` an admin signs in and confirms key decisions with a passkey,
never with a code.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from gateway import passwords, throttle, totp
from gateway.accounts import PASSWORD_ROLES
from gateway.actors import Actor
from gateway.audit import AuditTag
from gateway.auth import MAX_CODE_ATTEMPTS, Failure, LoginAttempt, SignInRefusedError
from gateway.authority import AppliedChange
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
from gateway.integrity import decrypt_totp, encrypt_totp
from gateway.partner_keys import RecipientKey
from gateway.passkeys import SIGN_IN
from gateway.state_keys import SealError
from gateway.throttle import Scope

if TYPE_CHECKING:
    from gateway.app import App

# One answer for every sign-in refused before the password is verified, so the page does
# not tell which part was wrong, nor whether the account exists.
REFUSED = "sign-in refused: wrong username or password"
REFUSED_CODE = "sign-in refused: wrong username or one-time code"
# Accounts without a console password: their one-time code (the one they use over SFTP)
# is their first factor, and a passkey always their second.
CODE_ROLES = (Role.PARTNER, Role.STAFF)
NEEDS_FACTOR = ("this needs a fresh second factor: your current one-time code or your "
                "passkey")
# Decides a second factor at sign-in: None to sign in, or why not.
FactorCheck = Callable[[Session, ConsoleSession, Account, datetime], SignInRefusedError | None]


@dataclass(frozen=True)
class Enrolment:
    """The TOTP secret being enrolled, shown to its owner until they confirm a code;
    ``secret`` and ``uri`` are None when the account keeps the factor it already has."""

    username: str
    secret: str | None
    uri: str | None

    @property
    def keeps_factor(self) -> bool:
        return self.secret is None


class ConsoleAuthService:
    """Sign-in, enrolment, sessions and step-up for the console."""

    def __init__(self, app: App) -> None:
        self._app = app

    # Sign-in -------------------------------------------------------------------------

    def sign_in(self, *, username: str, password: str, source: str,
                client: str | None = None) -> Opened:
        """Check the password; open a session waiting for the second factor (or for
        enrolment, on the first sign-in)."""
        error: AuthenticationError
        with self._app.transaction() as session:
            now = self._app.clock()
            held = throttle.blocked_until(session, scope=Scope.SOURCE, key=source, now=now,
                                          logged=self._app.ledger)
            account = None if held else self._app.auth.usable_account(session, username)
            refusal = (self._held_back(held) if held
                       else self._password_refusal(session, account, password))
            if refusal is None:
                assert account is not None
                refusal = self._app.auth.blocked_refusal(session, account, now)
                if refusal is None:
                    return self._open(session, account, password, source, client, now)
                # The password proved the holder: told why, and no guess was made.
                self._fail(session, username, refusal, "password", source)
            else:
                self._fail(session, username, refusal, "password", source,
                           counts=() if held else ((Scope.SOURCE, source),))
            error = AuthenticationError(refusal.tell or REFUSED)
        raise error

    def code_sign_in(self, *, username: str, code: str, source: str,
                     client: str | None = None, enrolment: str = "") -> Opened:
        """A partner user's portal sign-in, or a staff member's for the upload page: their
        current one-time code (the one they use over SFTP) as the first factor, then their
        passkey. On the first sign-in (no passkey yet) the code read over SFTP
        (``enrolment``, :mod:`gateway.portal_enrolment`) is due too, and registering a
        passkey is the only thing the session can do: the first passkey rests on the SSH
        key and the one-time code, as an SFTP sign-in does.

        Refusals say nothing about which part was wrong or whether the account exists;
        an unknown name counts against the source, a wrong code against the account,
        exactly as over SFTP, and the code's time step is used up for both.
        """
        with self._app.transaction() as session:
            now = self._app.clock()
            held = throttle.blocked_until(session, scope=Scope.SOURCE, key=source, now=now,
                                          logged=self._app.ledger)
            account = None if held else self._app.auth.usable_account(session, username)
            counts: tuple[tuple[Scope, str], ...] = ()
            refusal: SignInRefusedError | None
            told_after_code = False
            if held:
                refusal = self._held_back(held)
            elif account is None or account.role not in CODE_ROLES or account.machine:
                refusal = SignInRefusedError("unknown partner or staff account")
                counts = ((Scope.SOURCE, source),)
            else:
                forged = self._app.auth.unverified(session, account)
                refusal = (SignInRefusedError(forged) if forged is not None else
                           self._app.auth.consume_code(session, account, code, now,
                                                       enrolling=False))
                if refusal is None and not self._app.passkeys.has_passkey(session,
                                                                          account.id):
                    refusal = self._app.portal_enrolment.take(
                        session, account, enrolment,
                        Actor.account(username=account.username, account_id=account.id,
                                      role=account.role, partner_id=account.partner_id,
                                      source=source, client=CLIENT), now)
                    told_after_code = refusal is not None
                if refusal is None:
                    return self._open_by_code(session, account, source, client, now)
                if refusal.guess:
                    counts = ((Scope.ACCOUNT, account.username),)
            assert refusal is not None
            self._fail(session, username, refusal,
                       "enrolment code" if told_after_code else "totp", source, counts=counts)
            # Why is told only once the one-time code proved the holder (or about the
            # address alone).
            told = refusal.tell if held or told_after_code else None
        raise AuthenticationError(told or REFUSED_CODE)

    def _open_by_code(self, session: Session, account: Account, source: str,
                      client: str | None, now: datetime) -> Opened:
        token, row = open_session(session, account, stage=Stage.SECOND_FACTOR,
                                  source=source, client=client, now=now)
        session.flush()
        if self._app.passkeys.has_passkey(session, account.id):
            return Opened(token, info(row, account))
        # No passkey yet (the enrolment code was taken): signed in, but the session can
        # only register one.
        return self._signed_in(session, row, account, method="totp+enrolment code", now=now)

    @staticmethod
    def _held_back(until: datetime) -> SignInRefusedError:
        # About the address, not an account: safe to say before any proof.
        when = until.strftime("%Y-%m-%d %H:%M UTC")
        return SignInRefusedError(f"source held back until {when}",
                                  tell="sign-in refused: too many failed sign-ins from this "
                                       f"address; try again after {when}")

    def _password_refusal(self, session: Session, account: Account | None,
                          password: str) -> SignInRefusedError | None:
        """Why the password does not prove ``account``'s holder (told to no one), or None."""
        # Every path checks a hash, so timing does not tell a known name from an unknown.
        if account is None:
            passwords.verify(None, password)
            return SignInRefusedError("unknown account")
        if account.role not in PASSWORD_ROLES:
            passwords.verify(None, password)
            return SignInRefusedError(f"{account.role.value} accounts have no console access")
        if not passwords.verify(account.password_hash, password):
            return SignInRefusedError("wrong password")
        # The role and the password hash count only if the gateway wrote them.
        forged = self._app.auth.unverified(session, account)
        return None if forged is None else SignInRefusedError(forged)

    def _open(self, session: Session, account: Account, password: str, source: str,
              client: str | None, now: datetime) -> Opened:
        assert account.password_hash is not None
        if passwords.needs_rehash(account.password_hash):
            account.password_hash = passwords.hash_password(password)
        enrolled = self._enrolled(session, account)
        token, row = open_session(session, account,
                                  stage=Stage.SECOND_FACTOR if enrolled else Stage.ENROL,
                                  source=source, client=client, now=now)
        session.flush()
        return Opened(token, info(row, account))

    def _enrolled(self, session: Session, account: Account) -> bool:
        """Whether the first sign-in is done (a forged record of it forces enrolment)."""
        credential = session.get(ConsoleCredential, account.id)
        return credential is not None and self._app.integrity.holds(session, credential)

    def second_factor(self, token: str, *, code: str) -> Opened:
        """Complete a sign-in with the account's current one-time code."""
        def refusal(session: Session, _row: ConsoleSession, account: Account,
                    now: datetime) -> SignInRefusedError | None:
            if self._codes_refused(session, account):
                why = (f"{account.role.value} accounts confirm the code with their passkey"
                       if account.role in CODE_ROLES
                       else "admins sign in with a passkey (console_require_passkey)")
                return SignInRefusedError(why, tell=why)
            return self._app.auth.consume_code(session, account, code, now, enrolling=False)

        return self._complete(token, refusal, method="password+totp", factor="totp")

    def passkey_options(self, token: str) -> str:
        """WebAuthn options for signing in with a passkey instead of the code."""
        return self._app.passkeys.assertion_options(token_id(token), purpose=SIGN_IN,
                                                    stages=(Stage.SECOND_FACTOR,))

    def passkey_sign_in(self, token: str, *, credential: str) -> Opened:
        """Complete a sign-in with a passkey assertion answering this session's challenge."""
        def refusal(session: Session, row: ConsoleSession, account: Account,
                    now: datetime) -> SignInRefusedError | None:
            return (self._app.auth.blocked_refusal(session, account, now)
                    or self._passkey_refusal(session, row, account, credential,
                                             purpose=SIGN_IN, now=now))

        return self._complete(token, refusal, method="password+passkey", factor="passkey")

    def _complete(self, token: str, refusal: FactorCheck, *, method: str,
                  factor: str) -> Opened:
        """The second step of a sign-in: ``refusal`` decides. A refused factor is counted
        in the transaction, which commits before the error is raised."""
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
                refused = refusal(session, row, account, now)
                if refused is None:
                    return self._signed_in(session, row, account, method=method, now=now)
                error = self._factor_refused(session, row, account, refused, factor)
        raise error

    def _signed_in(self, session: Session, row: ConsoleSession, account: Account, *,
                   method: str, now: datetime) -> Opened:
        throttle.clear(session, scope=Scope.ACCOUNT, key=account.username)
        stage = Stage.PASSKEY if self._must_register_passkey(session, account) else Stage.FULL
        opened = rotate(session, row, account, stage=stage, now=now)
        actor = Actor.account(username=account.username, account_id=account.id,
                              role=account.role, partner_id=account.partner_id,
                              source=row.source, client=CLIENT)
        self._app.audit.record(session, tag=AuditTag.LOGIN_SUCCESS, actor=actor,
                               subject=f"account:{account.username}",
                               details={"method": method})
        return opened

    def _passkey_refusal(self, session: Session, row: ConsoleSession, account: Account,
                         credential: str, *, purpose: str,
                         now: datetime) -> SignInRefusedError | None:
        reason = self._app.passkeys.check_assertion(session, row, account,
                                                    credential=credential, purpose=purpose,
                                                    now=now)
        # A failed assertion after the password is the holder's own failure, and counts.
        return None if reason is None else SignInRefusedError(
            reason, guess=True, tell=f"passkey refused: {reason}")

    def _factor_refused(self, session: Session, row: ConsoleSession, account: Account,
                        refusal: SignInRefusedError, factor: str) -> AuthenticationError:
        """Audit and count a refused second factor; end the sign-in when it is final or
        after too many; return the error telling the holder why."""
        attempt = LoginAttempt(source=row.source, client=CLIENT)
        if row.counted:
            attempt.counted.add(Scope.ACCOUNT)
        counts = ((Scope.ACCOUNT, account.username),) if refusal.guess else ()
        self._fail(session, account.username, refusal, factor, row.source, counts=counts,
                   attempt=attempt)
        row.counted = Scope.ACCOUNT in attempt.counted
        row.factor_failures += 1
        tell = refusal.tell or "sign-in refused"
        if refusal.final or row.factor_failures >= MAX_CODE_ATTEMPTS:
            session.delete(row)
            return SessionExpiredError(f"{tell}; this sign-in has ended - sign in again "
                                       "with your password")
        return AuthenticationError(tell)

    def _fail(self, session: Session, username: str, refusal: SignInRefusedError,
              factor: str, source: str, *, counts: tuple[tuple[Scope, str], ...] = (),
              attempt: LoginAttempt | None = None) -> None:
        self._app.auth.record_failure(
            session, attempt or LoginAttempt(source=source, client=CLIENT),
            Failure(AuditTag.LOGIN_FAILURE, username, refusal.reason, factor, source, CLIENT,
                    counts=counts), now=self._app.clock())

    # Passkey policy ------------------------------------------------------------------

    def _passkey_policy(self, role: Role) -> bool:
        # A partner user's or staff member's one-time code is their first factor in the
        # console, so their second is always a passkey.
        return role in CODE_ROLES or (self._app.settings.console_require_passkey
                                        and role is Role.ADMIN)

    def _must_register_passkey(self, session: Session, account: Account) -> bool:
        return (self._passkey_policy(account.role)
                and not self._app.passkeys.has_passkey(session, account.id))

    def _codes_refused(self, session: Session, account: Account) -> bool:
        # A partner user never completes a sign-in with a code: had their passkeys gone
        # (a database writer can delete rows) between the two steps, a code would
        # register a first passkey without the enrolment code.
        if account.role is Role.PARTNER:
            return True
        return (self._passkey_policy(account.role)
                and self._app.passkeys.has_passkey(session, account.id))

    # First sign-in -------------------------------------------------------------------

    def enrolment(self, token: str) -> Enrolment:
        """The TOTP secret to enrol in this first sign-in (made on first ask, then kept)."""
        with self._app.transaction() as session:
            row, account = load(session, token_id(token), now=self._app.clock(),
                                integrity=self._app.integrity,
                                stages=(Stage.ENROL,))
            if self._has_factor(session, account):
                return Enrolment(account.username, None, None)
            if row.enrol_secret is None:
                # Encrypted like an enrolled secret: the database alone never yields one.
                row.enrol_secret = encrypt_totp(self._app.state_keys, account_id=account.id,
                                                secret=totp.new_secret())
            secret = self._enrol_secret(row)
            return Enrolment(account.username, secret,
                             totp.provisioning_uri(secret, account=account.username))

    def _has_factor(self, session: Session, account: Account) -> bool:
        """Whether the account holds an enrolled TOTP secret the gateway wrote."""
        row = account.totp
        return (row is not None and row.enrol_until is None
                and self._app.auth.unverified(session, account, row) is None)

    def _enrol_secret(self, row: ConsoleSession) -> str:
        assert row.enrol_secret is not None
        try:
            return decrypt_totp(self._app.state_keys, account_id=row.account_id,
                                stored=row.enrol_secret)
        except SealError:
            raise UsageError("the enrolment secret was not written by the gateway; sign in "
                             "again") from None

    def enrol(self, token: str, *, new_password: str, code: str) -> Opened:
        """Replace the one-time password, confirming the account's enrolled factor with a
        code, or enrolling the shown TOTP secret; in one step."""
        error: AuthenticationError
        with self._app.transaction() as session:
            now = self._app.clock()
            row, account = load(session, token_id(token), now=now, integrity=self._app.integrity,
                                stages=(Stage.ENROL,))
            passwords.check_new(new_password, username=account.username,
                                current=account.password_hash)
            if self._has_factor(session, account):
                # The holder's own factor: a wrong code counts like one at sign-in.
                refused = self._app.auth.consume_code(session, account, code, now,
                                                      enrolling=False)
                if refused is None:
                    self._store_password(session, row, account, password=new_password,
                                         now=now)
                    return self._signed_in(session, row, account,
                                           method="one-time password+totp", now=now)
                error = self._factor_refused(session, row, account, refused, "totp")
            else:
                if row.enrol_secret is None:
                    raise UsageError("the enrolment expired; reload the page for a new code")
                try:
                    step = totp.check_code(self._enrol_secret(row), code, now=now,
                                           last_step=None)
                except AuthenticationError:
                    # A typo while enrolling is no guess at a secret: audited, not counted.
                    self._fail(session, account.username,
                               SignInRefusedError("wrong code at TOTP enrolment"),
                               "totp-enrol", row.source)
                    error = AuthenticationError("that code does not match the new secret; "
                                                "check the authenticator app's clock and try "
                                                "the next code")
                else:
                    self._store_enrolment(session, row, account, password=new_password,
                                          step=step, now=now)
                    return self._signed_in(session, row, account,
                                           method="one-time password+totp enrolment", now=now)
        raise error

    def _store_password(self, session: Session, row: ConsoleSession, account: Account, *,
                        password: str, now: datetime) -> None:
        """Replace the one-time password; the enrolled factor stays."""
        account.password_hash = passwords.hash_password(password)
        session.merge(ConsoleCredential(account_id=account.id, enrolled_at=now,
                                        password_changed_at=now))
        actor = Actor.account(username=account.username, account_id=account.id,
                              role=account.role, partner_id=None, source=row.source,
                              client=CLIENT)
        self._app.audit.record(session, tag=AuditTag.ACCOUNT_PASSWORD_CHANGE, actor=actor,
                               subject=f"account:{account.username}",
                               details={"first_sign_in": True})

    def change_password(self, current: SessionInfo, *, current_password: str,
                        new_password: str, code: str | None = None,
                        credential: str | None = None) -> None:
        """Change the signed-in holder's own password, with a fresh second factor; the
        holder's other sessions end."""
        proven = self.step_up(current, purpose="password change", code=code,
                              credential=credential)
        self._app.accounts.change_password(proven, current_password=current_password,
                                           new_password=new_password, keep_session=current.id)

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
        self._may(current, permission, f"key:{key_id}")
        return self._app.passkeys.assertion_options(current.id,
                                                    purpose=key_purpose(verb, key_id))

    def change_options(self, current: SessionInfo, *, change_id: int) -> str:
        """WebAuthn options whose assertion approves one authority change (and nothing
        else)."""
        self._may(current, Permission.AUTHORITY_APPROVE, f"change:{change_id}")
        return self._app.passkeys.assertion_options(current.id,
                                                    purpose=change_purpose(change_id))

    def _may(self, current: SessionInfo, permission: Permission, subject: str) -> None:
        """Refuse before asking for a factor when even a fresh one would not do."""
        self._app.authz.require(dataclasses.replace(current.actor, standing=False),
                                permission, subject=subject)

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
                refusal = (self._app.auth.blocked_refusal(session, account, now)
                           or self._passkey_refusal(session, row, account, credential,
                                                    purpose=purpose, now=now))
                if refusal is None:
                    return self._proven(session, account, row.source, purpose)
                counts = ((Scope.ACCOUNT, account.username),) if refusal.guess else ()
                self._app.auth.record_failure(
                    session, LoginAttempt(source=row.source, client=CLIENT),
                    Failure(AuditTag.STEP_UP_FAILURE, account.username, refusal.reason,
                            "passkey", row.source, CLIENT, purpose=purpose, counts=counts),
                    now=now)
                error = AuthenticationError(refusal.tell or refusal.reason)
        raise error

    def _proven(self, session: Session, account: Account, source: str, purpose: str) -> Actor:
        throttle.clear(session, scope=Scope.ACCOUNT, key=account.username)
        actor = Actor.account(username=account.username, account_id=account.id,
                              role=account.role, partner_id=None, source=source, client=CLIENT)
        self._app.audit.record(session, tag=AuditTag.STEP_UP_SUCCESS, actor=actor,
                               subject=f"account:{account.username}",
                               details={"method": "passkey", "purpose": purpose})
        return actor

    def approve_key(self, current: SessionInfo, *, key_id: int, code: str | None = None,
                    credential: str | None = None) -> RecipientKey:
        """Approve a key after a second factor given for this very approval."""
        self._may(current, Permission.KEY_APPROVE, f"key:{key_id}")
        proven = self.step_up(current, purpose=key_purpose("approve", key_id), code=code,
                              credential=credential)
        return self._app.keys.approve(proven, key_id=key_id)

    def revoke_key(self, current: SessionInfo, *, key_id: int, code: str | None = None,
                   credential: str | None = None) -> RecipientKey:
        """Revoke a key after a second factor given for this very revocation."""
        self._may(current, Permission.KEY_REVOKE, f"key:{key_id}")
        proven = self.step_up(current, purpose=key_purpose("revoke", key_id), code=code,
                              credential=credential)
        return self._app.keys.revoke(proven, key_id=key_id)

    def approve_change(self, current: SessionInfo, *, change_id: int, code: str | None = None,
                       credential: str | None = None) -> AppliedChange:
        """Approve an authority change after a second factor given for this very change;
        its one-time secret is for this approver alone."""
        self._may(current, Permission.AUTHORITY_APPROVE, f"change:{change_id}")
        proven = self.step_up(current, purpose=change_purpose(change_id), code=code,
                              credential=credential)
        return self._app.authority.approve(proven, change_id=change_id)


def key_purpose(verb: str, key_id: int) -> str:
    """The purpose a key decision's second factor is bound to."""
    return f"key {verb} {key_id}"


def change_purpose(change_id: int) -> str:
    """The purpose an authority change's approving second factor is bound to."""
    return f"authority approve {change_id}"
