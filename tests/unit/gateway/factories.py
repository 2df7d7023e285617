"""Small builders for service tests: keys, partners with approved keys, accounts."""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from gateway import envelope, totp
from gateway.account_values import NewAccount
from gateway.actors import Actor
from gateway.app import App
from gateway.audit import AuditTag
from gateway.audit.models import AuditEntry
from gateway.authority import AppliedChange, AuthorityChangeInfo
from gateway.db.models import Account, Role, TOTPSecret
from gateway.integrity import encrypt_totp
from gateway.notify.models import NotificationSubscription
from gateway.sshkeys import PublicKey, parse_public_key

OPERATOR = Actor.local_operator()


def ssh_public_key(comment: str = "test") -> PublicKey:
    public = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return parse_public_key(public.decode() + " " + comment)


def actor(app: App, username: str) -> Actor:
    """The actor of a signed-in account (what a successful sign-in hands the services)."""
    info = app.accounts.get(OPERATOR, username)
    return Actor.account(username=info.username, account_id=info.id, role=info.role,
                         partner_id=info.partner_id, source="192.0.2.1")


def active_admins(app: App) -> list[str]:
    return [a.username for a in app.accounts.all(OPERATOR)
            if a.role is Role.ADMIN and not a.disabled]


def two_admins(app: App) -> tuple[Actor, Actor]:
    """A proposer and a different approver among the active admins."""
    names = active_admins(app)
    assert len(names) >= 2, f"two admins are needed, there are {names}"
    return actor(app, names[0]), actor(app, names[1])


def approved(app: App, change: AuthorityChangeInfo | object) -> AppliedChange:
    """Approve ``change`` (a proposal) by an admin who is neither its proposer nor target."""
    assert isinstance(change, AuthorityChangeInfo), change
    approver = next(a for a in app.accounts.all(OPERATOR)
                    if a.role is Role.ADMIN and not a.disabled
                    and a.username not in (change.proposed_by, change.target))
    return app.authority.approve(actor(app, approver.username), change_id=change.id)


def add_console_account(app: App, username: str, role: Role = Role.ADMIN,
                        ssh_keys: list[PublicKey] | None = None) -> NewAccount:
    """An admin or auditor account, made as the rules allow: by the operator while it
    bootstraps (fewer than two admins), else proposed by one admin and approved by
    another (the one-time password goes to the approver)."""
    if app.authority.bootstrapping(OPERATOR):
        new = app.accounts.add(OPERATOR, username=username, role=role, ssh_keys=ssh_keys or [])
        assert isinstance(new, NewAccount)
        return new
    proposer, _ = two_admins(app)
    applied = approved(app, app.accounts.add(proposer, username=username, role=role,
                                             ssh_keys=ssh_keys or []))
    return NewAccount(app.accounts.get(OPERATOR, username), None, applied.one_time_password)


def usable_admin(app: App, username: str, ssh_keys: list[PublicKey] | None = None) -> str:
    """An admin who can give a fresh code now (an approved admin enrols their code at the
    console; a service test writes the enrolment directly). Returns the TOTP secret."""
    add_console_account(app, username, ssh_keys=ssh_keys)
    secret = totp.new_secret()
    with app.transaction() as session:
        account = session.scalar(select(Account).where(Account.username == username))
        assert account is not None
        existing = session.get(TOTPSecret, account.id)
        stored = encrypt_totp(app.state_keys, account_id=account.id, secret=secret)
        if existing is None:
            session.add(TOTPSecret(account_id=account.id, secret=stored, last_step=None,
                                   created_at=app.clock()))
        else:
            existing.secret = stored
        # As the console's enrolment records it, so the log still implies the database.
        app.audit.record(session, tag=AuditTag.ACCOUNT_TOTP_ENROL,
                         actor=actor(app, username), subject=f"account:{username}")
    return secret


def admin_token(app: App, name: str) -> str:
    """An admin API token, proposed by one admin and approved by another."""
    if len(active_admins(app)) < 2:
        add_console_account(app, "second-admin")
    proposer, _ = two_admins(app)
    applied = approved(app, app.tokens.create(proposer, name=name, role=Role.ADMIN))
    assert applied.token is not None
    return applied.token


def partner_with_key(app: App, slug: str = "uni", *, post_quantum: bool = True,
                     max_downloads: int | None = None) -> envelope.Identity:
    """A partner whose key was proposed by root-admin and approved by a second admin."""
    app.partners.add(OPERATOR, slug=slug, max_downloads=max_downloads)
    if "second-admin" not in {a.username for a in app.accounts.all(OPERATOR)}:
        add_console_account(app, "second-admin")
    identity = envelope.generate_identity(post_quantum=post_quantum)
    key = app.keys.propose(actor(app, "root-admin"), partner=slug,
                           recipient=str(identity.recipient))
    app.keys.approve(actor(app, "second-admin"), key_id=key.id)
    return identity


def account(app: App, username: str, role: Role, partner: str | None = None,
            key: PublicKey | None = None) -> tuple[NewAccount, PublicKey]:
    key = key or ssh_public_key()
    if role in (Role.ADMIN, Role.AUDITOR):
        return add_console_account(app, username, role, [key]), key
    new = app.accounts.add(OPERATOR, username=username, role=role, partner=partner,
                           ssh_keys=[key])
    assert isinstance(new, NewAccount)
    return new, key


def audit_events(app: App, tag: str) -> list[dict[str, Any]]:
    """The decoded audit events with ``tag``, oldest first."""
    with app.transaction() as session:
        leaves = session.scalars(select(AuditEntry.leaf).order_by(AuditEntry.idx)).all()
    return [event for event in map(json.loads, leaves) if event["tag"] == tag]


def opt_in(app: App, username: str, email: str) -> None:
    """``username``'s notifications go to ``email``, written as a confirmed address is
    (through the gateway's session: sealed and current). Confirming one with the code
    mailed to it is tested in tests/integration/test_notifications.py."""
    with app.transaction() as session:
        account_id = session.scalars(select(Account.id).where(
            Account.username == username)).one()
        row = session.get(NotificationSubscription, account_id)
        if row is not None:
            # Replaced, not edited, as the gateway replaces a row a test may have forged.
            session.delete(row)
            session.flush()
        session.add(NotificationSubscription(account_id=account_id, email=email,
                                             created_at=app.clock()))
