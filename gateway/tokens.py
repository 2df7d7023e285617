"""API tokens for automation: created once, stored hashed, revocable, listed with last use.

A token acts with its role's permissions less those that take a person
(:func:`gateway.authz.permissions_of`): it never proposes, approves or revokes a recipient
key, never creates or extends authority, and never creates another token. An admin token
is itself authority: one admin proposes it and a second approves it
(:mod:`gateway.authority`), and its secret is shown to the approver. A refused token
counts toward the source address's lockout, like a wrong password.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway import throttle
from gateway.actors import Actor
from gateway.audit import AuditTag
from gateway.auth import INTEGRITY_FAILED, Failure, LoginAttempt
from gateway.authority import AuthorityChangeInfo, ChangeKind, Outcome
from gateway.authz import Permission
from gateway.db.models import ApiToken, AuthorityChange, Role
from gateway.errors import AuthenticationError, ConflictError, NotFoundError, UsageError
from gateway.throttle import Scope

if TYPE_CHECKING:
    from gateway.app import App

PREFIX = "bpt_"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
TOKEN_ROLES = (Role.ADMIN, Role.AUDITOR)
MAX_LIFETIME = timedelta(days=366)
# Last use is written at most this often, so a busy script does not write on every call.
LAST_USE_RESOLUTION = timedelta(minutes=1)
REFUSED = "invalid, expired or revoked API token"


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed: never its secret."""

    id: int
    name: str
    role: Role
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    state: str


@dataclass(frozen=True)
class NewToken:
    """A new token and its secret, shown exactly once."""

    info: TokenInfo
    token: str


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def _state(row: ApiToken, now: datetime) -> str:
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return "active"


def _info(row: ApiToken, now: datetime) -> TokenInfo:
    return TokenInfo(row.id, row.name, row.role, row.created_by, row.created_at, row.expires_at,
                     row.last_used_at, row.revoked_at, _state(row, now))


class TokenService:
    """Create, list, revoke and check API tokens."""

    def __init__(self, app: App) -> None:
        self._app = app

    def create(self, actor: Actor, *, name: str, role: Role,
               lifetime: timedelta | None = None) -> NewToken | AuthorityChangeInfo:
        """Create a token; the secret is in the result and nowhere else.

        An admin token is only proposed (the proposal is returned); a second admin's
        approval creates it and shows its secret to that approver.
        """
        if role is Role.ADMIN:
            self._app.authority.refuse_alone(actor, ChangeKind.TOKEN_CREATE,
                                             subject=f"token:{name}")
        self._app.authz.require(actor, Permission.TOKEN_MANAGE, subject=f"token:{name}")
        if not NAME_PATTERN.fullmatch(name):
            raise UsageError(f"invalid token name {name!r}: lowercase letters, digits, '.', "
                             "'_' or '-', at most 64")
        if role not in TOKEN_ROLES:
            raise UsageError("a token's role is admin or auditor")
        if lifetime is not None and not timedelta(0) < lifetime <= MAX_LIFETIME:
            raise UsageError(f"a token expires after 1 to {MAX_LIFETIME.days} days")
        conflict = f"a token named {name!r} already exists"
        if role is Role.ADMIN:
            with self._app.read() as session:
                if session.scalar(select(ApiToken.id).where(ApiToken.name == name)):
                    raise ConflictError(conflict)
            return self._app.authority.propose(
                actor, kind=ChangeKind.TOKEN_CREATE, target=name,
                params={"role": role.value,
                        "lifetime_seconds": int(lifetime.total_seconds()) if lifetime else None})
        with self._app.transaction(conflict=conflict) as session:
            secret, row = self._insert(session, actor, name=name, role=role, lifetime=lifetime)
            return NewToken(_info(row, self._app.clock()), secret)

    def _insert(self, session: Session, actor: Actor, *, name: str, role: Role,
                lifetime: timedelta | None,
                details: dict[str, object] | None = None) -> tuple[str, ApiToken]:
        secret = PREFIX + secrets.token_urlsafe(32)
        now = self._app.clock()
        row = ApiToken(name=name, role=role, token_hash=digest(secret),
                       created_by=actor.name, created_at=now,
                       expires_at=now + lifetime if lifetime else None)
        session.add(row)
        session.flush()
        self._app.audit.record(session, tag=AuditTag.TOKEN_CREATE, actor=actor,
                               subject=f"token:{name}",
                               details={"role": role.value, "expires_at":
                                        row.expires_at.isoformat() if row.expires_at else None,
                                        **(details or {})})
        return secret, row

    def apply_create(self, session: Session, actor: Actor, change: AuthorityChange,
                     params: dict[str, object]) -> Outcome:
        """Create a proposed admin token; its secret goes to the approver alone."""
        name = change.target
        if session.scalar(select(ApiToken.id).where(ApiToken.name == name)):
            raise ConflictError(f"a token named {name!r} already exists")
        seconds = params.get("lifetime_seconds")
        secret, _row = self._insert(
            session, actor, name=name, role=Role(str(params["role"])),
            lifetime=timedelta(seconds=seconds) if isinstance(seconds, int) else None,
            details={"authority_change": change.id, "proposed_by": change.proposer.username})
        return Outcome(token=secret)

    def all(self, actor: Actor) -> list[TokenInfo]:
        self._app.authz.require(actor, Permission.TOKEN_MANAGE)
        now = self._app.clock()
        with self._app.read() as session:
            return [_info(row, now) for row in session.scalars(select(ApiToken)
                                                               .order_by(ApiToken.name))]

    def revoke(self, actor: Actor, *, name: str) -> TokenInfo:
        """Revoke a token now; requests with it fail from the next one on."""
        self._app.authz.require(actor, Permission.TOKEN_MANAGE, subject=f"token:{name}")
        now = self._app.clock()
        with self._app.transaction() as session:
            row = session.scalar(select(ApiToken).where(ApiToken.name == name)
                                 .with_for_update())
            if row is None:
                raise NotFoundError(f"unknown token {name!r}")
            if row.revoked_at is not None:
                raise ConflictError(f"token {name!r} is already revoked")
            row.revoked_at = now
            self._app.audit.record(session, tag=AuditTag.TOKEN_REVOKE, actor=actor,
                                   subject=f"token:{name}")
            return _info(row, now)

    def authenticate(self, token: str, *, source: str, client: str | None = None) -> Actor:
        """The actor of a presented token, or raise (audited, counted toward the source)."""
        with self._app.transaction() as session:
            now = self._app.clock()
            row = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest(token)))
            if row is None:
                reason = "unknown token"
            elif (state := _state(row, now)) != "active":
                reason = f"{state} token"
            elif (forged := self._forged(session, row)) is not None:
                reason = forged
            else:
                self._touch(session, row, now)
                return Actor.token(name=row.name, role=row.role, source=source, client=client)
            claimed = f"token:{row.name}" if row is not None else None
            # A wrong token proves no one: it counts against the source address alone
            # (gateway.throttle). A token cannot be guessed, so a held-back address still
            # gets through with a valid one, and its failures meanwhile count no further.
            held = throttle.blocked_until(session, scope=Scope.SOURCE, key=source, now=now,
                                          logged=self._app.ledger)
            self._app.auth.record_failure(
                session, LoginAttempt(source=source, client=client),
                Failure(AuditTag.LOGIN_FAILURE, claimed, reason, "token", source, client,
                        counts=() if held else ((Scope.SOURCE, source),)), now=now)
        raise AuthenticationError(REFUSED)

    def _forged(self, session: Session, row: ApiToken) -> str | None:
        """Why a token row the gateway did not write grants nothing (recorded), or None."""
        return None if self._app.integrity.holds(session, row) else INTEGRITY_FAILED

    def _touch(self, session: Session, row: ApiToken, now: datetime) -> None:
        if row.last_used_at is not None and now - row.last_used_at < LAST_USE_RESOLUTION:
            return
        session.execute(update(ApiToken).where(ApiToken.id == row.id)
                        .values(last_used_at=now).execution_options(synchronize_session=False))
