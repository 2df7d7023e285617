"""Small builders for service tests: keys, partners with approved keys, accounts."""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from gateway import envelope
from gateway.accounts import NewAccount
from gateway.actors import Actor
from gateway.app import App
from gateway.audit.models import AuditEntry
from gateway.db.models import Role
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


def partner_with_key(app: App, slug: str = "uni", *, post_quantum: bool = True,
                     max_downloads: int | None = None) -> envelope.Identity:
    """A partner whose key was proposed by root-admin and approved by a second admin."""
    app.partners.add(OPERATOR, slug=slug, max_downloads=max_downloads)
    if "second-admin" not in {a.username for a in app.accounts.all(OPERATOR)}:
        app.accounts.add(OPERATOR, username="second-admin", role=Role.ADMIN)
    identity = envelope.generate_identity(post_quantum=post_quantum)
    key = app.keys.propose(actor(app, "root-admin"), partner=slug,
                           recipient=str(identity.recipient))
    app.keys.approve(actor(app, "second-admin"), key_id=key.id)
    return identity


def account(app: App, username: str, role: Role, partner: str | None = None,
            key: PublicKey | None = None) -> tuple[NewAccount, PublicKey]:
    key = key or ssh_public_key()
    new = app.accounts.add(OPERATOR, username=username, role=role, partner=partner,
                           ssh_keys=[key])
    return new, key


def audit_events(app: App, tag: str) -> list[dict[str, Any]]:
    """The decoded audit events with ``tag``, oldest first."""
    with app.transaction() as session:
        leaves = session.scalars(select(AuditEntry.leaf).order_by(AuditEntry.idx)).all()
    return [event for event in map(json.loads, leaves) if event["tag"] == tag]
