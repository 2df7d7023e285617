"""Authority takes two people (issue 20): every change that creates or extends authority is
a proposal granting nothing until a different admin approves it with a fresh proof."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import text

from gateway import passwords
from gateway.actors import Actor
from gateway.app import App
from gateway.authority import AuthorityChangeInfo
from gateway.db.models import ChangeState, Role
from gateway.errors import AuthorizationError, ConflictError, NotFoundError, PolicyError
from gateway.integrity import IntegrityViolationError
from gateway.tokens import NewToken
from tests.unit.admin_ui.conftest import CHEAP
from tests.unit.gateway.factories import (
    OPERATOR,
    actor,
    audit_events,
    ssh_public_key,
    usable_admin,
)

ADMIN_TOKEN = Actor.token(name="robot", role=Role.ADMIN, source="198.51.100.7")
NEW_KEY = ssh_public_key("attacker")


@pytest.fixture(autouse=True)
def cheap_password_hashes() -> Iterator[None]:
    """Every admin made here gets a one-time password; production argon2id parameters
    would cost half a second each (the console tests do the same)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(passwords, "_hasher", CHEAP)
        patch.setattr(passwords, "_DUMMY_HASH", CHEAP.hash("blindpost: no such account"))
        yield


@pytest.fixture
def admins(app: App) -> App:
    """root-admin (from init), bob (the bootstrap) and carol (approved), each with a code."""
    app.accounts.add(OPERATOR, username="bob", role=Role.ADMIN)
    usable_admin(app, "carol")
    return app


def _verifies(app: App) -> None:
    """The database is what the log implies (authority changes included), every seal holds."""
    app.audit_view.verify(OPERATOR)


@dataclass(frozen=True)
class Case:
    """One kind of authority change: how an actor asks for it, and whether it took effect."""

    name: str
    ask: Callable[[App, Actor], object]
    granted: Callable[[App], bool]
    target: str
    setup: Callable[[App], object] = lambda _app: None


def _token_exists(app: App, name: str) -> bool:
    return name in {t.name for t in app.tokens.all(OPERATOR)}


CASES = [
    Case("create admin",
         lambda app, who: app.accounts.add(who, username="mallory", role=Role.ADMIN),
         lambda app: "mallory" in {a.username for a in app.accounts.all(OPERATOR)},
         "mallory"),
    Case("create auditor",
         lambda app, who: app.accounts.add(who, username="audra", role=Role.AUDITOR),
         lambda app: "audra" in {a.username for a in app.accounts.all(OPERATOR)},
         "audra"),
    Case("reset an admin's factor",
         lambda app, who: app.accounts.reset_totp(who, username="carol"),
         lambda app: app.accounts.get(OPERATOR, "carol").enrolment == "none",
         "carol"),
    Case("add an SSH key to an admin",
         lambda app, who: app.accounts.add_key(who, username="carol", key=NEW_KEY),
         lambda app: bool(app.accounts.get(OPERATOR, "carol").ssh_keys),
         "carol"),
    Case("enable a disabled admin",
         lambda app, who: app.accounts.enable(who, username="carol"),
         lambda app: not app.accounts.get(OPERATOR, "carol").disabled,
         "carol", lambda app: app.accounts.disable(OPERATOR, username="carol")),
    Case("create an admin token",
         lambda app, who: app.tokens.create(who, name="deploy", role=Role.ADMIN),
         lambda app: _token_exists(app, "deploy"),
         "deploy"),
]
IDS = [case.name for case in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_two_admins_and_never_a_token(admins: App, case: Case) -> None:
    """Alone, an admin leaves it pending and gaining nothing, and cannot approve their own;
    a token is refused (audited); a second admin completes it; the events name both."""
    case.setup(admins)
    with pytest.raises(AuthorizationError, match="an API token never creates or extends "
                                                 "authority"):
        case.ask(admins, ADMIN_TOKEN)
    refusal = audit_events(admins, "access:denied")[-1]
    assert refusal["actor"] == "token:robot" and refusal["subject"] == "authority:propose"
    assert admins.authority.pending(OPERATOR) == []

    proposal = case.ask(admins, actor(admins, "root-admin"))
    assert isinstance(proposal, AuthorityChangeInfo)
    assert proposal.state is ChangeState.PROPOSED and proposal.proposed_by == "root-admin"
    assert not case.granted(admins)
    assert [c.id for c in admins.authority.pending(OPERATOR)] == [proposal.id]
    with pytest.raises(PolicyError, match="different admin than the one who proposed"):
        admins.authority.approve(actor(admins, "root-admin"), change_id=proposal.id)
    assert not case.granted(admins)

    applied = admins.authority.approve(actor(admins, "bob"), change_id=proposal.id)
    assert case.granted(admins)
    assert applied.change.approved_by == "bob"
    assert admins.authority.pending(OPERATOR) == []
    proposed = audit_events(admins, "authority:propose")[-1]
    approved = audit_events(admins, "authority:approve")[-1]
    assert proposed["actor"] == "root-admin" and proposed["details"]["target"] == case.target
    assert approved["actor"] == "bob"
    assert (approved["details"]["proposed_by"], approved["details"]["approved_by"]) == (
        "root-admin", "bob")
    with pytest.raises(ConflictError, match="is approved, not proposed"):
        admins.authority.approve(actor(admins, "carol" if case.target != "carol"
                                       else "bob"), change_id=proposal.id)
    _verifies(admins)


def test_new_admin_secrets_go_to_the_approver_alone(admins: App) -> None:
    proposal = admins.accounts.add(actor(admins, "root-admin"), username="dana",
                                   role=Role.ADMIN)
    assert isinstance(proposal, AuthorityChangeInfo)
    # What the proposer is handed, and what the log holds, carries no credential.
    assert "password" not in str(dataclasses.asdict(proposal)).lower()
    applied = admins.authority.approve(actor(admins, "bob"), change_id=proposal.id)
    assert applied.one_time_password
    dana = admins.accounts.get(OPERATOR, "dana")
    # No second factor yet: dana enrols her own at her first console sign-in.
    assert dana.enrolment == "none" and not dana.totp_enrolled
    created = audit_events(admins, "account:create")[-1]
    assert created["actor"] == "bob"
    assert created["details"]["proposed_by"] == "root-admin"
    assert created["details"]["totp"] is False
    with admins.read() as session:
        leaves = session.execute(text("SELECT leaf FROM audit_entries")).scalars().all()
    assert not any(applied.one_time_password in str(leaf) for leaf in leaves)


def test_a_token_secret_goes_to_the_approver(admins: App) -> None:
    proposal = admins.tokens.create(actor(admins, "carol"), name="deploy", role=Role.ADMIN)
    assert isinstance(proposal, AuthorityChangeInfo)
    applied = admins.authority.approve(actor(admins, "bob"), change_id=proposal.id)
    assert applied.token is not None and applied.one_time_password is None
    robot = admins.tokens.authenticate(applied.token, source="192.0.2.9")
    assert robot.name == "token:deploy" and robot.role is Role.ADMIN
    # An auditor token is no authority: an admin makes it alone, as before.
    assert isinstance(admins.tokens.create(OPERATOR, name="report", role=Role.AUDITOR),
                      NewToken)


def test_the_holder_does_not_approve_a_change_to_their_own_account(admins: App) -> None:
    reset = admins.accounts.reset_totp(actor(admins, "root-admin"), username="carol")
    assert isinstance(reset, AuthorityChangeInfo)
    with pytest.raises(PolicyError, match="their own account"):
        admins.authority.approve(actor(admins, "carol"), change_id=reset.id)
    assert admins.accounts.get(OPERATOR, "carol").totp_enrolled


def test_a_reset_replaces_the_password_and_the_holder_re_enrols(admins: App) -> None:
    reset = admins.accounts.reset_totp(actor(admins, "root-admin"), username="carol")
    assert isinstance(reset, AuthorityChangeInfo)
    applied = admins.authority.approve(actor(admins, "bob"), change_id=reset.id)
    assert applied.one_time_password
    opened = admins.console_auth.sign_in(username="carol", password=applied.one_time_password,
                                         source="192.0.2.4")
    assert opened.session.stage.value == "enrol"
    event = audit_events(admins, "account:totp:reset")[-1]
    assert event["actor"] == "bob" and event["details"]["proposed_by"] == "root-admin"


def test_a_console_session_alone_approves_nothing(admins: App) -> None:
    proposal = admins.accounts.add(actor(admins, "root-admin"), username="erin",
                                   role=Role.ADMIN)
    assert isinstance(proposal, AuthorityChangeInfo)
    session = dataclasses.replace(actor(admins, "bob"), standing=True)
    with pytest.raises(AuthorizationError, match="without a fresh second factor"):
        admins.authority.approve(session, change_id=proposal.id)
    with pytest.raises(AuthorizationError, match="never approves"):
        admins.authority.approve(ADMIN_TOKEN, change_id=proposal.id)
    assert "erin" not in {a.username for a in admins.accounts.all(OPERATOR)}


def test_a_withdrawn_change_applies_nothing(admins: App) -> None:
    proposal = admins.accounts.add(actor(admins, "root-admin"), username="mallory",
                                   role=Role.ADMIN)
    assert isinstance(proposal, AuthorityChangeInfo)
    withdrawn = admins.authority.withdraw(actor(admins, "carol"), change_id=proposal.id)
    assert withdrawn.state is ChangeState.WITHDRAWN and withdrawn.withdrawn_by == "carol"
    with pytest.raises(ConflictError, match="is withdrawn"):
        admins.authority.approve(actor(admins, "bob"), change_id=proposal.id)
    event = audit_events(admins, "authority:withdraw")[-1]
    assert event["actor"] == "carol" and event["details"]["proposed_by"] == "root-admin"
    with pytest.raises(NotFoundError):
        admins.authority.withdraw(OPERATOR, change_id=10**12)
    _verifies(admins)


def test_a_new_proposal_supersedes_the_one_waiting(admins: App) -> None:
    first = admins.tokens.create(actor(admins, "root-admin"), name="deploy", role=Role.ADMIN)
    second = admins.tokens.create(actor(admins, "carol"), name="deploy", role=Role.ADMIN)
    assert isinstance(first, AuthorityChangeInfo) and isinstance(second, AuthorityChangeInfo)
    assert [c.id for c in admins.authority.pending(OPERATOR)] == [second.id]
    with pytest.raises(ConflictError, match="is superseded"):
        admins.authority.approve(actor(admins, "bob"), change_id=first.id)
    _verifies(admins)


def test_the_operator_proposes_only_through_an_admin(admins: App) -> None:
    for ask in (lambda: admins.accounts.add(OPERATOR, username="oscar", role=Role.ADMIN),
                lambda: admins.accounts.reset_totp(OPERATOR, username="carol"),
                lambda: admins.tokens.create(OPERATOR, name="deploy", role=Role.ADMIN)):
        with pytest.raises(AuthorizationError, match="the local operator does not act alone"):
            ask()
    assert admins.authority.pending(OPERATOR) == []


def test_bootstrap_the_operator_creates_the_second_admin(app: App) -> None:
    new = app.accounts.add(OPERATOR, username="bob", role=Role.ADMIN)
    assert new.one_time_password  # type: ignore[union-attr]
    assert audit_events(app, "account:create")[-1]["details"]["bootstrap"] is True
    with pytest.raises(AuthorizationError, match="the local operator does not act alone"):
        app.accounts.add(OPERATOR, username="carol", role=Role.ADMIN)


def test_the_rule_cannot_be_starved(app: App) -> None:
    app.accounts.add(OPERATOR, username="bob", role=Role.ADMIN)
    for name in ("root-admin", "bob"):
        with pytest.raises(PolicyError, match="fewer than 2 active admins"):
            app.accounts.disable(OPERATOR, username=name)
    with pytest.raises(PolicyError, match="nobody disables their own account"):
        app.accounts.disable(actor(app, "bob"), username="bob")
    usable_admin(app, "carol")
    with pytest.raises(PolicyError, match="nobody disables their own account"):
        app.accounts.disable(actor(app, "carol"), username="carol")
    app.accounts.disable(actor(app, "carol"), username="bob")
    # Now root-admin and carol are the two: a reset of carol's factor would starve it.
    reset = app.accounts.reset_totp(actor(app, "root-admin"), username="carol")
    assert isinstance(reset, AuthorityChangeInfo)
    usable_admin(app, "dave")
    app.accounts.disable(actor(app, "dave"), username="root-admin")
    with pytest.raises(PolicyError, match="fewer than 2 active admins"):
        app.authority.approve(actor(app, "dave"), change_id=reset.id)
    assert app.accounts.get(OPERATOR, "carol").totp_enrolled


def test_an_injected_change_applies_nothing(admins: App) -> None:
    proposal = admins.accounts.add(actor(admins, "root-admin"), username="mallory",
                                   role=Role.AUDITOR)
    assert isinstance(proposal, AuthorityChangeInfo)
    with admins.transaction() as session:
        session.execute(text("UPDATE authority_changes SET params = :p WHERE id = :id"),
                        {"p": '{"allow_from":null,"allow_shared_key":false,"role":"admin",'
                              '"ssh_keys":[]}', "id": proposal.id})
    with pytest.raises(IntegrityViolationError):
        admins.authority.approve(actor(admins, "bob"), change_id=proposal.id)
    assert "mallory" not in {a.username for a in admins.accounts.all(OPERATOR)}


def test_the_attack_with_one_admin_token_ends_with_no_key_approved(admins: App) -> None:
    """Issue 20: one admin API token made two admins who approved an attacker's key."""
    admins.partners.add(OPERATOR, slug="uni")
    for name in ("eve1", "eve2"):
        with pytest.raises(AuthorizationError):
            admins.accounts.add(ADMIN_TOKEN, username=name, role=Role.ADMIN)
    with pytest.raises(AuthorizationError):
        admins.accounts.reset_totp(ADMIN_TOKEN, username="root-admin")
    with pytest.raises(AuthorizationError):
        admins.accounts.add_key(ADMIN_TOKEN, username="root-admin", key=NEW_KEY)
    with pytest.raises(AuthorizationError):
        admins.tokens.create(ADMIN_TOKEN, name="more", role=Role.ADMIN)
    from gateway import envelope

    attacker = str(envelope.generate_identity().recipient)
    with pytest.raises(AuthorizationError):
        admins.keys.propose(ADMIN_TOKEN, partner="uni", recipient=attacker)
    assert {a.username for a in admins.accounts.all(OPERATOR)} == {"root-admin", "bob", "carol"}
    assert admins.keys.all(OPERATOR) == []
    assert admins.authority.pending(OPERATOR) == []
    assert len(audit_events(admins, "access:denied")) == 6
    _verifies(admins)
