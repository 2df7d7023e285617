"""Partner keys: validation, the two-person rule, key types, revocation."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import text

from gateway import envelope, recipient_list
from gateway.app import App
from gateway.db.models import KeyState, Role
from gateway.errors import (
    AuthorizationError,
    ConflictError,
    GatewayError,
    NotFoundError,
    PolicyError,
)
from gateway.integrity import IntegrityViolationError
from tests.unit.gateway.factories import (
    OPERATOR,
    account,
    actor,
    audit_events,
    usable_admin,
)


@pytest.fixture
def admins(app: App) -> App:
    app.partners.add(OPERATOR, slug="uni")
    app.accounts.add(OPERATOR, username="bob", role=Role.ADMIN)
    return app


def _recipient(post_quantum: bool = True) -> str:
    return str(envelope.generate_identity(post_quantum=post_quantum).recipient)


def test_propose_then_other_admin_approves(admins: App) -> None:
    key = admins.keys.propose(actor(admins, "root-admin"), partner="uni", recipient=_recipient(),
                              label="lab laptop")
    assert key.state is KeyState.PROPOSED
    assert key.kind == "mlkem768x25519"
    assert key.fingerprint.startswith("SHA256:")
    approved = admins.keys.approve(actor(admins, "bob"), key_id=key.id)
    assert approved.state is KeyState.APPROVED


def test_proposer_cannot_approve(admins: App) -> None:
    key = admins.keys.propose(actor(admins, "root-admin"), partner="uni", recipient=_recipient())
    with pytest.raises(PolicyError, match="two-person rule"):
        admins.keys.approve(actor(admins, "root-admin"), key_id=key.id)


def test_insecure_single_admin_switch_is_audited(admins: App) -> None:
    admins.settings = dataclasses.replace(admins.settings, insecure_single_admin_key_approval=True)
    key = admins.keys.propose(actor(admins, "root-admin"), partner="uni", recipient=_recipient())
    approved = admins.keys.approve(actor(admins, "root-admin"), key_id=key.id)
    assert approved.state is KeyState.APPROVED
    approval = audit_events(admins, "key:approve")[-1]
    assert approval["details"]["insecure_single_admin_key_approval"] is True
    use = audit_events(admins, "setting:insecure:use")[-1]
    assert use["subject"] == "setting:insecure_single_admin_key_approval"
    assert use["details"]["key_id"] == key.id


def test_only_admins_propose_or_approve(admins: App) -> None:
    account(admins, "clerk", Role.STAFF)
    with pytest.raises(AuthorizationError, match="staff account 'clerk' may not key propose"):
        admins.keys.propose(actor(admins, "clerk"), partner="uni", recipient=_recipient())


def test_invalid_recipient_is_refused(admins: App) -> None:
    with pytest.raises(GatewayError):
        admins.keys.propose(actor(admins, "root-admin"), partner="uni", recipient="age1notakey")


def test_an_undeclared_type_switch_is_refused_at_proposal(admins: App) -> None:
    """The rest of the type rules: tests/unit/gateway/test_key_types.py."""
    root = actor(admins, "root-admin")
    first = admins.keys.propose(root, partner="uni", recipient=_recipient(True))
    admins.keys.approve(actor(admins, "bob"), key_id=first.id)
    with pytest.raises(PolicyError, match="a file is never encrypted to both"):
        admins.keys.propose(root, partner="uni", recipient=_recipient(False))


def test_revoke_is_final(admins: App) -> None:
    key = admins.keys.propose(actor(admins, "root-admin"), partner="uni", recipient=_recipient())
    admins.keys.revoke(actor(admins, "bob"), key_id=key.id)
    with pytest.raises(ConflictError):
        admins.keys.approve(actor(admins, "bob"), key_id=key.id)
    with pytest.raises(ConflictError):
        admins.keys.revoke(actor(admins, "bob"), key_id=key.id)


def test_duplicate_proposal(admins: App) -> None:
    recipient = _recipient()
    admins.keys.propose(actor(admins, "root-admin"), partner="uni", recipient=recipient)
    with pytest.raises(ConflictError):
        admins.keys.propose(actor(admins, "bob"), partner="uni", recipient=recipient)


def test_the_local_operator_cannot_change_keys(admins: App) -> None:
    with pytest.raises(AuthorizationError, match="may not key propose"):
        admins.keys.propose(OPERATOR, partner="uni", recipient=_recipient())
    assert audit_events(admins, "access:denied")[-1]["subject"] == "key:propose"


def test_a_disabled_admin_approves_nothing(admins: App) -> None:
    key = admins.keys.propose(actor(admins, "root-admin"), partner="uni", recipient=_recipient())
    bob = actor(admins, "bob")
    # A third admin with a code, so that disabling bob leaves two who can approve.
    usable_admin(admins, "carol")
    admins.accounts.disable(OPERATOR, username="bob")
    with pytest.raises(PolicyError, match="not an active admin"):
        admins.keys.approve(bob, key_id=key.id)


def test_published_list_names_approved_keys_for_staff_only(admins: App) -> None:
    first = admins.keys.propose(actor(admins, "root-admin"), partner="uni",
                                recipient=_recipient())
    admins.keys.approve(actor(admins, "bob"), key_id=first.id)
    admins.keys.propose(actor(admins, "root-admin"), partner="uni", recipient=_recipient())
    account(admins, "clerk", Role.STAFF)
    account(admins, "lee", Role.PARTNER, partner="uni")
    published = recipient_list.parse(admins.keys.published(actor(admins, "clerk"), "uni"))
    assert published.partner == "uni"
    [key] = published.keys
    assert (key.recipient, key.fingerprint, key.key_id) == (first.recipient, first.fingerprint,
                                                             first.id)
    assert (key.proposed_by, key.approved_by) == ("root-admin", "bob")
    assert key.approved_at == admins.clock().replace(microsecond=0)
    with pytest.raises(AuthorizationError):
        admins.keys.published(actor(admins, "lee"), "uni")
    with pytest.raises(NotFoundError):
        admins.keys.published(actor(admins, "clerk"), "nobody")


def test_a_forged_key_is_never_published(admins: App) -> None:
    """Staff pin what they read: a recipient written behind the gateway is refused."""
    first = admins.keys.propose(actor(admins, "root-admin"), partner="uni",
                                recipient=_recipient())
    admins.keys.approve(actor(admins, "bob"), key_id=first.id)
    account(admins, "clerk", Role.STAFF)
    attacker = _recipient()
    with admins.engine.begin() as connection:
        connection.execute(text("UPDATE partner_keys SET recipient = :r"), {"r": attacker})
    with pytest.raises(IntegrityViolationError):
        admins.keys.published(actor(admins, "clerk"), "uni")
    assert audit_events(admins, "integrity:violation")[-1]["subject"].startswith(
        "partner_keys:")
