"""Accounts: admins, auditors, staff and partner users, with their SSH keys and TOTP."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, selectinload

from gateway import passwords, totp
from gateway.actors import Actor
from gateway.audit import AuditTag
from gateway.authz import Permission
from gateway.db.models import Account, Role, SSHKey, TOTPSecret
from gateway.errors import ConflictError, NotFoundError, UsageError
from gateway.integrity import encrypt_totp
from gateway.partners import get_partner
from gateway.sshkeys import PublicKey

if TYPE_CHECKING:
    from gateway.app import App

USERNAME_PATTERN = re.compile(r"[a-z][a-z0-9._-]{0,63}")
# Roles that sign in to the console with a password (plus TOTP); the others use SSH keys.
PASSWORD_ROLES = (Role.ADMIN, Role.AUDITOR)


@dataclass(frozen=True)
class SSHKeyInfo:
    """An account's SSH public key."""

    key_type: str
    fingerprint: str
    comment: str
    created_at: datetime


@dataclass(frozen=True)
class AccountInfo:
    """An account as the services hand it out: no secrets, no password hash."""

    id: int
    username: str
    role: Role
    partner: str | None
    partner_id: int | None
    disabled: bool
    created_at: datetime
    ssh_keys: tuple[SSHKeyInfo, ...]
    totp_enrolled: bool


@dataclass(frozen=True)
class NewAccount:
    """A freshly created account and the secrets shown to its owner exactly once."""

    account: AccountInfo
    totp_uri: str
    one_time_password: str | None


def key_info(row: SSHKey) -> SSHKeyInfo:
    return SSHKeyInfo(row.key_type, row.fingerprint, row.comment, row.created_at)


def account_info(row: Account) -> AccountInfo:
    """The value of an account loaded by :func:`get_account` (keys and TOTP loaded)."""
    return AccountInfo(row.id, row.username, row.role,
                       row.partner.slug if row.partner else None, row.partner_id, row.disabled,
                       row.created_at, tuple(key_info(k) for k in row.ssh_keys),
                       row.totp is not None)


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


def _with_credentials(query: Select[Account]) -> Select[Account]:
    return query.options(selectinload(Account.ssh_keys), selectinload(Account.totp),
                         selectinload(Account.partner))


def get_account(session: Session, username: str, *, for_update: bool = False) -> Account:
    """Load an account with its keys and TOTP secret, or raise :class:`NotFoundError`."""
    query = _with_credentials(select(Account).where(Account.username == username))
    account = session.scalar(query.with_for_update(of=Account) if for_update else query)
    if account is None:
        raise NotFoundError(f"unknown account {username!r}")
    return account


class AccountService:
    """Create and manage accounts and their credentials."""

    def __init__(self, app: App) -> None:
        self._app = app

    def add(self, actor: Actor, *, username: str, role: Role, partner: str | None = None,
            ssh_keys: Sequence[PublicKey] = ()) -> NewAccount:
        """Create an account with a TOTP secret (and a one-time password for console roles)."""
        self._app.authz.require(actor, Permission.ACCOUNT_MANAGE, subject=f"account:{username}")
        check_username(username)
        if (role is Role.PARTNER) != (partner is not None):
            raise UsageError("--partner is required for role 'partner' and only for it")
        if len({key.fingerprint for key in ssh_keys}) != len(ssh_keys):
            raise UsageError("the same SSH key is given twice")
        now = self._app.clock()
        password = secrets.token_urlsafe(18) if role in PASSWORD_ROLES else None
        secret = totp.new_secret()
        with self._app.transaction(conflict=f"account {username!r} already exists") as session:
            partner_row = get_partner(session, partner) if partner else None
            account = Account(username=username, role=role,
                              partner_id=partner_row.id if partner_row else None,
                              password_hash=(passwords.hash_password(password)
                                             if password else None),
                              disabled=False, created_at=now)
            session.add(account)
            session.flush()
            session.add(TOTPSecret(account_id=account.id, last_step=None, created_at=now,
                                   secret=encrypt_totp(self._app.state_keys,
                                                       account_id=account.id, secret=secret)))
            self._app.audit.record(session, tag=AuditTag.ACCOUNT_CREATE, actor=actor,
                                   subject=f"account:{username}",
                                   details={"role": role.value, "partner": partner})
            for key in ssh_keys:
                self._add_key(session, actor=actor, account=account, key=key)
            info = account_info(get_account(session, username))
        return NewAccount(info, totp.provisioning_uri(secret, account=username), password)

    def all(self, actor: Actor) -> list[AccountInfo]:
        self._app.authz.require(actor, Permission.ACCOUNT_READ)
        with self._app.read() as session:
            rows = session.scalars(_with_credentials(select(Account).order_by(Account.username)))
            return [account_info(row) for row in rows]

    def get(self, actor: Actor, username: str) -> AccountInfo:
        self._app.authz.require(actor, Permission.ACCOUNT_READ, subject=f"account:{username}")
        with self._app.read() as session:
            return account_info(get_account(session, username))

    def disable(self, actor: Actor, *, username: str) -> AccountInfo:
        """Disable an account; it can no longer sign in anywhere."""
        self._app.authz.require(actor, Permission.ACCOUNT_MANAGE, subject=f"account:{username}")
        with self._app.transaction() as session:
            account = get_account(session, username, for_update=True)
            if account.disabled:
                raise ConflictError(f"account {username!r} is already disabled")
            account.disabled = True
            self._app.audit.record(session, tag=AuditTag.ACCOUNT_DISABLE, actor=actor,
                                   subject=f"account:{username}")
            return account_info(account)

    def enable(self, actor: Actor, *, username: str) -> AccountInfo:
        """Enable a disabled account again."""
        self._app.authz.require(actor, Permission.ACCOUNT_MANAGE, subject=f"account:{username}")
        with self._app.transaction() as session:
            account = get_account(session, username, for_update=True)
            if not account.disabled:
                raise ConflictError(f"account {username!r} is not disabled")
            account.disabled = False
            self._app.audit.record(session, tag=AuditTag.ACCOUNT_ENABLE, actor=actor,
                                   subject=f"account:{username}")
            return account_info(account)

    def add_key(self, actor: Actor, *, username: str, key: PublicKey) -> SSHKeyInfo:
        self._app.authz.require(actor, Permission.ACCOUNT_MANAGE, subject=f"account:{username}")
        conflict = f"account {username!r} already has key {key.fingerprint}"
        with self._app.transaction(conflict=conflict) as session:
            account = get_account(session, username)
            return key_info(self._add_key(session, actor=actor, account=account, key=key))

    def _add_key(self, session: Session, *, actor: Actor, account: Account,
                 key: PublicKey) -> SSHKey:
        # The unique (account, fingerprint) constraint refuses a key added twice.
        row = SSHKey(account_id=account.id, key_type=key.key_type, key_data=key.data_b64,
                     fingerprint=key.fingerprint, comment=key.comment,
                     created_at=self._app.clock())
        session.add(row)
        session.flush()
        self._app.audit.record(session, tag=AuditTag.ACCOUNT_KEY_ADD, actor=actor,
                               subject=f"account:{account.username}",
                               details={"key_type": key.key_type,
                                        "fingerprint": key.fingerprint})
        return row

    def reset_totp(self, actor: Actor, *, username: str) -> str:
        """Replace the account's TOTP secret; return the new provisioning URI."""
        self._app.authz.require(actor, Permission.ACCOUNT_MANAGE, subject=f"account:{username}")
        secret = totp.new_secret()
        with self._app.transaction() as session:
            account = get_account(session, username, for_update=True)
            stored = encrypt_totp(self._app.state_keys, account_id=account.id, secret=secret)
            if account.totp is None:
                session.add(TOTPSecret(account_id=account.id, secret=stored, last_step=None,
                                       created_at=self._app.clock()))
            else:
                account.totp.secret = stored
                account.totp.last_step = None
                account.totp.created_at = self._app.clock()
            self._app.audit.record(session, tag=AuditTag.ACCOUNT_TOTP_RESET, actor=actor,
                                   subject=f"account:{username}")
        return totp.provisioning_uri(secret, account=username)
