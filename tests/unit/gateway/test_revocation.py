"""Revocation that purges: the last key revoked, a partner disabled, an account disabled."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from gateway import envelope
from gateway.app import App
from gateway.db.models import Role
from gateway.errors import AuthenticationError, GoneError, NotFoundError, PolicyError
from gateway.transfers import FileFilter
from tests.conftest import FakeClock
from tests.unit.gateway.factories import (
    OPERATOR,
    account,
    actor,
    audit_events,
    partner_with_key,
)


@pytest.fixture
def waiting(app: App) -> App:
    """Partner uni (key 1 approved) with two files waiting, lab with one."""
    partner_with_key(app, "uni")
    partner_with_key(app, "lab")
    account(app, "clerk", Role.STAFF)
    account(app, "lee", Role.PARTNER, partner="uni")
    for partner, name in (("uni", "a.csv"), ("uni", "b.csv"), ("lab", "c.csv")):
        upload = app.transfers.begin_upload(actor(app, "clerk"), partner=partner, name=name)
        upload.write(b"rows")
        upload.commit()
    return app


def _states(app: App, partner: str) -> list[str]:
    return sorted(f.state.value for f in app.transfers.files(OPERATOR, FileFilter(partner=partner)))


def _objects(app: App) -> int:
    return sum(1 for _ in app.store.list_objects())


def _revoke(app: App, key_id: int, **options: bool) -> None:
    app.keys.revoke(actor(app, "root-admin"), key_id=key_id, **options)


def test_revoking_the_last_key_purges_the_waiting_files(waiting: App) -> None:
    _revoke(waiting, 1)
    assert _states(waiting, "uni") == ["purged", "purged"]
    assert _states(waiting, "lab") == ["available"]
    assert _objects(waiting) == 1
    purges = audit_events(waiting, "file:purge")
    assert sorted((p["actor"], p["details"]["reason"], p["details"]["key_id"],
                   p["details"]["name"]) for p in purges) == [
        ("root-admin", "key revoked", 1, "a.csv.age"),
        ("root-admin", "key revoked", 1, "b.csv.age")]
    assert audit_events(waiting, "key:revoke")[-1]["details"]["waiting_files"] == "purged"
    assert waiting.transfers.inbox(actor(waiting, "lee")) == []


def test_keep_waiting_keeps_them_until_they_expire(waiting: App, clock: FakeClock) -> None:
    _revoke(waiting, 1, keep_waiting=True)
    assert _states(waiting, "uni") == ["available", "available"]
    revoke = audit_events(waiting, "key:revoke")[-1]["details"]
    assert revoke["waiting_files"] == "kept until they expire"
    assert audit_events(waiting, "file:purge") == []
    clock.advance(days=7)
    assert waiting.retention.purge().purged == 3
    assert {p["details"]["reason"] for p in audit_events(waiting, "file:purge")} == {"expired"}


def test_revoking_one_of_two_keys_purges_nothing(waiting: App) -> None:
    second = waiting.keys.propose(actor(waiting, "root-admin"), partner="uni",
                                  recipient=str(envelope.generate_identity().recipient))
    waiting.keys.approve(actor(waiting, "second-admin"), key_id=second.id)
    _revoke(waiting, 1)
    assert _states(waiting, "uni") == ["available", "available"]
    assert "waiting_files" not in audit_events(waiting, "key:revoke")[-1]["details"]
    _revoke(waiting, second.id)
    assert _states(waiting, "uni") == ["purged", "purged"]


def test_revoking_a_proposed_key_purges_nothing(waiting: App) -> None:
    proposed = waiting.keys.propose(actor(waiting, "root-admin"), partner="uni",
                                    recipient=str(envelope.generate_identity().recipient))
    _revoke(waiting, proposed.id)
    assert _states(waiting, "uni") == ["available", "available"]


def test_disabling_a_partner_purges_its_waiting_files(waiting: App) -> None:
    waiting.partners.disable(OPERATOR, slug="uni")
    assert _states(waiting, "uni") == ["purged", "purged"]
    assert [p["details"]["reason"] for p in audit_events(waiting, "file:purge")] == [
        "partner disabled", "partner disabled"]
    assert audit_events(waiting, "partner:disable")[-1]["details"]["waiting_files"] == "purged"
    assert _objects(waiting) == 1


def test_disabling_a_partner_can_keep_them(waiting: App) -> None:
    waiting.partners.disable(OPERATOR, slug="uni", keep_waiting=True)
    assert _states(waiting, "uni") == ["available", "available"]
    assert audit_events(waiting, "partner:disable")[-1]["details"]["waiting_files"] == (
        "kept until they expire")


def test_a_disabled_account_can_do_nothing_more(waiting: App) -> None:
    """Actors made before the account was disabled (open sessions) are refused at once."""
    clerk, lee = actor(waiting, "clerk"), actor(waiting, "lee")
    started = waiting.transfers.begin_upload(clerk, partner="uni", name="d.csv")
    started.write(b"rows")
    for username in ("clerk", "lee"):
        waiting.accounts.disable(OPERATOR, username=username)
    refusals = [
        lambda: waiting.transfers.inbox(lee),
        lambda: waiting.transfers.open_download(lee, "a.csv.age"),
        lambda: waiting.transfers.withdraw(lee, "a.csv.age"),
        lambda: waiting.transfers.active_partners(clerk),
        lambda: waiting.transfers.begin_upload(clerk, partner="uni", name="e.csv"),
        lambda: waiting.transfers.withdraw(clerk, "b.csv.age", partner="uni"),
        started.commit,
    ]
    for refused in refusals:
        with pytest.raises(AuthenticationError, match="signed out: account disabled"):
            refused()
    assert _states(waiting, "uni") == ["available", "available"]
    assert audit_events(waiting, "file:upload:aborted")[-1]["details"]["reason"] == (
        "signed out: account disabled")


def test_which_sessions_must_end(waiting: App) -> None:
    ids = {name: waiting.accounts.get(OPERATOR, name).id for name in ("clerk", "lee")}
    assert waiting.auth.sessions_to_end(set(ids.values())) == {}
    waiting.partners.disable(OPERATOR, slug="uni")
    assert waiting.auth.sessions_to_end(set(ids.values())) == {ids["lee"]: "partner disabled"}
    waiting.accounts.disable(OPERATOR, username="clerk")
    assert waiting.auth.sessions_to_end({ids["clerk"], 9999}) == {
        ids["clerk"]: "account disabled", 9999: "account removed"}
    with pytest.raises(AuthenticationError, match="signed out: partner disabled"):
        waiting.transfers.inbox(actor(waiting, "lee"))


def test_an_account_re_enabled_behind_the_gateways_back_is_ended(waiting: App) -> None:
    lee = waiting.accounts.get(OPERATOR, "lee").id
    waiting.accounts.disable(OPERATOR, username="lee")
    with waiting.engine.begin() as connection:
        connection.execute(text("UPDATE accounts SET disabled = false WHERE id = :id"),
                           {"id": lee})
    assert waiting.auth.sessions_to_end({lee}) == {lee: "integrity check failed"}
    assert audit_events(waiting, "integrity:violation")[-1]["subject"] == f"accounts:{lee}"


# -- stated before it is done (issue 23): consequences, and why a file is gone ----------

def test_the_consequence_counts_the_files_a_disable_or_last_revoke_purges(
        waiting: App) -> None:
    admin = actor(waiting, "root-admin")
    told = waiting.consequences.partner_disable(admin, slug="uni")
    assert told.purges == 2 and "this purges 2 waiting files for uni" in told.text()
    kept = waiting.consequences.partner_disable(admin, slug="uni", keep_waiting=True)
    assert kept.purges == 0 and "the 2 waiting files stay until they expire" in kept.text()
    last = waiting.consequences.key_revoke(admin, key_id=1)
    assert last.asks and last.purges == 2 and "uni's last approved key" in last.text()
    # A preview changes nothing.
    assert _states(waiting, "uni") == ["available", "available"]


def test_a_preview_refuses_what_the_action_refuses(waiting: App) -> None:
    admin = actor(waiting, "root-admin")
    with pytest.raises(PolicyError, match="nobody disables their own account"):
        waiting.consequences.account_disable(admin, username="root-admin")
    with pytest.raises(PolicyError, match="fewer than 2 active admins"):
        waiting.consequences.account_disable(OPERATOR, username="root-admin")


def test_a_partner_is_told_why_a_file_is_gone(waiting: App, clock: FakeClock) -> None:
    lee = actor(waiting, "lee")
    a = next(f for f in waiting.transfers.files(OPERATOR, FileFilter(partner="uni"))
             if f.name == "a.csv.age")
    waiting.transfers.withdraw_file(actor(waiting, "root-admin"), file_id=a.id)
    with pytest.raises(GoneError, match=r"a\.csv\.age is gone: it was withdrawn"):
        waiting.transfers.open_download(lee, "a.csv.age")
    with pytest.raises(NotFoundError, match=r"^no such file$"):
        waiting.transfers.open_download(lee, "never-sent.csv.age")
    clock.advance(days=30)
    with pytest.raises(GoneError, match=r"b\.csv\.age is gone: it expired at"):
        waiting.transfers.stat(lee, "b.csv.age")
