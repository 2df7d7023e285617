"""Sign-in rules: a verified public key AND a fresh TOTP code (a machine account: its key
alone, from its networks), every time.

The adapter (``sftp_server``) proves the protocol facts — that the client signed with the
key, that a code answers a challenge this connection issued. This module owns the rules:
which key belongs to whom, codes and replays, disabled accounts and partners, allowed
networks, self-enrolment of the second factor, failure counts and lockouts (the policy is
:mod:`gateway.throttle`), what the client may be told, and the audit trail of every
success, failure and lockout.

Until the key has verified, a refusal says nothing that would reveal whether an account
exists; after it, the holder is proven and is told why (:class:`SignInRefusedError.tell`).

The same code rules prove a person at the command line or in the console before an
action that needs their own authority (approving a recipient key): :meth:`prove`.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from gateway import networks, throttle, totp
from gateway.accounts import get_account
from gateway.actors import MAX_NAME, Actor, printable
from gateway.audit import AuditTag
from gateway.authz import Permission
from gateway.db.base import Base
from gateway.db.models import Account, SSHKey, TOTPSecret
from gateway.errors import AuthenticationError, NotFoundError, UsageError
from gateway.integrity import IntegrityViolationError, decrypt_totp
from gateway.state_keys import SealError
from gateway.throttle import Scope

if TYPE_CHECKING:
    from gateway.app import App

log = logging.getLogger(__name__)

NO_FACTOR = "no TOTP secret enrolled"
NO_CODE = "no one-time code given"
INTEGRITY_FAILED = "integrity check failed"
NO_KEY = "one-time code without a verified public key"
# A client that keeps guessing on one connection is cut off after this many codes
# (keyboard-interactive and password together); lockouts span connections.
MAX_CODE_ATTEMPTS = 3
REPLAYED = "code already used - wait for the next one"
TOO_MANY = "too many codes on one connection - connect again when your app shows a new code"


class SignInRefusedError(AuthenticationError):
    """A refused sign-in step.

    The message is the reason, for the audit log and the server log. ``tell`` is what the
    client may be shown, set only once the key proved the account holder. ``final``: the
    adapter ends the connection (showing ``tell``); otherwise the client may try again.
    ``guess``: a wrong or replayed secret, which counts toward the account's lockout.
    """

    def __init__(self, reason: str, *, tell: str | None = None, final: bool = False,
                 guess: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tell = tell
        self.final = final
        self.guess = guess


@dataclass(frozen=True)
class PendingEnrolment:
    """A second factor the key holder enrols now: shown to them, confirmed by a code."""

    secret: str
    uri: str
    until: datetime


@dataclass
class LoginAttempt:
    """The state of one connection's sign-in: which factors have passed, for which account."""

    source: str
    client: str | None
    username: str | None = None
    key_fingerprint: str | None = None
    succeeded: bool = False
    failures: int = 0
    codes_tried: int = 0
    # The scopes this connection has already counted a failure against (once each).
    counted: set[Scope] = field(default_factory=set)
    enrolment: PendingEnrolment | None = None

    @property
    def has_key(self) -> bool:
        return self.key_fingerprint is not None


# What a failure counts against: (scope, key) pairs, each at most once per attempt.
Counts = tuple[tuple[Scope, str], ...]


@dataclass(frozen=True)
class Failure:
    """One refused factor, as audited and counted."""

    tag: AuditTag
    username: str | None
    reason: str
    factor: str
    source: str
    client: str | None = None
    os_user: str | None = None
    purpose: str | None = None
    counts: Counts = ()


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
                         os_user=os_user, machine=account.machine)


def _final(reason: str, tell: str) -> SignInRefusedError:
    """A refusal that ends the connection, told to the proven key holder."""
    return SignInRefusedError(reason, final=True, tell=tell)


def _at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


class AuthService:
    """Check factors, count failures, lock out, and audit all of it."""

    def __init__(self, app: App) -> None:
        self._app = app

    @property
    def policy(self) -> throttle.Policy:
        return throttle.Policy.from_settings(self._app.settings)

    def begin(self, *, source: str, client: str | None = None) -> LoginAttempt:
        """Start tracking a connection's sign-in."""
        return LoginAttempt(source=source, client=client)

    def key_is_registered(self, *, username: str, key_blob: bytes, source: str) -> bool:
        """Answer the unsigned "would this key be accepted?" probe. Grants nothing.

        While ``source`` is held back, every probe is answered yes: the answer then says
        nothing about which accounts and keys exist, and a real key still gets through,
        because only its signature (checked next) counts.
        """
        data = base64.b64encode(key_blob).decode("ascii")
        with self._app.read() as session:
            if throttle.blocked_until(session, scope=Scope.SOURCE, key=source,
                                      now=self._app.clock(),
                                      logged=self._app.ledger) is not None:
                return True
            return session.scalar(
                select(SSHKey.id).join(Account).where(Account.username == username,
                                                      SSHKey.key_data == data)) is not None

    def accept_public_key(self, attempt: LoginAttempt, *, username: str,
                          key_blob: bytes) -> Actor | None:
        """Record the first factor; the caller guarantees the client signed with this key.

        Returns the actor when the key alone signs in (an approved machine account, from
        its networks), else None: a code comes next (or, with ``attempt.enrolment`` set,
        the holder enrols their second factor first). Raises :class:`SignInRefusedError`.
        """
        data = base64.b64encode(key_blob).decode("ascii")
        with self._app.transaction() as session:
            now = self._app.clock()
            account = self.usable_account(session, username)
            key = next((k for k in account.ssh_keys if k.key_data == data), None) \
                if account is not None else None
            refusal, counts = self._first_factor(session, attempt, account, key, now)
            if refusal is None:
                assert account is not None
                return self._key_proven(session, attempt, account)
            self.record_failure(session, attempt, Failure(AuditTag.LOGIN_FAILURE, username,
                                                  refusal.reason, "publickey", attempt.source,
                                                  attempt.client, counts=counts), now=now)
        raise refusal

    def accept_code(self, attempt: LoginAttempt, *, username: str, code: str) -> Actor:
        """Check the second factor and complete the sign-in, or raise :class:`SignInRefusedError`.

        Refused unless a verified public key for the same account came first on this
        connection: a code alone never suffices. At most :data:`MAX_CODE_ATTEMPTS` codes
        are checked per connection; the last refusal is final. Returns the actor.
        """
        attempt.codes_tried += 1
        with self._app.transaction() as session:
            now = self._app.clock()
            account = self.usable_account(session, username)
            counts: Counts = ()
            refusal: SignInRefusedError
            if attempt.codes_tried > MAX_CODE_ATTEMPTS:
                refusal = SignInRefusedError("too many codes on one connection", final=True,
                                             tell=self._too_many(attempt))
            elif not attempt.has_key or attempt.username != username or account is None:
                refusal, counts = SignInRefusedError(NO_KEY), ((Scope.SOURCE, attempt.source),)
            else:
                checked = self.consume_code(session, account, code, now,
                                           enrolling=attempt.enrolment is not None)
                if checked is None:
                    return self._succeed(session, attempt, account)
                refusal = checked
                counts = ((Scope.ACCOUNT, account.username),) if refusal.guess else ()
            if attempt.codes_tried >= MAX_CODE_ATTEMPTS and not refusal.final:
                refusal = SignInRefusedError(refusal.reason, final=True, guess=refusal.guess,
                                             tell=self._too_many(attempt, refusal.tell))
            self.record_failure(session, attempt, Failure(AuditTag.LOGIN_FAILURE, username,
                                                  refusal.reason, "totp", attempt.source,
                                                  attempt.client, counts=counts), now=now)
        raise refusal

    def prove(self, *, username: str, code: str, source: str, purpose: str,
              client: str | None = None, os_user: str | None = None) -> Actor:
        """Prove that the person acting holds ``username``'s second factor, now.

        For an action that needs a named person's authority outside an SFTP session (a
        key approval typed at the command line, confirmed in the console): the code
        passes the same replay, lockout and audit rules as a sign-in, and a wrong one
        counts toward the account's lockout.
        """
        attempt = LoginAttempt(source=source, client=client)
        with self._app.transaction() as session:
            now = self._app.clock()
            account = self.usable_account(session, username)
            refusal: SignInRefusedError | None
            if not code.strip():
                refusal = SignInRefusedError(NO_CODE)
            elif account is None:
                refusal = SignInRefusedError("unknown account")
            else:
                refusal = self.consume_code(session, account, code, now, enrolling=False)
            if refusal is None:
                assert account is not None
                throttle.clear(session, scope=Scope.ACCOUNT, key=account.username)
                actor = _actor_for(account, source=source, client=client, os_user=os_user)
                self._app.audit.record(session, tag=AuditTag.STEP_UP_SUCCESS, actor=actor,
                                       subject=f"account:{username}",
                                       details={"method": "totp", "purpose": purpose})
                return actor
            counts = ((Scope.ACCOUNT, username),) if refusal.guess else ()
            self.record_failure(session, attempt, Failure(AuditTag.STEP_UP_FAILURE, username,
                                                  refusal.reason, "totp", source, client,
                                                  os_user, purpose, counts), now=now)
        if refusal.reason == NO_FACTOR:
            raise SignInRefusedError(
                f"{username} has no one-time codes enrolled yet: they sign in to the console "
                "once first (with their one-time password), where they choose a password and "
                "enrol their own codes", final=True) from None
        raise refusal

    def abandon(self, attempt: LoginAttempt, *, reason: str, username: str | None = None) -> None:
        """Audit a connection that closed without signing in and without a recorded failure.

        ``username`` is the name the client claimed, if any. Only a connection that
        claimed one without proving it (no registered key offered) counts, against its
        source address: a port scan or a load balancer's health check is audited but
        must not slow its source down, and a holder who verified their key and then
        left guessed nothing.
        """
        if attempt.succeeded or attempt.failures:
            return
        claimed = attempt.username or username
        counts = ((Scope.SOURCE, attempt.source),) if claimed and not attempt.has_key else ()
        with self._app.transaction() as session:
            self.record_failure(session, attempt, Failure(AuditTag.LOGIN_FAILURE, claimed, reason,
                                                  "none", attempt.source, attempt.client,
                                                  counts=counts), now=self._app.clock())

    # -- administration -------------------------------------------------------------

    def unlock(self, actor: Actor, *, username: str) -> throttle.Block:
        """Lift ``username``'s lockout and forget its failed codes (audited); return what
        there was."""
        self._app.authz.require(actor, Permission.ACCOUNT_MANAGE, subject=f"account:{username}")
        with self._app.transaction() as session:
            get_account(session, username)
            return self._lift(session, actor, Scope.ACCOUNT, username, AuditTag.ACCOUNT_UNLOCK)

    def unblock_source(self, actor: Actor, *, address: str) -> throttle.Block:
        """Lift a source address's back-off and forget its failures (audited)."""
        try:
            canonical = str(ipaddress.ip_address(address.strip()))
        except ValueError:
            raise UsageError(f"invalid address {address!r}; give an IPv4 or IPv6 "
                             "address") from None
        self._app.authz.require(actor, Permission.ACCOUNT_MANAGE, subject=f"source:{canonical}")
        with self._app.transaction() as session:
            return self._lift(session, actor, Scope.SOURCE, canonical, AuditTag.SOURCE_UNBLOCK)

    def held_back(self, actor: Actor) -> list[throttle.Block]:
        """Source addresses held back now, soonest end first."""
        self._app.authz.require(actor, Permission.ACCOUNT_READ)
        with self._app.read() as session:
            return throttle.blocks(session, scope=Scope.SOURCE, now=self._app.clock())

    def _lift(self, session: Session, actor: Actor, scope: Scope, key: str,
              tag: AuditTag) -> throttle.Block:
        found = throttle.clear(session, scope=scope, key=key)
        if found is None:
            found = throttle.Block(scope, key, 0, None)
        elif found.blocked_until is not None and found.blocked_until <= self._app.clock():
            found = throttle.Block(scope, key, found.failures, None)  # Already over.
        until = found.blocked_until
        self._app.audit.record(session, tag=tag, actor=actor, subject=f"{scope.value}:{key}",
                               details={"failures": found.failures,
                                        "was_blocked_until": until.isoformat() if until
                                        else None})
        return found

    # -- open sessions --------------------------------------------------------------

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

    # -- the steps ------------------------------------------------------------------

    def usable_account(self, session: Session, username: str) -> Account | None:
        try:
            return get_account(session, username)
        except NotFoundError:
            return None

    def _first_factor(self, session: Session, attempt: LoginAttempt, account: Account | None,
                      key: SSHKey | None, now: datetime
                      ) -> tuple[SignInRefusedError | None, Counts]:
        """Why the key step is refused, and what that counts against; (None, ()) if not."""
        if account is None or key is None:
            return self._before_key(session, attempt.source, now,
                                    "unknown account" if account is None else "unknown key")
        if (forged := self.unverified(session, account, key)) is not None:
            return SignInRefusedError(forged), ((Scope.SOURCE, attempt.source),)
        # The key is proven: whatever refuses now is told to its holder, and counts
        # toward nothing (none of it is a guess).
        return self._after_key(session, attempt, account, key, now), ()

    def _before_key(self, session: Session, source: str, now: datetime, reason: str
                    ) -> tuple[SignInRefusedError, Counts]:
        """A refusal before any proof: tells nothing, counts against the source (unless
        it is already held back, when nothing counts)."""
        if (until := throttle.blocked_until(session, scope=Scope.SOURCE, key=source,
                                            now=now, logged=self._app.ledger)) is not None:
            return SignInRefusedError(f"{reason}; source held back until {_at(until)}"), ()
        return SignInRefusedError(reason), ((Scope.SOURCE, source),)

    def _after_key(self, session: Session, attempt: LoginAttempt, account: Account,
                   key: SSHKey, now: datetime) -> SignInRefusedError | None:
        """Why a proven key holder may not go on (told to them), or None; sets the
        attempt's first factor and pending enrolment when they may."""
        refusal = self._holder_refusal(session, account, attempt.source, now)
        if refusal is not None:
            return refusal
        enrolment = None
        if account.totp is not None and account.totp.enrol_until is not None:
            enrolment = self._enrolment(session, account, account.totp)
            if enrolment is None:
                return SignInRefusedError(INTEGRITY_FAILED)
        attempt.username, attempt.key_fingerprint = account.username, key.fingerprint
        attempt.enrolment = enrolment
        return None

    def _holder_refusal(self, session: Session, account: Account, source: str,
                        now: datetime) -> SignInRefusedError | None:
        """Why the proven holder of ``account``'s key may not sign in now, or None."""
        if (blocked := self.blocked_refusal(session, account, now)) is not None:
            return blocked
        if not networks.allows(networks.stored(account.allow_from), source):
            return _final("source not allowed", f"signing in from {source} is not allowed for "
                          "this account; use one of its allowed networks")
        if account.machine:
            return None
        if account.totp is None:
            return _final("no second factor", "this account has no second factor yet (a "
                          "machine account waits for a second admin's approval)")
        if account.totp.enrol_until is not None and account.totp.enrol_until <= now:
            return _final("enrolment window closed", "the window to enrol this account's "
                          f"one-time codes closed at {_at(account.totp.enrol_until)}; ask "
                          "the registry for a new one")
        return None

    def blocked_refusal(self, session: Session, account: Account, now: datetime
                 ) -> SignInRefusedError | None:
        if account.disabled:
            return _final("account disabled", "this account is disabled; ask the registry")
        if account.partner is not None and account.partner.disabled:
            return _final("partner disabled", f"partner {account.partner.slug!r} is "
                          "disabled; ask the registry")
        until = throttle.blocked_until(session, scope=Scope.ACCOUNT, key=account.username,
                                       now=now, logged=self._app.ledger)
        if until is not None:
            return _final("account locked out", f"account locked until {_at(until)} after "
                          "repeated wrong codes; try again then, or ask the registry to "
                          "unlock it")
        return None

    def _enrolment(self, session: Session, account: Account, row: TOTPSecret
                   ) -> PendingEnrolment | None:
        """The secret to show a proven holder who enrols now; None if its row is forged."""
        if self.unverified(session, account, row) is not None:
            return None
        secret = self._secret(session, account, row)
        if secret is None or row.enrol_until is None:
            return None
        return PendingEnrolment(secret, totp.provisioning_uri(secret, account=account.username),
                                row.enrol_until)

    def _secret(self, session: Session, account: Account, row: TOTPSecret) -> str | None:
        try:
            return decrypt_totp(self._app.state_keys, account_id=account.id, stored=row.secret)
        except SealError:
            self._app.integrity.record(session, IntegrityViolationError(
                "totp_secrets", str(account.id), "secret does not decrypt"))
            return None

    def _key_proven(self, session: Session, attempt: LoginAttempt, account: Account
                    ) -> Actor | None:
        if account.machine:
            return self._succeed(session, attempt, account)
        log.info("key of %s verified from %s; asking for %s", account.username,
                 attempt.source, "enrolment" if attempt.enrolment else "the one-time code")
        return None

    def consume_code(self, session: Session, account: Account, code: str, now: datetime, *,
                    enrolling: bool) -> SignInRefusedError | None:
        """Consume ``code`` for ``account``; return why it is refused, or None."""
        if (blocked := self.blocked_refusal(session, account, now)) is not None:
            return blocked
        row = account.totp
        if row is None or (row.enrol_until is not None and not enrolling):
            return SignInRefusedError(NO_FACTOR, final=True)
        if row.enrol_until is not None and row.enrol_until <= now:
            return _final("enrolment window closed", "the enrolment window closed; ask the "
                          "registry")
        if self.unverified(session, account, row) is not None:
            return SignInRefusedError(INTEGRITY_FAILED, final=True)
        secret = self._secret(session, account, row)
        if secret is None:
            return SignInRefusedError(INTEGRITY_FAILED, final=True)
        try:
            # The stored last step can be reset by a database writer; the log's cannot.
            step = totp.check_code(secret, code, now=now, last_step=max(
                -1 if row.last_step is None else row.last_step,
                self._app.ledger.totp_step(account.id, session)))
        except totp.ReplayedCodeError:
            return SignInRefusedError("replayed code", guess=True, tell=REPLAYED)
        except totp.InvalidCodeError:
            return SignInRefusedError("wrong code", guess=True, tell="wrong code")
        # One conditional UPDATE decides: whichever worker or node reaches it first uses
        # the step; every other gets no row and the code counts as replayed.
        consumed = session.execute(update(TOTPSecret).where(
            TOTPSecret.account_id == account.id,
            or_(TOTPSecret.last_step.is_(None), TOTPSecret.last_step < step))
            .values(last_step=step).execution_options(synchronize_session=False))
        if consumed.rowcount != 1:  # type: ignore[attr-defined]  # A CursorResult.
            return SignInRefusedError("replayed code", guess=True, tell=REPLAYED)
        self._app.audit.record(session, tag=AuditTag.TOTP_USE, actor=Actor.system("auth"),
                               subject=f"account:{account.username}",
                               details={"account_id": account.id, "step": step})
        return None

    @staticmethod
    def _too_many(attempt: LoginAttempt, why: str | None = None) -> str | None:
        if not attempt.has_key:
            return None
        return f"{why + '; ' if why else ''}{TOO_MANY}"

    def unverified(self, session: Session, account: Account, *rows: Base) -> str | None:
        """Refuse (and audit) a sign-in whose account, partner, key or enrolment row was
        not written by the gateway; None if every seal holds."""
        checked = [account, *([account.partner] if account.partner else []), *rows]
        for row in checked:
            if not self._app.integrity.holds(session, row):
                return INTEGRITY_FAILED
        return None

    # -- outcomes -------------------------------------------------------------------

    def _succeed(self, session: Session, attempt: LoginAttempt, account: Account) -> Actor:
        attempt.succeeded = True
        throttle.clear(session, scope=Scope.ACCOUNT, key=account.username)
        actor = _actor_for(account, source=attempt.source, client=attempt.client)
        method = "publickey" if account.machine else "publickey+totp"
        if attempt.enrolment is not None:
            self._finish_enrolment(session, actor, account)
            method = "publickey+totp-enrolment"
        self._app.audit.record(session, tag=AuditTag.LOGIN_SUCCESS, actor=actor,
                               subject=f"account:{account.username}",
                               details={"method": method, "key": attempt.key_fingerprint})
        log.info("%s%s signed in from %s (%s)", "machine account " if account.machine else "",
                 account.username, attempt.source, method)
        return actor

    def _finish_enrolment(self, session: Session, actor: Actor, account: Account) -> None:
        assert account.totp is not None
        account.totp.enrol_until = None
        self._app.audit.record(session, tag=AuditTag.ACCOUNT_TOTP_ENROL, actor=actor,
                               subject=f"account:{account.username}",
                               details={"method": "ssh"})

    def record_failure(self, session: Session, attempt: LoginAttempt, failure: Failure, *,
              now: datetime) -> None:
        attempt.failures += 1
        actor = Actor.anonymous(claimed=failure.username, source=failure.source,
                                client=failure.client, os_user=failure.os_user)
        counting = [(scope, key) for scope, key in failure.counts
                    if scope not in attempt.counted]
        details: dict[str, object] = {"reason": failure.reason, "factor": failure.factor}
        if counting:
            # What this failure counts against, so the log keeps the count too.
            details["counted"] = [scope.value for scope, _ in counting]
        if failure.purpose:
            details["purpose"] = failure.purpose
        if failure.username and len(failure.username) > MAX_NAME:
            # The actor's name was cut to fit the log; say so, and how long the claim was.
            details["claimed_length"] = len(failure.username)
        self._app.audit.record(session, tag=failure.tag, actor=actor,
                               subject=f"account:{actor.name}", details=details)
        log.info("sign-in refused for %s from %s: %s", actor.name, failure.source,
                 failure.reason)
        for scope, key in counting:
            attempt.counted.add(scope)
            logged = self._app.ledger.guesses(
                key, now=now, forget_after=self.policy.account.forget_after,
                session=session) if scope is Scope.ACCOUNT else 0
            counted = throttle.record_failure(session, self.policy, scope=scope, key=key,
                                              now=now, at_least=logged + 1)
            if counted.blocked_until is not None:
                self._record_block(session, scope, key, counted)

    def _record_block(self, session: Session, scope: Scope, key: str,
                      counted: throttle.FailureCount) -> None:
        assert counted.blocked_until is not None
        subject = f"{scope.value}:{printable(key, limit=200)}"
        log.warning("%s blocked until %s after %d failures", subject,
                    _at(counted.blocked_until), counted.failures)
        self._app.audit.record(session, tag=AuditTag.LOCKOUT, actor=Actor.system("auth"),
                               subject=subject,
                               details={"failures": counted.failures,
                                        "until": counted.blocked_until.isoformat()})
