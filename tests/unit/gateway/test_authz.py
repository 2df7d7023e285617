"""Every kind of actor against every service operation: allowed ones succeed, the rest are
refused with an authorization error and audited.

The expected table is written out here, independently of ``gateway.authz``, so that a
change to the permission table shows up as a failing row.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import pytest

from gateway import envelope
from gateway.actors import Actor
from gateway.app import App
from gateway.db.models import Role
from gateway.errors import AuthorizationError
from gateway.partners import PartnerChange
from gateway.retention import PURGER
from tests.unit.gateway.factories import (
    OPERATOR,
    account,
    actor,
    audit_events,
    partner_with_key,
    ssh_public_key,
)

# "session" is an admin's console session (a standing credential); the tokens are API
# tokens of the two roles a token may have.
ACTORS = ("admin", "auditor", "staff", "partner", "operator", "system", "session",
          "admin-token", "auditor-token")
READERS = {"admin", "auditor", "operator", "session", "admin-token", "auditor-token"}
MANAGERS = {"admin", "operator", "session", "admin-token"}
PEOPLE_AND_OPERATOR = {"admin", "operator", "session"}

EXPECTED: dict[str, set[str]] = {
    "partner add": MANAGERS, "partner list": READERS, "partner get": READERS,
    "partner disable": MANAGERS,
    "account add": MANAGERS, "account list": READERS, "account get": READERS,
    "account disable": MANAGERS, "account add-key": MANAGERS, "account reset-totp": MANAGERS,
    "partner change": MANAGERS, "account enable": MANAGERS,
    "key propose": {"admin", "session"}, "key approve": {"admin"}, "key revoke": {"admin"},
    "key list": READERS,
    "inbox folders": {"staff"}, "inbox list": {"staff", "partner"},
    "inbox stat": {"staff", "partner"},
    "file upload": {"staff"}, "file download": {"partner"}, "file withdraw": {"staff", "partner"},
    "file purge": MANAGERS | {"system"},
    "file list": READERS | {"system"}, "file withdraw now": MANAGERS,
    "file purge now": MANAGERS | {"system"},
    "token create": PEOPLE_AND_OPERATOR, "token list": PEOPLE_AND_OPERATOR,
    "token revoke": PEOPLE_AND_OPERATOR,
    "exposure report": READERS,
}

_names = itertools.count()


def _fresh(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


def _upload(app: App, name: str) -> None:
    upload = app.transfers.begin_upload(actor(app, "clerk"), partner="uni", name=name)
    upload.write(b"rows")
    upload.commit()


def _own_inbox(who: Actor) -> str | None:
    """Partner accounts list their own inbox; everyone else names a partner folder."""
    return None if who.role is Role.PARTNER else "uni"


def _operations(app: App) -> dict[str, Callable[[Actor], object]]:
    def partner_disable(who: Actor) -> object:
        slug = _fresh("gone")
        app.partners.add(OPERATOR, slug=slug)
        return app.partners.disable(who, slug=slug)

    def account_disable(who: Actor) -> object:
        name = _fresh("temp")
        account(app, name, Role.STAFF)
        return app.accounts.disable(who, username=name)

    def key_approve(who: Actor) -> object:
        key = app.keys.propose(actor(app, "second-admin"), partner="spare",
                               recipient=str(envelope.generate_identity().recipient))
        return app.keys.approve(who, key_id=key.id)

    def key_revoke(who: Actor) -> object:
        key = app.keys.propose(actor(app, "second-admin"), partner="spare",
                               recipient=str(envelope.generate_identity().recipient))
        return app.keys.revoke(who, key_id=key.id)

    def file_download(who: Actor) -> object:
        name = _fresh("get")
        _upload(app, f"{name}.csv")
        return app.transfers.open_download(who, f"{name}.csv.age").close()

    def file_withdraw(who: Actor) -> None:
        name = _fresh("drop")
        _upload(app, f"{name}.csv")
        app.transfers.withdraw(who, f"{name}.csv.age", partner=_own_inbox(who))

    def file_upload(who: Actor) -> None:
        app.transfers.begin_upload(who, partner="uni", name=_fresh("up")).abort(reason="test")

    def account_enable(who: Actor) -> object:
        name = _fresh("back")
        account(app, name, Role.STAFF)
        app.accounts.disable(OPERATOR, username=name)
        return app.accounts.enable(who, username=name)

    def file_end(who: Actor, *, purge: bool) -> object:
        name = _fresh("end")
        _upload(app, f"{name}.csv")
        entry = app.transfers.stat(actor(app, "clerk"), f"{name}.csv.age", "uni")
        end = app.transfers.purge_file if purge else app.transfers.withdraw_file
        return end(who, file_id=entry.id)

    def token_revoke(who: Actor) -> object:
        name = _fresh("tok")
        app.tokens.create(OPERATOR, name=name, role=Role.AUDITOR)
        return app.tokens.revoke(who, name=name)

    return {
        "partner add": lambda who: app.partners.add(who, slug=_fresh("new")),
        "partner list": app.partners.all,
        "partner get": lambda who: app.partners.get(who, "uni"),
        "partner disable": partner_disable,
        "account add": lambda who: app.accounts.add(who, username=_fresh("user"),
                                                    role=Role.STAFF),
        "account list": app.accounts.all,
        "account get": lambda who: app.accounts.get(who, "clerk"),
        "account disable": account_disable,
        "account add-key": lambda who: app.accounts.add_key(who, username="clerk",
                                                            key=ssh_public_key()),
        "account reset-totp": lambda who: app.accounts.reset_totp(who, username="lee"),
        "key propose": lambda who: app.keys.propose(
            who, partner="spare", recipient=str(envelope.generate_identity().recipient)),
        "key approve": key_approve,
        "key revoke": key_revoke,
        "key list": app.keys.all,
        "inbox folders": app.transfers.active_partners,
        "inbox list": lambda who: app.transfers.inbox(who, _own_inbox(who)),
        "inbox stat": lambda who: app.transfers.stat(who, "standing.csv.age", _own_inbox(who)),
        "file upload": file_upload,
        "file download": file_download,
        "file withdraw": file_withdraw,
        "file purge": app.retention.purge,
        "partner change": lambda who: app.partners.change(
            who, slug="spare",
            change=PartnerChange(retention_seconds=(next(_names) % 20 + 1) * 3600)),
        "account enable": account_enable,
        "file list": app.transfers.files,
        "file withdraw now": lambda who: file_end(who, purge=False),
        "file purge now": lambda who: file_end(who, purge=True),
        "token create": lambda who: app.tokens.create(who, name=_fresh("tok"),
                                                      role=Role.AUDITOR),
        "token list": app.tokens.all,
        "token revoke": token_revoke,
        "exposure report": lambda who: app.exposure.report(who, start=app.clock(),
                                                           end=app.clock()),
    }


@pytest.fixture
def world(app: App) -> App:
    partner_with_key(app, "uni")
    app.partners.add(OPERATOR, slug="spare")
    account(app, "auditor", Role.AUDITOR)
    account(app, "clerk", Role.STAFF)
    account(app, "lee", Role.PARTNER, partner="uni")
    _upload(app, "standing.csv")
    return app


def _actor(app: App, kind: str) -> Actor:
    return {"admin": lambda: actor(app, "root-admin"), "auditor": lambda: actor(app, "auditor"),
            "staff": lambda: actor(app, "clerk"), "partner": lambda: actor(app, "lee"),
            "operator": lambda: OPERATOR, "system": lambda: PURGER,
            "session": lambda: dataclasses.replace(actor(app, "root-admin"), standing=True),
            "admin-token": lambda: Actor.token(name="robot", role=Role.ADMIN, source="192.0.2.9"),
            "auditor-token": lambda: Actor.token(name="reader", role=Role.AUDITOR,
                                                 source="192.0.2.9")}[kind]()


def test_the_table_covers_every_operation(world: App) -> None:
    assert set(_operations(world)) == set(EXPECTED)


@pytest.mark.parametrize("kind", ACTORS)
def test_every_operation_for(world: App, kind: str) -> None:
    who = _actor(world, kind)
    wrong = []
    for name, operation in _operations(world).items():
        denials_before = len(audit_events(world, "access:denied"))
        try:
            operation(who)
        except AuthorizationError as exc:
            audited = len(audit_events(world, "access:denied")) == denials_before + 1
            if kind in EXPECTED[name] or not audited:
                wrong.append(f"{name}: refused ({exc}); audited: {audited}")
        else:
            if kind not in EXPECTED[name]:
                wrong.append(f"{name}: allowed")
    assert wrong == []


def test_a_refusal_names_the_actor_and_operation(world: App) -> None:
    with pytest.raises(AuthorizationError, match="partner account 'lee' may not partner read"):
        world.partners.all(actor(world, "lee"))
    denied = audit_events(world, "access:denied")[-1]
    assert (denied["actor"], denied["subject"]) == ("lee", "partner:read")
    assert denied["details"]["source"] == "192.0.2.1"


def test_a_partner_cannot_reach_another_inbox(world: App) -> None:
    with pytest.raises(AuthorizationError, match="only its own inbox"):
        world.transfers.inbox(actor(world, "lee"), "spare")
    assert audit_events(world, "access:denied")[-1]["subject"] == "inbox"
