"""Accounts: admins, auditors, staff and partner users, with their SSH keys and TOTP."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from gateway import totp
from gateway.actors import Actor
from gateway.audit import AuditTag
from gateway.db.models import Account, Role, SSHKey, TOTPSecret
from gateway.errors import ConflictError, NotFoundError, UsageError
from gateway.partners import get_partner
from gateway.sshkeys import PublicKey

if TYPE_CHECKING:
    from gateway.app import App

USERNAME_PATTERN = re.compile(r"[a-z][a-z0-9._-]{0,63}")
# Roles that sign in to the console with a password (plus TOTP); the others use SSH keys.
PASSWORD_ROLES = (Role.ADMIN, Role.AUDITOR)
_hasher = PasswordHasher()


@dataclass(frozen=True)
class NewAccount:
    """A freshly created account and the secrets shown to its owner exactly once."""

    account: Account
    totp_uri: str
    one_time_password: str | None


def check_username(username: str) -> str:
    if not USERNAME_PATTERN.fullmatch(username):
        raise UsageError(f"invalid username {username!r}: start with a lowercase letter; "
                         "use lowercase letters, digits, '.', '_' or '-' (at most 64)")
    return username


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise UsageError(f"unknown role {value!r}; accepted: "
                         + ", ".join(r.value for r in Role)) from None


def get_account(session: Session, username: str) -> Account:
    """Load an account with its keys and TOTP secret, or raise :class:`NotFoundError`."""
    account = session.scalar(select(Account).where(Account.username == username).options(
        selectinload(Account.ssh_keys), selectinload(Account.totp),
        selectinload(Account.partner)))
    if account is None:
        raise NotFoundError(f"unknown account {username!r}")
    return account


class AccountService:
    """Create and manage accounts and their credentials."""

    def __init__(self, app: App) -> None:
        self._app = app

    def add(self, *, actor: Actor, username: str, role: Role, partner: str | None = None,
            ssh_keys: Sequence[PublicKey] = ()) -> NewAccount:
        """Create an account with a TOTP secret (and a one-time password for console roles)."""
        check_username(username)
        if (role is Role.PARTNER) != (partner is not None):
            raise UsageError("--partner is required for role 'partner' and only for it")
        now = self._app.clock()
        password = secrets.token_urlsafe(18) if role in PASSWORD_ROLES else None
        with self._app.transaction() as session:
            if session.scalar(select(Account.id).where(Account.username == username)):
                raise ConflictError(f"account {username!r} already exists")
            partner_row = get_partner(session, partner) if partner else None
            account = Account(username=username, role=role,
                              partner_id=partner_row.id if partner_row else None,
                              password_hash=_hasher.hash(password) if password else None,
                              disabled=False, created_at=now)
            session.add(account)
            session.flush()
            secret = totp.new_secret()
            session.add(TOTPSecret(account_id=account.id, secret=secret, last_step=None,
                                   created_at=now))
            self._app.audit.record(session, tag=AuditTag.ACCOUNT_CREATE, actor=actor.name,
                                   subject=f"account:{username}",
                                   details={"role": role.value, "partner": partner,
                                            **actor.audit_details()})
            for key in ssh_keys:
                self._add_key(session, actor=actor, account=account, key=key)
        return NewAccount(account, totp.provisioning_uri(secret, account=username), password)

    def all(self) -> Sequence[Account]:
        with self._app.transaction() as session:
            return session.scalars(select(Account).order_by(Account.username).options(
                selectinload(Account.ssh_keys), selectinload(Account.partner))).all()

    def get(self, username: str) -> Account:
        with self._app.transaction() as session:
            return get_account(session, username)

    def disable(self, *, actor: Actor, username: str) -> None:
        """Disable an account; it can no longer sign in anywhere."""
        with self._app.transaction() as session:
            account = get_account(session, username)
            if account.disabled:
                raise ConflictError(f"account {username!r} is already disabled")
            account.disabled = True
            self._app.audit.record(session, tag=AuditTag.ACCOUNT_DISABLE, actor=actor.name,
                                   subject=f"account:{username}", details=actor.audit_details())

    def add_key(self, *, actor: Actor, username: str, key: PublicKey) -> SSHKey:
        with self._app.transaction() as session:
            account = get_account(session, username)
            return self._add_key(session, actor=actor, account=account, key=key)

    def _add_key(self, session: Session, *, actor: Actor, account: Account,
                 key: PublicKey) -> SSHKey:
        if any(existing.fingerprint == key.fingerprint for existing in account.ssh_keys):
            raise ConflictError(f"account {account.username!r} already has key {key.fingerprint}")
        row = SSHKey(account_id=account.id, key_type=key.key_type, key_data=key.data_b64,
                     fingerprint=key.fingerprint, comment=key.comment,
                     created_at=self._app.clock())
        session.add(row)
        account.ssh_keys.append(row)
        self._app.audit.record(session, tag=AuditTag.ACCOUNT_KEY_ADD, actor=actor.name,
                               subject=f"account:{account.username}",
                               details={"key_type": key.key_type,
                                        "fingerprint": key.fingerprint,
                                        **actor.audit_details()})
        return row

    def reset_totp(self, *, actor: Actor, username: str) -> str:
        """Replace the account's TOTP secret; return the new provisioning URI."""
        secret = totp.new_secret()
        with self._app.transaction() as session:
            account = get_account(session, username)
            if account.totp is None:
                session.add(TOTPSecret(account_id=account.id, secret=secret, last_step=None,
                                       created_at=self._app.clock()))
            else:
                account.totp.secret = secret
                account.totp.created_at = self._app.clock()
            self._app.audit.record(session, tag=AuditTag.ACCOUNT_TOTP_RESET, actor=actor.name,
                                   subject=f"account:{username}", details=actor.audit_details())
        return totp.provisioning_uri(secret, account=username)
