"""Accounts: admins, auditors, staff and partner users, with their SSH keys and TOTP.

The lifecycle of an account — create, disable, enable, keys added and removed, its
second factor reset or enrolled by the holder, its allowed networks — with every change
audited. Machine accounts' grants (two admins) live in :mod:`gateway.machines`; what
creates or extends authority (admin and auditor accounts, their credentials and keys) is
proposed here and applied on a second admin's approval (:mod:`gateway.authority`). The
values handed out are in :mod:`gateway.account_values`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, selectinload

from gateway import networks, passwords, throttle, totp
from gateway.account_values import (
    AccountInfo,
    Enrolment,
    NewAccount,
    SSHKeyInfo,
    account_info,
    key_info,
)
from gateway.actors import Actor
from gateway.audit import AuditTag
from gateway.authority import AuthorityChangeInfo, ChangeKind, Outcome
from gateway.authz import Permission
from gateway.console_sessions import end_all
from gateway.db.models import (
    Account,
    AuthorityChange,
    ConsoleCredential,
    ConsoleSession,
    Role,
    SSHKey,
    TOTPSecret,
)
from gateway.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PolicyError,
    UsageError,
)
from gateway.integrity import encrypt_totp
from gateway.partners import get_partner
from gateway.sshkeys import PublicKey, parse_public_key

if TYPE_CHECKING:
    from gateway.app import App

USERNAME_PATTERN = re.compile(r"[a-z][a-z0-9._-]{0,63}")
# Roles that sign in to the console with a password (plus TOTP); the others use SSH keys.
PASSWORD_ROLES = (Role.ADMIN, Role.AUDITOR)
SFTP_ROLES = (Role.STAFF, Role.PARTNER)


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


def parse_allow_from(text: str | None) -> str | None:
    """``--allow-from`` as stored: canonical CIDRs, or None for ``any``."""
    if text is None or text.strip().lower() in networks.ANYWHERE:
        return None
    return networks.render(networks.parse(text))


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


def _lock_of(session: Session, app: App, username: str) -> throttle.Block:
    """The failed codes that still count against ``username``, and its lock if any."""
    now, account = app.clock(), throttle.Scope.ACCOUNT
    count = throttle.failures(session, scope=account, key=username, now=now,
                              policy=throttle.Policy.from_settings(app.settings))
    until = throttle.blocked_until(session, scope=account, key=username, now=now,
                                   logged=app.ledger)
    return throttle.Block(account, username, count, until)


@dataclass(frozen=True)
class _Credentials:
    """What a new account starts with besides its keys."""

    password: str | None
    secret: str | None
    enrol_until: datetime | None


class AccountService:
    """Create and manage accounts and their credentials."""

    def __init__(self, app: App) -> None:
        self._app = app

    # -- creating -------------------------------------------------------------------

    def add(self, actor: Actor, *, username: str, role: Role, partner: str | None = None,
            ssh_keys: Sequence[PublicKey] = (), enrol_by_ssh: bool = False,
            allow_from: str | None = None, machine: bool = False,
            allow_shared_key: bool = False) -> NewAccount | AuthorityChangeInfo:
        """Create an account with its second factor (and a one-time password for console
        roles).

        ``enrol_by_ssh``: the secret is not shown now; the holder enrols it at their first
        SFTP sign-in within ``enrolment_hours``. ``machine``: a staff account that will
        sign in with its key alone, from ``allow_from`` only, once a second admin approves
        (the acting admin proposes it; see :class:`gateway.machines.MachineService`).

        An admin or auditor account is only proposed (the proposal is returned): a second
        admin's approval creates it (:mod:`gateway.authority`). The one exception is the
        bootstrap: the local operator of an installation with fewer than two active admins
        creates it at once.
        """
        self._app.authz.require(actor, Permission.ACCOUNT_MANAGE, subject=f"account:{username}")
        bootstrap = role in PASSWORD_ROLES and self._app.authority.bootstrapping(actor)
        if role in PASSWORD_ROLES and not bootstrap:
            return self._propose_create(actor, username=username, role=role, partner=partner,
                                        ssh_keys=ssh_keys, allow_from=allow_from,
                                        allow_shared_key=allow_shared_key,
                                        enrol_by_ssh=enrol_by_ssh, machine=machine)
        if machine:
            self._app.authz.require(actor, Permission.MACHINE_PROPOSE,
                                    subject=f"account:{username}")
        self._check_new(username=username, role=role, partner=partner, ssh_keys=ssh_keys,
                        enrol_by_ssh=enrol_by_ssh, allow_from=allow_from, machine=machine)
        now = self._app.clock()
        credentials = self._credentials(role, enrol_by_ssh=enrol_by_ssh, machine=machine,
                                        now=now)
        grant = None
        with self._app.transaction(conflict=f"account {username!r} already exists") as session:
            account = self._insert(session, actor, username=username, role=role,
                                   partner=partner, credentials=credentials,
                                   allow_from=None if machine else allow_from,
                                   details={"machine": machine, "enrol_by_ssh": enrol_by_ssh,
                                            **({"bootstrap": True} if bootstrap else {})})
            for key in ssh_keys:
                self._add_key(session, actor=actor, account=account, key=key,
                              allow_shared=allow_shared_key)
            if machine:
                assert allow_from is not None
                grant = self._app.machines.propose_in(session, actor, account=account,
                                                      allow_from=allow_from)
            info = account_info(get_account(session, username), now=now)
        uri = (totp.provisioning_uri(credentials.secret, account=username)
               if credentials.secret and credentials.enrol_until is None else None)
        return NewAccount(info, uri, credentials.password, grant)

    def _propose_create(self, actor: Actor, *, username: str, role: Role, partner: str | None,
                        ssh_keys: Sequence[PublicKey], allow_from: str | None,
                        allow_shared_key: bool, enrol_by_ssh: bool,
                        machine: bool) -> AuthorityChangeInfo:
        self._check_new(username=username, role=role, partner=partner, ssh_keys=ssh_keys,
                        enrol_by_ssh=enrol_by_ssh, allow_from=allow_from, machine=machine)
        self._app.authority.refuse_alone(actor, ChangeKind.ACCOUNT_CREATE,
                                         subject=f"account:{username}")
        with self._app.read() as session:
            if session.scalar(select(Account.id).where(Account.username == username)):
                raise ConflictError(f"account {username!r} already exists")
        return self._app.authority.propose(
            actor, kind=ChangeKind.ACCOUNT_CREATE, target=username,
            params={"role": role.value, "allow_from": allow_from,
                    "ssh_keys": [key.openssh() for key in ssh_keys],
                    "allow_shared_key": allow_shared_key},
            shown={"role": role.value, "allow_from": allow_from,
                   "ssh_keys": [key.fingerprint for key in ssh_keys]})

    @staticmethod
    def _check_new(*, username: str, role: Role, partner: str | None,
                   ssh_keys: Sequence[PublicKey], enrol_by_ssh: bool, allow_from: str | None,
                   machine: bool) -> None:
        check_username(username)
        if (role is Role.PARTNER) != (partner is not None):
            raise UsageError("--partner is required for role 'partner' and only for it")
        if len({key.fingerprint for key in ssh_keys}) != len(ssh_keys):
            raise UsageError("the same SSH key is given twice")
        if enrol_by_ssh and role not in SFTP_ROLES:
            raise UsageError("--enrol-by-ssh is for staff and partner accounts (they sign in "
                             "over SFTP); console accounts are shown their secret")
        if machine:
            if role is not Role.STAFF:
                raise UsageError("--machine is for staff accounts only; partners always sign "
                                 "in with a key and a code")
            if enrol_by_ssh:
                raise UsageError("a machine account has no second factor to enrol")
            if allow_from is None:
                raise UsageError("a machine account needs --allow-from: the networks its "
                                 "jobs run in")
            if not ssh_keys:
                raise UsageError("a machine account needs --ssh-key: it signs in with it alone")

    def _credentials(self, role: Role, *, enrol_by_ssh: bool, machine: bool,
                     now: datetime) -> _Credentials:
        password = secrets.token_urlsafe(18) if role in PASSWORD_ROLES else None
        secret = None if machine else totp.new_secret()
        until = now + timedelta(hours=self._app.settings.enrolment_hours) if enrol_by_ssh \
            else None
        return _Credentials(password, secret, until)

    def _insert(self, session: Session, actor: Actor, *, username: str, role: Role,
                partner: str | None, credentials: _Credentials, allow_from: str | None,
                details: dict[str, object]) -> Account:
        now = self._app.clock()
        partner_row = get_partner(session, partner) if partner else None
        password = credentials.password
        account = Account(username=username, role=role,
                          partner_id=partner_row.id if partner_row else None,
                          password_hash=passwords.hash_password(password) if password else None,
                          disabled=False, created_at=now, machine=False,
                          allow_from=allow_from)
        session.add(account)
        session.flush()
        if credentials.secret is not None:
            session.add(TOTPSecret(account_id=account.id, last_step=None, created_at=now,
                                   enrol_until=credentials.enrol_until,
                                   secret=encrypt_totp(self._app.state_keys,
                                                       account_id=account.id,
                                                       secret=credentials.secret)))
        self._app.audit.record(session, tag=AuditTag.ACCOUNT_CREATE, actor=actor,
                               subject=f"account:{username}",
                               details={"role": role.value, "partner": partner,
                                        "allow_from": allow_from,
                                        "totp": credentials.secret is not None, **details})
        return account

    # -- reading --------------------------------------------------------------------

    def all(self, actor: Actor) -> list[AccountInfo]:
        self._app.authz.require(actor, Permission.ACCOUNT_READ)
        with self._app.read() as session:
            now = self._app.clock()
            locks = {block.key: block for block in throttle.blocks(
                session, scope=throttle.Scope.ACCOUNT, now=now)}
            rows = session.scalars(_with_credentials(select(Account).order_by(Account.username)))
            return [account_info(row, now=now, lock=locks.get(row.username)) for row in rows]

    def get(self, actor: Actor, username: str) -> AccountInfo:
        self._app.authz.require(actor, Permission.ACCOUNT_READ, subject=f"account:{username}")
        with self._app.read() as session:
            row = get_account(session, username)
            return account_info(row, now=self._app.clock(),
                                lock=_lock_of(session, self._app, username))

    # -- changing -------------------------------------------------------------------

    def disable(self, actor: Actor, *, username: str) -> AccountInfo:
        """Disable an account; it can no longer sign in anywhere.

        Nobody disables their own account, and an admin is not disabled when that would
        leave too few admins to approve anything (:mod:`gateway.authority`).
        """
        return self._set_disabled(actor, username=username, disabled=True)

    def enable(self, actor: Actor, *, username: str) -> AccountInfo | AuthorityChangeInfo:
        """Enable a disabled account again; an admin or auditor account only once a second
        admin approves (the proposal is returned)."""
        self._app.authz.require(actor, Permission.ACCOUNT_MANAGE, subject=f"account:{username}")
        if self._console_role(username):
            subject = f"account:{username}"
            self._app.authority.refuse_alone(actor, ChangeKind.ACCOUNT_ENABLE, subject=subject)
            with self._app.read() as session:
                if not get_account(session, username).disabled:
                    raise ConflictError(f"account {username!r} is not disabled")
            return self._app.authority.propose(actor, kind=ChangeKind.ACCOUNT_ENABLE,
                                               target=username, params={})
        return self._set_disabled(actor, username=username, disabled=False)

    def _console_role(self, username: str) -> bool:
        """Whether ``username`` is an admin or auditor account (raise if unknown)."""
        with self._app.read() as session:
            return get_account(session, username).role in PASSWORD_ROLES

    def _set_disabled(self, actor: Actor, *, username: str, disabled: bool) -> AccountInfo:
        self._app.authz.require(actor, Permission.ACCOUNT_MANAGE, subject=f"account:{username}")
        state = "is already disabled" if disabled else "is not disabled"
        with self._app.transaction() as session:
            account = get_account(session, username, for_update=True)
            if account.disabled == disabled:
                raise ConflictError(f"account {username!r} {state}")
            if disabled:
                self._check_disable(session, actor, account)
            elif account.role in PASSWORD_ROLES:
                raise ConflictError(f"account {username!r} changed meanwhile; try again")
            account.disabled = disabled
            self._app.audit.record(session, tag=AuditTag.ACCOUNT_DISABLE if disabled
                                   else AuditTag.ACCOUNT_ENABLE, actor=actor,
                                   subject=f"account:{username}")
            return account_info(account, now=self._app.clock())

    def _check_disable(self, session: Session, actor: Actor, account: Account) -> None:
        if actor.account_id == account.id:
            raise PolicyError("nobody disables their own account: another admin does")
        if account.role is Role.ADMIN:
            self._app.authority.check_not_starved(session, account,
                                                  action=f"disabling {account.username!r}")

    def add_key(self, actor: Actor, *, username: str, key: PublicKey,
                allow_shared: bool = False) -> SSHKeyInfo | AuthorityChangeInfo:
        """Add an SSH key; to an admin or auditor account only once a second admin
        approves (the proposal is returned)."""
        self._app.authz.require(actor, Permission.ACCOUNT_MANAGE, subject=f"account:{username}")
        if self._console_role(username):
            self._app.authority.refuse_alone(actor, ChangeKind.SSH_KEY_ADD,
                                             subject=f"account:{username}")
            with self._app.read() as session:
                if any(k.fingerprint == key.fingerprint
                       for k in get_account(session, username).ssh_keys):
                    raise ConflictError(f"account {username!r} already has key "
                                        f"{key.fingerprint}")
            return self._app.authority.propose(
                actor, kind=ChangeKind.SSH_KEY_ADD, target=username,
                params={"key": key.openssh(), "fingerprint": key.fingerprint,
                        "allow_shared": allow_shared},
                shown={"fingerprint": key.fingerprint, "key_type": key.key_type,
                       "allow_shared": allow_shared})
        conflict = f"account {username!r} already has key {key.fingerprint}"
        with self._app.transaction(conflict=conflict) as session:
            account = get_account(session, username)
            return key_info(self._add_key(session, actor=actor, account=account, key=key,
                                          allow_shared=allow_shared))

    def _add_key(self, session: Session, *, actor: Actor, account: Account,
                 key: PublicKey, allow_shared: bool) -> SSHKey:
        # Under the audit log's sequencer lock, so two accounts cannot both take the same
        # key at once past the check below (the unique (account, fingerprint) constraint
        # refuses a key added twice to one account).
        self._app.audit.lock(session)
        holders = sorted(session.scalars(select(Account.username).join(SSHKey).where(
            SSHKey.key_data == key.data_b64, Account.id != account.id)))
        if holders and not allow_shared:
            raise ConflictError(f"key {key.fingerprint} is already registered to "
                                f"{', '.join(holders)}; whoever holds it could sign in as "
                                "each of them. Give the account its own key, or add it with "
                                "--allow-shared-key (audited)")
        row = SSHKey(account_id=account.id, key_type=key.key_type, key_data=key.data_b64,
                     fingerprint=key.fingerprint, comment=key.comment,
                     created_at=self._app.clock(), shared=allow_shared)
        session.add(row)
        session.flush()
        details: dict[str, object] = {"key_type": key.key_type, "fingerprint": key.fingerprint}
        if allow_shared:
            details.update(allow_shared_key=True, shared_with=holders)
        self._app.audit.record(session, tag=AuditTag.ACCOUNT_KEY_ADD, actor=actor,
                               subject=f"account:{account.username}", details=details)
        return row

    def remove_key(self, actor: Actor, *, username: str, fingerprint: str) -> SSHKeyInfo:
        """Remove one SSH key (by its ``SHA256:`` fingerprint) from an account."""
        self._app.authz.require(actor, Permission.ACCOUNT_MANAGE, subject=f"account:{username}")
        with self._app.transaction() as session:
            account = get_account(session, username, for_update=True)
            key = next((k for k in account.ssh_keys if k.fingerprint == fingerprint), None)
            if key is None:
                known = ", ".join(k.fingerprint for k in account.ssh_keys) or "none"
                raise NotFoundError(f"account {username!r} has no key {fingerprint} "
                                    f"(its keys: {known})")
            if account.machine and len(account.ssh_keys) == 1:
                raise PolicyError(f"{fingerprint} is the only key of machine account "
                                  f"{username!r}; add its replacement first")
            info = key_info(key)
            session.delete(key)
            self._app.audit.record(session, tag=AuditTag.ACCOUNT_KEY_REMOVE, actor=actor,
                                   subject=f"account:{username}",
                                   details={"key_type": key.key_type,
                                            "fingerprint": key.fingerprint})
            return info

    def reset_totp(self, actor: Actor, *, username: str, enrol_by_ssh: bool = False
                   ) -> Enrolment | AuthorityChangeInfo:
        """Replace the account's TOTP secret: shown now, or enrolled by the holder over SSH.

        An admin's or auditor's second factor is only proposed to be reset (the proposal
        is returned): the approval gives the approver a one-time password, and the holder
        enrols a new factor at their next console sign-in.
        """
        self._app.authz.require(actor, Permission.ACCOUNT_MANAGE, subject=f"account:{username}")
        if self._console_role(username):
            self._app.authority.refuse_alone(actor, ChangeKind.CONSOLE_RESET,
                                             subject=f"account:{username}")
            if enrol_by_ssh:
                raise UsageError("--enrol-by-ssh is for staff and partner accounts (they sign "
                                 "in over SFTP); console accounts enrol at the console")
            return self._app.authority.propose(actor, kind=ChangeKind.CONSOLE_RESET,
                                               target=username, params={})
        secret, now = totp.new_secret(), self._app.clock()
        until = now + timedelta(hours=self._app.settings.enrolment_hours) if enrol_by_ssh \
            else None
        with self._app.transaction() as session:
            account = get_account(session, username, for_update=True)
            self._check_resettable(account, enrol_by_ssh=enrol_by_ssh)
            stored = encrypt_totp(self._app.state_keys, account_id=account.id, secret=secret)
            if account.totp is None:
                session.add(TOTPSecret(account_id=account.id, secret=stored, last_step=None,
                                       created_at=now, enrol_until=until))
            else:
                account.totp.secret = stored
                account.totp.last_step = None
                account.totp.created_at = now
                account.totp.enrol_until = until
            self._app.audit.record(session, tag=AuditTag.ACCOUNT_TOTP_RESET, actor=actor,
                                   subject=f"account:{username}",
                                   details={"enrol_by_ssh": enrol_by_ssh})
        uri = None if enrol_by_ssh else totp.provisioning_uri(secret, account=username)
        return Enrolment(username, uri, until)

    @staticmethod
    def _check_resettable(account: Account, *, enrol_by_ssh: bool) -> None:
        if account.machine:
            raise PolicyError(f"{account.username!r} is a machine account: it signs in with "
                              "its key alone and has no second factor")
        if enrol_by_ssh and account.role not in SFTP_ROLES:
            raise UsageError("--enrol-by-ssh is for staff and partner accounts (they sign in "
                             "over SFTP); console accounts are shown their secret")

    # -- passwords --------------------------------------------------------------------

    def change_password(self, proven: Actor, *, current_password: str, new_password: str,
                        keep_session: str | None = None) -> None:
        """Change the proven actor's own console password.

        ``proven`` is the holder freshly proven by a one-time code or passkey (the console's
        step-up, or ``blindpost user password`` through :meth:`AuthService.prove`), so a
        guess at the current password costs a fresh code: the code's time step is used up
        whether the password is right or not. Every console session of the account but
        ``keep_session`` (the one changing it) ends. Audited, the refusal too.
        """
        if proven.account_id is None:
            raise PolicyError("only a console account changes its own password")
        with self._app.transaction() as session:
            account = session.get(Account, proven.account_id, with_for_update=True)
            if account is None or account.role not in PASSWORD_ROLES:
                raise PolicyError("only admin and auditor accounts have a console password")
            self._app.integrity.verify(account)
            if not passwords.verify(account.password_hash, current_password):
                self._app.audit.record(session, tag=AuditTag.ACCOUNT_PASSWORD_FAILURE,
                                       actor=proven, subject=f"account:{account.username}",
                                       details={"reason": "wrong current password"})
                refused = True
            else:
                refused = False
                passwords.check_new(new_password, username=account.username,
                                    current=account.password_hash)
                account.password_hash = passwords.hash_password(new_password)
                credential = session.get(ConsoleCredential, account.id)
                if credential is not None:
                    credential.password_changed_at = self._app.clock()
                ended = self._end_other_sessions(session, account.id,
                                                 keep=keep_session)
                self._app.audit.record(session, tag=AuditTag.ACCOUNT_PASSWORD_CHANGE,
                                       actor=proven, subject=f"account:{account.username}",
                                       details={"sessions_ended": ended})
        if refused:
            # Raised after the commit, so the refusal stays in the log.
            raise AuthenticationError("the current password is wrong; the one-time code "
                                      "you gave is used up, so wait for the next one")

    @staticmethod
    def _end_other_sessions(session: Session, account_id: int, *, keep: str | None) -> int:
        rows = [row for row in session.scalars(select(ConsoleSession).where(
            ConsoleSession.account_id == account_id)) if row.id != keep]
        for row in rows:
            session.delete(row)
        return len(rows)

    def reset_password(self, actor: Actor, *, username: str) -> AuthorityChangeInfo:
        """Propose resetting an admin's or auditor's password; a second admin's approval
        gives that approver a one-time password, and the holder chooses a new password at
        their next console sign-in with their own, unchanged second factor."""
        self._app.authz.require(actor, Permission.ACCOUNT_MANAGE, subject=f"account:{username}")
        if not self._console_role(username):
            raise UsageError(f"account {username!r} has no console password: only admin "
                             "and auditor accounts sign in with one")
        self._app.authority.refuse_alone(actor, ChangeKind.PASSWORD_RESET,
                                         subject=f"account:{username}")
        return self._app.authority.propose(actor, kind=ChangeKind.PASSWORD_RESET,
                                           target=username, params={})

    def apply_password_reset(self, session: Session, actor: Actor, change: AuthorityChange,
                             _params: dict[str, object]) -> Outcome:
        """A one-time password for the approver; the console sign-in with it asks the
        holder for a new password and their current code (the factor is kept)."""
        account = self._console_account(session, change.target)
        password = secrets.token_urlsafe(18)
        account.password_hash = passwords.hash_password(password)
        # No console credential: the next sign-in is a first sign-in, which replaces the
        # one-time password (console_auth.enrol).
        credential = session.get(ConsoleCredential, account.id)
        if credential is not None:
            session.delete(credential)
        ended = end_all(session, account.id)
        self._app.audit.record(session, tag=AuditTag.ACCOUNT_PASSWORD_RESET, actor=actor,
                               subject=f"account:{account.username}",
                               details={"sessions_ended": ended, **_approval(change)})
        return Outcome(one_time_password=password)

    # -- authority changes, applied by gateway.authority on approval --------------------

    def apply_create(self, session: Session, actor: Actor, change: AuthorityChange,
                     params: dict[str, object]) -> Outcome:
        """Create a proposed admin or auditor account: a one-time password for the
        approver, and no second factor yet (the holder enrols it at the console)."""
        username = change.target
        if session.scalar(select(Account.id).where(Account.username == username)):
            raise ConflictError(f"account {username!r} already exists")
        password = secrets.token_urlsafe(18)
        allow_from = params.get("allow_from")
        account = self._insert(session, actor, username=username, role=Role(str(params["role"])),
                               partner=None, credentials=_Credentials(password, None, None),
                               allow_from=allow_from if isinstance(allow_from, str) else None,
                               details={"machine": False, "enrol_by_ssh": False,
                                        **_approval(change)})
        lines = params.get("ssh_keys")
        for line in lines if isinstance(lines, list) else []:
            self._add_key(session, actor=actor, account=account, key=parse_public_key(line),
                          allow_shared=params.get("allow_shared_key") is True)
        return Outcome(one_time_password=password)

    def apply_console_reset(self, session: Session, actor: Actor, change: AuthorityChange,
                            _params: dict[str, object]) -> Outcome:
        """Reset a console account's password and second factor: a one-time password for
        the approver; the holder enrols a new code at their next sign-in."""
        account = self._console_account(session, change.target)
        if not self._app.passkeys.has_passkey(session, account.id):
            self._app.authority.check_not_starved(
                session, account, action=f"resetting {account.username!r}'s second factor")
        password = secrets.token_urlsafe(18)
        account.password_hash = passwords.hash_password(password)
        if account.totp is not None:
            session.delete(account.totp)
        credential = session.get(ConsoleCredential, account.id)
        if credential is not None:
            session.delete(credential)
        ended = end_all(session, account.id)
        self._app.audit.record(session, tag=AuditTag.ACCOUNT_TOTP_RESET, actor=actor,
                               subject=f"account:{account.username}",
                               details={"enrol_by_ssh": False, "totp": False,
                                        "enrol": "console", "sessions_ended": ended,
                                        **_approval(change)})
        return Outcome(one_time_password=password)

    def apply_key(self, session: Session, actor: Actor, change: AuthorityChange,
                  params: dict[str, object]) -> Outcome:
        """Add a proposed SSH key to a console account."""
        account = self._console_account(session, change.target)
        key = parse_public_key(str(params["key"]))
        if any(k.fingerprint == key.fingerprint for k in account.ssh_keys):
            raise ConflictError(f"account {account.username!r} already has key "
                                f"{key.fingerprint}")
        self._add_key(session, actor=actor, account=account, key=key,
                      allow_shared=params.get("allow_shared") is True)
        return Outcome(extra={"fingerprint": key.fingerprint})

    def apply_enable(self, session: Session, actor: Actor, change: AuthorityChange,
                     _params: dict[str, object]) -> Outcome:
        """Enable a disabled console account."""
        account = self._console_account(session, change.target)
        if not account.disabled:
            raise ConflictError(f"account {account.username!r} is not disabled")
        account.disabled = False
        self._app.audit.record(session, tag=AuditTag.ACCOUNT_ENABLE, actor=actor,
                               subject=f"account:{account.username}",
                               details=_approval(change))
        return Outcome()

    def _console_account(self, session: Session, username: str) -> Account:
        account = get_account(session, username, for_update=True)
        # Never change credentials on a row the gateway did not write.
        self._app.integrity.verify(account)
        if account.role not in PASSWORD_ROLES:
            raise ConflictError(f"account {username!r} is no longer an admin or auditor")
        return account

    def set_allow_from(self, actor: Actor, *, username: str, allow_from: str | None
                       ) -> AccountInfo | int:
        """Limit (or free, with None) the networks ``username`` may sign in from.

        A machine account's networks may only narrow here; widening them is proposed by
        the acting admin and applied once another approves: the proposal's id is returned.
        """
        self._app.authz.require(actor, Permission.ACCOUNT_MANAGE, subject=f"account:{username}")
        with self._app.read() as session:
            widening = _widens_machine(get_account(session, username), allow_from)
        if widening:
            if allow_from is None:
                raise PolicyError("a machine account signs in only from listed networks; it "
                                  "cannot be allowed from anywhere")
            self._app.authz.require(actor, Permission.MACHINE_PROPOSE,
                                    subject=f"account:{username}")
        with self._app.transaction() as session:
            account = get_account(session, username, for_update=True)
            if _widens_machine(account, allow_from) != widening:
                raise ConflictError(f"account {username!r} changed meanwhile; try again")
            if widening:
                assert allow_from is not None
                return self._app.machines.propose_in(session, actor, account=account,
                                                     allow_from=allow_from)
            if account.allow_from == allow_from:
                raise ConflictError(f"account {username!r} already has this allow-list")
            previous, account.allow_from = account.allow_from, allow_from
            self._app.audit.record(session, tag=AuditTag.ACCOUNT_ALLOW_FROM, actor=actor,
                                   subject=f"account:{username}",
                                   details={"allow_from": allow_from, "previous": previous})
            return account_info(account, now=self._app.clock())


def _approval(change: AuthorityChange) -> dict[str, object]:
    """What an applied change's own events say of the two people behind it."""
    return {"authority_change": change.id, "proposed_by": change.proposer.username}


def _widens_machine(account: Account, allow_from: str | None) -> bool:
    """Whether ``allow_from`` would let a machine account in from anywhere new."""
    return account.machine and networks.widens(networks.stored(account.allow_from),
                                               networks.stored(allow_from))
