"""Passkeys (WebAuthn) for the console: registration, and assertions bound to one purpose.

The ``webauthn`` library checks the ceremony (origin, relying party, challenge,
signature, signature counter). This module owns the rules around it: a challenge is
issued for one purpose (``sign-in``, ``register``, ``key approve 7``), lives in the
server-side session for five minutes and is used once; a credential belongs to exactly
one account; every registration and removal is audited.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import webauthn
from sqlalchemy import select
from sqlalchemy.orm import Session
from webauthn.helpers import bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)
from webauthn.registration.verify_registration_response import VerifiedRegistration

from gateway import console_sessions
from gateway.actors import Actor, printable
from gateway.audit import AuditTag
from gateway.auth import INTEGRITY_FAILED
from gateway.authz import Permission
from gateway.console_sessions import SessionInfo, Stage
from gateway.db.models import Account, ConsoleSession, Passkey, Role, TOTPSecret
from gateway.errors import AuthenticationError, NotFoundError, UsageError

if TYPE_CHECKING:
    from gateway.app import App

CHALLENGE_LIFETIME = timedelta(minutes=5)
RP_NAME = "Blindpost"
SIGN_IN = "sign-in"
REGISTER = "register"
MAX_NAME = 100


@dataclass(frozen=True)
class PasskeyInfo:
    """A registered passkey, without its key material."""

    id: int
    username: str
    name: str
    created_at: datetime
    last_used_at: datetime | None


def _info(row: Passkey, username: str) -> PasskeyInfo:
    return PasskeyInfo(row.id, username, row.name, row.created_at, row.last_used_at)


def issue_challenge(row: ConsoleSession, challenge: bytes, *, purpose: str,
                    now: datetime) -> None:
    """Remember ``challenge`` for ``purpose`` in the session (replacing any earlier one)."""
    row.challenge, row.challenge_purpose = bytes_to_base64url(challenge), purpose
    row.challenge_at = now


def take_challenge(row: ConsoleSession, *, purpose: str, now: datetime) -> bytes | None:
    """The session's challenge for ``purpose``, consumed; None if there is none, it was for
    another purpose, or it is older than :data:`CHALLENGE_LIFETIME`."""
    challenge, issued, meant = row.challenge, row.challenge_at, row.challenge_purpose
    row.challenge = row.challenge_purpose = row.challenge_at = None
    if challenge is None or issued is None or meant != purpose:
        return None
    if now - issued > CHALLENGE_LIFETIME:
        return None
    return webauthn.base64url_to_bytes(challenge)


def credential_id_of(credential: str) -> str:
    """The credential id a browser's JSON response names (or raise :class:`UsageError`)."""
    try:
        document = json.loads(credential)
    except ValueError:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("id"), str):
        raise UsageError("the passkey response is not a WebAuthn credential in JSON")
    return str(document["id"])


class PasskeyService:
    """Register, list, remove and check passkeys."""

    def __init__(self, app: App) -> None:
        self._app = app

    @property
    def origin(self) -> str:
        return self._app.settings.effective_console_origin

    @property
    def rp_id(self) -> str:
        return urlsplit(self.origin).hostname or "localhost"

    def registration_options(self, session_id: str) -> str:
        """Options (JSON) for ``navigator.credentials.create`` in this session."""
        with self._app.transaction() as session:
            now = self._app.clock()
            row, account = console_sessions.load(session, session_id, now=now,
                                                 integrity=self._app.integrity,
                                                 stages=(Stage.PASSKEY, Stage.FULL))
            existing = session.scalars(select(Passkey.credential_id).where(
                Passkey.account_id == account.id)).all()
            options = webauthn.generate_registration_options(
                rp_id=self.rp_id, rp_name=RP_NAME, user_name=account.username,
                user_id=account.id.to_bytes(8, "big"), user_display_name=account.username,
                exclude_credentials=[PublicKeyCredentialDescriptor(
                    id=webauthn.base64url_to_bytes(c)) for c in existing],
                authenticator_selection=AuthenticatorSelectionCriteria(
                    resident_key=ResidentKeyRequirement.DISCOURAGED,
                    user_verification=UserVerificationRequirement.PREFERRED))
            issue_challenge(row, options.challenge, purpose=REGISTER, now=now)
            return webauthn.options_to_json(options)

    def register(self, session_id: str, *, credential: str, name: str) -> PasskeyInfo:
        """Check a registration response and store the new passkey."""
        name = printable(name.strip(), limit=MAX_NAME) or "passkey"
        with self._app.transaction(conflict="this passkey is already registered") as session:
            now = self._app.clock()
            row, account = console_sessions.load(session, session_id, now=now,
                                                 integrity=self._app.integrity,
                                                 stages=(Stage.PASSKEY, Stage.FULL))
            challenge = take_challenge(row, purpose=REGISTER, now=now)
            verified = self._verify_registration(credential, challenge) if challenge else None
            if verified is None:
                failure = "the passkey registration did not verify; try again"
            else:
                key = Passkey(account_id=account.id,
                              credential_id=bytes_to_base64url(verified.credential_id),
                              public_key=bytes_to_base64url(verified.credential_public_key),
                              sign_count=verified.sign_count, name=name, created_at=now)
                session.add(key)
                session.flush()
                if row.stage == Stage.PASSKEY:
                    row.stage = Stage.FULL.value
                actor = console_sessions.info(row, account).actor
                self._app.audit.record(session, tag=AuditTag.ACCOUNT_PASSKEY_ADD, actor=actor,
                                       subject=f"account:{account.username}",
                                       details={"passkey": key.id, "name": name})
                return _info(key, account.username)
        raise AuthenticationError(failure)

    def _verify_registration(self, credential: str,
                             challenge: bytes) -> VerifiedRegistration | None:
        try:
            return webauthn.verify_registration_response(
                credential=credential, expected_challenge=challenge,
                expected_rp_id=self.rp_id, expected_origin=self.origin)
        except (WebAuthnException, ValueError, KeyError, TypeError):
            return None

    def assertion_options(self, session_id: str, *, purpose: str,
                          stages: tuple[Stage, ...] = (Stage.FULL,)) -> str:
        """Options (JSON) for ``navigator.credentials.get``, bound to ``purpose``."""
        with self._app.transaction() as session:
            now = self._app.clock()
            row, account = console_sessions.load(session, session_id, now=now,
                                                 integrity=self._app.integrity,
                                                 stages=stages)
            ids = session.scalars(select(Passkey.credential_id).where(
                Passkey.account_id == account.id)).all()
            if not ids:
                raise NotFoundError(f"{account.username!r} has no passkey registered")
            options = webauthn.generate_authentication_options(
                rp_id=self.rp_id, allow_credentials=[PublicKeyCredentialDescriptor(
                    id=webauthn.base64url_to_bytes(c)) for c in ids],
                user_verification=UserVerificationRequirement.PREFERRED)
            issue_challenge(row, options.challenge, purpose=purpose, now=now)
            return webauthn.options_to_json(options)

    def check_assertion(self, session: Session, row: ConsoleSession, account: Account, *,
                        credential: str, purpose: str, now: datetime) -> str | None:
        """Check an assertion against the session's challenge for ``purpose``; on success
        advance the passkey's counter. Return why it is refused, or None."""
        challenge = take_challenge(row, purpose=purpose, now=now)
        if challenge is None:
            return f"no passkey challenge for {purpose!r} in this session, or it expired"
        try:
            credential_id = credential_id_of(credential)
        except UsageError as exc:
            return exc.diagnostics()
        key = session.scalar(select(Passkey).where(
            Passkey.account_id == account.id, Passkey.credential_id == credential_id)
            .with_for_update())
        if key is None:
            return "unknown passkey"
        if not self._app.integrity.holds(session, key):
            return INTEGRITY_FAILED
        try:
            verified = webauthn.verify_authentication_response(
                credential=credential, expected_challenge=challenge, expected_rp_id=self.rp_id,
                expected_origin=self.origin,
                credential_public_key=webauthn.base64url_to_bytes(key.public_key),
                credential_current_sign_count=key.sign_count)
        except (WebAuthnException, ValueError, KeyError, TypeError):
            return "passkey assertion did not verify"
        key.sign_count, key.last_used_at = verified.new_sign_count, now
        return None

    def has_passkey(self, session: Session, account_id: int) -> bool:
        return session.scalar(select(Passkey.id).where(Passkey.account_id == account_id)
                              .limit(1)) is not None

    @staticmethod
    def _last_factor(session: Session, owner: Account) -> bool:
        """Whether removing one passkey leaves admin ``owner`` with no second factor."""
        if owner.role is not Role.ADMIN:
            return False
        code = session.scalar(select(TOTPSecret.account_id).where(
            TOTPSecret.account_id == owner.id, TOTPSecret.enrol_until.is_(None)))
        keys = session.scalars(select(Passkey.id).where(Passkey.account_id == owner.id)).all()
        return code is None and len(keys) <= 1

    def mine(self, current: SessionInfo) -> list[PasskeyInfo]:
        """The passkeys of the session's own account."""
        with self._app.read() as session:
            rows = session.scalars(select(Passkey).where(
                Passkey.account_id == current.account_id).order_by(Passkey.id))
            return [_info(row, current.username) for row in rows]

    def remove(self, actor: Actor, *, passkey_id: int, own_account: int | None = None) -> None:
        """Remove a passkey: one's own (``own_account``), or any with account:manage."""
        if own_account is None:
            self._app.authz.require(actor, Permission.ACCOUNT_MANAGE,
                                    subject=f"passkey:{passkey_id}")
        with self._app.transaction() as session:
            key = session.get(Passkey, passkey_id)
            if key is None or (own_account is not None and key.account_id != own_account):
                raise NotFoundError(f"unknown passkey {passkey_id}")
            owner = session.get(Account, key.account_id)
            if owner is not None and self._last_factor(session, owner):
                self._app.authority.check_not_starved(
                    session, owner, action=f"removing {owner.username!r}'s last second factor")
            session.delete(key)
            self._app.audit.record(session, tag=AuditTag.ACCOUNT_PASSKEY_REMOVE, actor=actor,
                                   subject=f"account:{owner.username if owner else '-'}",
                                   details={"passkey": passkey_id, "name": key.name})

    def remove_all(self, actor: Actor, *, username: str) -> int:
        """Remove every passkey of ``username`` (account:manage; each removal audited):
        the recovery of a partner user who lost theirs, whose next portal sign-in then
        takes a fresh enrolment code read over SFTP. Return how many were removed."""
        self._app.authz.require(actor, Permission.ACCOUNT_MANAGE, subject=f"account:{username}")
        with self._app.read() as session:
            ids = session.scalars(select(Passkey.id).join(Account, Account.id ==
                                                          Passkey.account_id)
                                  .where(Account.username == username)).all()
        for passkey_id in ids:
            self.remove(actor, passkey_id=passkey_id)
        return len(ids)
