"""SSH sign-in: a public key whose signature paramiko verified, THEN a TOTP code.

The rules (whose key, which code, replays, lockouts, disabled accounts, audit) belong to
:class:`gateway.auth.AuthService`. This module proves the protocol facts it relies on,
closing two traps of paramiko's server mode (pinned at 5.1.0 for this reason; the
private internals this needs are fenced in :mod:`sftp_server.paramiko_fence`):

1. ``ServerInterface.check_auth_publickey`` is called for the unsigned "is this key
   acceptable?" probe, and for a signed request *before* the signature is checked. So
   it only answers the probe (:meth:`AuthService.key_is_registered`, which grants
   nothing). The first factor is recorded by :class:`VerifyingAuthHandler`, inside the
   very call that verified the signature over this session's id, and nowhere else.
2. paramiko passes every ``USERAUTH_INFO_RESPONSE`` to
   ``check_auth_interactive_response``, even when no challenge is outstanding. So a
   response only counts against a challenge this connection issued after a verified
   key; each challenge is answered at most once, and any new ``USERAUTH_REQUEST``
   cancels it (RFC 4256, section 3.1). An unsolicited response ends the connection.

``get_allowed_auths`` is only advice to the client: every check enforces its own
preconditions. The code comes by keyboard-interactive or, for clients that only offer
passwords, by the password method after the key. A code alone or a password alone never
sign anyone in; a key alone only for a machine account the gateway approved.

What the user is told travels where OpenSSH shows it (its ``sftp`` prints no server
message of its own): a wrong or used code re-prompts with the reason in the
keyboard-interactive instruction (or a banner, for the password method); a final
refusal after the key verified (locked, disabled, not from this network, too many codes)
ends the connection with the reason as the disconnect message. Before the key verified,
nothing is said.
"""

from __future__ import annotations

import enum
import logging
import threading
from typing import Any, Protocol

import paramiko
from paramiko import common

from gateway.actors import Actor, printable
from gateway.app import App
from gateway.auth import SignInRefusedError
from gateway.authz import Permission, permits
from gateway.client import receive
from gateway.errors import AuthorizationError, DatabaseError, GatewayError
from sftp_server import enrolment
from sftp_server.paramiko_fence import FencedAuthHandler

log = logging.getLogger(__name__)

# paramiko's result codes, typed.
AUTH_FAILED: int = common.AUTH_FAILED
AUTH_PARTIALLY_SUCCESSFUL: int = common.AUTH_PARTIALLY_SUCCESSFUL
AUTH_SUCCESSFUL: int = common.AUTH_SUCCESSFUL
OPEN_SUCCEEDED: int = paramiko.OPEN_SUCCEEDED
OPEN_PROHIBITED: int = paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
CODE_PROMPT = "One-time code: "
CODE_INSTRUCTIONS = "Enter the 6-digit code from your authenticator app."
RETRY_INSTRUCTIONS = "{reason}. Enter the code your app shows now."
# Said when a connection is cut before the key verified: nothing about the account.
GENERIC_FAREWELL = "sign-in refused"


class Phase(enum.Enum):
    """How far this connection's sign-in has come."""

    NEED_KEY = "need key"
    KEY_VERIFIED = "key verified"
    SIGNED_IN = "signed in"
    CLOSED = "closed"


class Messenger(Protocol):
    """What the gate may send the client during sign-in (the authentication handler)."""

    def send_banner(self, text: str) -> None: ...


class LoginGate(paramiko.ServerInterface):  # type: ignore[misc]  # paramiko ships no type hints.
    """One connection's sign-in state machine, and the channels it then allows."""

    def __init__(self, app: App, *, source: str) -> None:
        self.app = app
        self.source = source
        self._attempt = app.auth.begin(source=source)
        self._lock = threading.Lock()
        self._phase = Phase.NEED_KEY
        self._challenge_outstanding = False
        self._refusal = "disconnected before signing in"
        # The username the client asked to sign in as, for the audit of a failed attempt.
        self._claimed: str | None = None
        # What to end the connection with once the current result is sent.
        self._farewell: str | None = None
        self.messenger: Messenger | None = None
        self.actor: Actor | None = None
        self.signed_in = threading.Event()
        # Set to ask the connection's supervisor to hang up (from outside paramiko's thread).
        self.hangup = threading.Event()
        # The database could not answer: the supervisor tells the client so and hangs up.
        self.unavailable = False
        # Why a signed-in session was ended from outside (its account was disabled).
        self.end_reason: str | None = None

    @property
    def phase(self) -> Phase:
        return self._phase

    def set_client_version(self, version: str) -> None:
        """Record the client's SSH version string for audit details."""
        self._attempt.client = printable(version, limit=100)

    # -- first factor ---------------------------------------------------------------

    def get_allowed_auths(self, _username: str) -> str:
        # Advice only: each check below enforces its own preconditions.
        if self._phase is Phase.KEY_VERIFIED:
            return "keyboard-interactive,password"
        return "publickey"

    def check_auth_none(self, _username: str) -> int:
        return AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        """Answer whether ``key`` may be used; called BEFORE any signature is verified.

        "Partially successful" here only lets paramiko answer the probe or go on to verify
        the signature; nothing is recorded until :meth:`signature_verified`.
        """
        if self._phase is not Phase.NEED_KEY:
            return AUTH_FAILED
        self._claimed = username
        try:
            registered = self.app.auth.key_is_registered(username=username,
                                                         key_blob=key.asbytes(),
                                                         source=self.source)
        except DatabaseError as exc:
            return self._database_failed(exc)
        if registered:
            return AUTH_PARTIALLY_SUCCESSFUL
        self._refusal = "no registered public key offered"
        return AUTH_FAILED

    def signature_verified(self, username: str, key: paramiko.PKey) -> None:
        """Record the first factor; only :class:`VerifyingAuthHandler` calls this.

        The gateway's rules decide (unknown, disabled, locked, not from this network);
        :meth:`key_result` then tells paramiko what to answer.
        """
        with self._lock:
            if self._phase is not Phase.NEED_KEY:
                return
            try:
                actor = self.app.auth.accept_public_key(self._attempt, username=username,
                                                        key_blob=key.asbytes())
            except SignInRefusedError as exc:
                self._refused(exc)
                return
            except DatabaseError as exc:
                self._database_failed(exc)
                return
            if actor is not None:
                self._sign_in(actor)
                return
            self._phase = Phase.KEY_VERIFIED
            pending = self._attempt.enrolment
        if pending is not None and self.messenger is not None:
            self.messenger.send_banner(enrolment.banner(username, pending))

    def key_result(self, result: int) -> int:
        """What a public-key request gets, given paramiko's own ``result``."""
        if result == AUTH_FAILED:
            return AUTH_FAILED
        if self._phase is Phase.SIGNED_IN:
            return AUTH_SUCCESSFUL
        return AUTH_PARTIALLY_SUCCESSFUL if self._phase is Phase.KEY_VERIFIED else AUTH_FAILED

    @property
    def first_factor_passed(self) -> bool:
        return self._phase in (Phase.KEY_VERIFIED, Phase.SIGNED_IN)

    # -- second factor --------------------------------------------------------------

    def check_auth_interactive(self, username: str, _submethods: str) -> Any:
        """Issue the code challenge (or the enrolment), but only after a verified key."""
        with self._lock:
            if self._phase is not Phase.KEY_VERIFIED or username != self._attempt.username:
                self._refusal = "keyboard-interactive without a verified public key"
                return AUTH_FAILED
            pending = self._attempt.enrolment
            if pending is not None:
                return self._challenge(enrolment.instructions(username, pending))
            return self._challenge(CODE_INSTRUCTIONS)

    def check_auth_interactive_response(self, responses: list[str]) -> Any:
        """Check the answer to the challenge this connection issued; nothing else counts."""
        with self._lock:
            outstanding, self._challenge_outstanding = self._challenge_outstanding, False
        if not outstanding:
            self.protocol_violation("keyboard-interactive response without a challenge")
            return AUTH_FAILED
        outcome = self._check_code(responses[0] if len(responses) == 1 else "")
        if isinstance(outcome, str):
            with self._lock:
                return self._challenge(RETRY_INSTRUCTIONS.format(reason=outcome))
        return outcome

    def check_auth_password(self, username: str, password: str) -> int:
        """The password method carries the code, after the key, for password-only clients.

        Without a verified key the gateway refuses (and audits) the attempt itself.
        """
        if not self.first_factor_passed:
            self._try_code(username, password)
            return AUTH_FAILED
        outcome = self._check_code(password)
        if isinstance(outcome, str):
            if self.messenger is not None:
                self.messenger.send_banner(RETRY_INSTRUCTIONS.format(reason=outcome) + "\n")
            return AUTH_FAILED
        return outcome

    def cancel_challenge(self) -> None:
        """A new authentication request abandons any outstanding challenge (RFC 4256)."""
        with self._lock:
            self._challenge_outstanding = False

    def _challenge(self, instructions: str) -> paramiko.InteractiveQuery:
        # Called with the lock held.
        self._challenge_outstanding = True
        query = paramiko.InteractiveQuery("Blindpost", instructions)
        query.add_prompt(CODE_PROMPT, echo=False)
        return query

    def _check_code(self, code: str) -> int | str:
        """AUTH_SUCCESSFUL, AUTH_FAILED, or the reason to ask again with."""
        with self._lock:
            if self._phase is not Phase.KEY_VERIFIED or self._attempt.username is None:
                return AUTH_FAILED
            try:
                actor = self.app.auth.accept_code(self._attempt, username=self._attempt.username,
                                                  code=code)
            except SignInRefusedError as exc:
                self._refused(exc)
                return exc.tell if exc.tell and not exc.final else AUTH_FAILED
            except DatabaseError as exc:
                return self._database_failed(exc)
            self._sign_in(actor)
        return AUTH_SUCCESSFUL

    def _try_code(self, username: str, code: str) -> None:
        try:
            self.app.auth.accept_code(self._attempt, username=username, code=code)
        except SignInRefusedError as exc:
            self._refused(exc)
        except DatabaseError as exc:
            self._database_failed(exc)

    def _database_failed(self, exc: DatabaseError) -> int:
        """Refuse a sign-in the database cannot decide, in one log line, and hang up."""
        if not self.unavailable:
            log.warning("refusing the sign-in from %s: %s", self.source, exc.diagnostics())
        self.unavailable = True
        self._refusal = "the database is unavailable"
        self.hangup.set()
        return AUTH_FAILED

    def _sign_in(self, actor: Actor) -> None:
        # Called with the lock held.
        self._phase = Phase.SIGNED_IN
        self.actor = actor
        self.signed_in.set()

    def _refused(self, refusal: SignInRefusedError) -> None:
        """Remember why; a final refusal ends the connection once its result is sent."""
        self._refusal = refusal.reason
        if refusal.final:
            self._end(refusal.tell or GENERIC_FAREWELL)

    def farewell(self) -> str | None:
        """The message to end the connection with, once, if it is to end now."""
        with self._lock:
            text, self._farewell = self._farewell, None
        return text

    # -- after sign-in --------------------------------------------------------------

    def check_channel_request(self, kind: str, _chanid: int) -> int:
        """Session channels only, after sign-in, for accounts the gateway lets see an
        inbox (admins and auditors are refused, and the refusal audited, by the core)."""
        if kind != "session" or self._phase is not Phase.SIGNED_IN or self.actor is None:
            return OPEN_PROHIBITED
        try:
            self.app.authz.require(self.actor, Permission.INBOX_READ, subject="sftp:session")
        except AuthorizationError:
            return OPEN_PROHIBITED
        except DatabaseError as exc:
            # Refused all the same; only the audit record of the refusal could not land.
            log.warning("could not audit a refused session of %s: %s", self.actor.name,
                        exc.diagnostics())
            return OPEN_PROHIBITED
        return OPEN_SUCCEEDED

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        """Only the ``sftp`` subsystem, only for accounts that may see an inbox."""
        if name != "sftp" or self.actor is None or not permits(self.actor,
                                                                Permission.INBOX_READ):
            return False
        # Before the subsystem's thread starts reading: uploads arrive without being
        # copied through paramiko's receive buffer.
        receive.install_if_fresh(channel)
        return bool(super().check_channel_subsystem_request(channel, name))

    # -- ending ---------------------------------------------------------------------

    def protocol_violation(self, reason: str) -> None:
        """The client broke the sign-in protocol: note why and hang up."""
        log.info("closing connection from %s: %s", self.source, reason)
        self._refusal = reason
        self._end(GENERIC_FAREWELL)

    def _end(self, text: str) -> None:
        self._phase = Phase.CLOSED
        self._farewell = text
        self.hangup.set()

    def finish(self, *, timed_out: bool) -> None:
        """Audit a connection that ended without signing in (no-op after success)."""
        if self.signed_in.is_set():
            return
        reason = "authentication timed out" if timed_out else self._refusal
        try:
            self.app.auth.abandon(self._attempt, reason=reason, username=self._claimed)
        except DatabaseError as exc:
            log.warning("could not audit an abandoned sign-in from %s: %s", self.source,
                        exc.diagnostics())
        except GatewayError:
            log.exception("could not audit an abandoned sign-in from %s", self.source)


class VerifyingAuthHandler(FencedAuthHandler):
    """paramiko's server-side authentication, told exactly when a signature verified.

    The gate hears of the first factor inside the very call that verified the signature
    over this session's id (see :class:`~sftp_server.paramiko_fence.FencedAuthHandler`)
    and decides what the public-key request gets: a "success" the gate did not record is
    refused, in case a later paramiko reaches it by another path; a failure the database
    caused ends the connection with a disconnect that says so.
    """

    def on_signature_verified(self, key: paramiko.PKey) -> None:
        self._gate.signature_verified(self.auth_username, key)

    def on_userauth_request(self) -> None:
        gate = self._gate
        gate.messenger = self
        gate.cancel_challenge()

    def filter_auth_result(self, method: str, result: int) -> int:
        if method == "publickey":
            result = self._gate.key_result(result)
        if result == AUTH_FAILED and self._gate.unavailable:
            # "Permission denied" would read as a wrong key or code: say why instead,
            # before the client gives up on its own (the transport is a BlindpostTransport).
            self.transport.disconnect_unavailable()
        return result

    def farewell(self) -> str | None:
        return self._gate.farewell()

    @property
    def _gate(self) -> LoginGate:
        gate = self.transport.server_object
        assert isinstance(gate, LoginGate)
        return gate
