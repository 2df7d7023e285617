"""Partner keys: validation, the two-person rule, no mixing, revocation."""

from __future__ import annotations

import dataclasses

import pytest

from gateway import envelope
from gateway.app import App
from gateway.db.models import KeyState, Role
from gateway.errors import ConflictError, GatewayError, PolicyError
from tests.unit.gateway.factories import OPERATOR, account, audit_events


@pytest.fixture
def admins(app: App) -> App:
    app.partners.add(actor=OPERATOR, slug="uni")
    app.accounts.add(actor=OPERATOR, username="bob", role=Role.ADMIN)
    return app


def _recipient(post_quantum: bool = True) -> str:
    return str(envelope.generate_identity(post_quantum=post_quantum).recipient)


def test_propose_then_other_admin_approves(admins: App) -> None:
    key = admins.keys.propose(partner="uni", recipient=_recipient(), by="root-admin",
                              label="lab laptop")
    assert key.state is KeyState.PROPOSED
    assert key.kind == "mlkem768x25519"
    assert key.fingerprint.startswith("SHA256:")
    approved = admins.keys.approve(key_id=key.id, by="bob")
    assert approved.state is KeyState.APPROVED


def test_proposer_cannot_approve(admins: App) -> None:
    key = admins.keys.propose(partner="uni", recipient=_recipient(), by="root-admin")
    with pytest.raises(PolicyError, match="two-person rule"):
        admins.keys.approve(key_id=key.id, by="root-admin")


def test_insecure_single_admin_switch_is_audited(admins: App) -> None:
    admins.settings = dataclasses.replace(admins.settings, insecure_single_admin_key_approval=True)
    key = admins.keys.propose(partner="uni", recipient=_recipient(), by="root-admin")
    assert admins.keys.approve(key_id=key.id, by="root-admin").state is KeyState.APPROVED
    approval = audit_events(admins, "key:approve")[-1]
    assert approval["details"]["insecure_single_admin_key_approval"] is True
    use = audit_events(admins, "setting:insecure:use")[-1]
    assert use["subject"] == "setting:insecure_single_admin_key_approval"
    assert use["details"]["key_id"] == key.id


def test_only_admins_propose_or_approve(admins: App) -> None:
    account(admins, "clerk", Role.STAFF)
    with pytest.raises(PolicyError, match="not an active admin"):
        admins.keys.propose(partner="uni", recipient=_recipient(), by="clerk")


def test_invalid_recipient_is_refused(admins: App) -> None:
    with pytest.raises(GatewayError):
        admins.keys.propose(partner="uni", recipient="age1notakey", by="root-admin")


def test_no_mixing_post_quantum_and_classical(admins: App) -> None:
    first = admins.keys.propose(partner="uni", recipient=_recipient(True), by="root-admin")
    admins.keys.approve(key_id=first.id, by="bob")
    classic = admins.keys.propose(partner="uni", recipient=_recipient(False), by="root-admin")
    with pytest.raises(PolicyError, match="mix post-quantum and classical"):
        admins.keys.approve(key_id=classic.id, by="bob")
    admins.keys.revoke(key_id=first.id, by="bob")
    assert admins.keys.approve(key_id=classic.id, by="bob").state is KeyState.APPROVED


def test_revoke_is_final(admins: App) -> None:
    key = admins.keys.propose(partner="uni", recipient=_recipient(), by="root-admin")
    admins.keys.revoke(key_id=key.id, by="bob")
    with pytest.raises(ConflictError):
        admins.keys.approve(key_id=key.id, by="bob")
    with pytest.raises(ConflictError):
        admins.keys.revoke(key_id=key.id, by="bob")


def test_duplicate_proposal(admins: App) -> None:
    recipient = _recipient()
    admins.keys.propose(partner="uni", recipient=recipient, by="root-admin")
    with pytest.raises(ConflictError):
        admins.keys.propose(partner="uni", recipient=recipient, by="bob")
