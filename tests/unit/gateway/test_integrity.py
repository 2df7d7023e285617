"""Signed state: rows written into the database behind the gateway's back grant nothing.

Each attack writes the database the way an injection would (plain SQL on the gateway's
own database, no key from keys/): insert a forged row, copy a valid row (seal included)
to another identity, change a field of a valid row, swap fields between two rows. Each
must grant nothing, be an ``integrity:violation`` audit event naming the table and row,
and make ``audit verify`` fail naming it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from gateway import envelope, totp
from gateway.app import App
from gateway.audit import VerificationError
from gateway.db.models import Account, PartnerKey, Role, SSHKey, TOTPSecret
from gateway.errors import AuthenticationError, GatewayError
from gateway.integrity import remove_forged, seal, seal_message
from gateway.sshkeys import PublicKey
from tests.conftest import FakeClock
from tests.unit.gateway.factories import (
    OPERATOR,
    account,
    actor,
    audit_events,
    partner_with_key,
    ssh_public_key,
)


@dataclass
class World:
    app: App
    clock: FakeClock
    lee_secret: str
    lee_key: PublicKey
    clerk_key: PublicKey


@pytest.fixture
def world(app: App, clock: FakeClock) -> World:
    return make_world(app, clock)


def make_world(app: App, clock: FakeClock) -> World:
    """Two partners with keys (uni at most one download), lee of uni, clerk, one file."""
    partner_with_key(app, "uni", max_downloads=1)
    partner_with_key(app, "lab")
    new, lee_key = account(app, "lee", Role.PARTNER, partner="uni")
    _, clerk_key = account(app, "clerk", Role.STAFF)
    upload = app.transfers.begin_upload(actor(app, "clerk"), partner="uni", name="rows.csv")
    upload.write(b"rows")
    upload.commit()
    secret = new.totp_uri.split("secret=")[1].split("&", maxsplit=1)[0]
    return World(app, clock, secret, lee_key, clerk_key)


def inject(app: App, *statements: str, **params: object) -> None:
    """Write the database as an injection would: plain SQL, no state key."""
    with app.engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement), params)


def scalar(app: App, query: str, **params: object) -> object:
    with app.engine.connect() as connection:
        return connection.execute(text(query), params).scalar()


def sign_in(world: World, username: str = "lee", key: PublicKey | None = None) -> None:
    app = world.app
    world.clock.advance(seconds=totp.STEP_SECONDS)
    attempt = app.auth.begin(source="198.51.100.7")
    app.auth.accept_public_key(attempt, username=username,
                               key_blob=(key or world.lee_key).blob)
    app.auth.accept_code(attempt, username=username,
                         code=totp.current_code(world.lee_secret, now=world.clock()))


def _key_alone(world: World, username: str, key: PublicKey) -> None:
    world.app.auth.accept_public_key(world.app.auth.begin(source="198.51.100.7"),
                                     username=username, key_blob=key.blob)


def upload_to(world: World, partner: str) -> None:
    upload = world.app.transfers.begin_upload(actor(world.app, "clerk"), partner=partner,
                                              name="new.csv")
    upload.write(b"new rows")
    upload.commit()


def download(world: World) -> None:
    handle = world.app.transfers.open_download(actor(world.app, "lee"), "rows.csv.age")
    handle.read_at(0, handle.size)
    handle.close()


def violations(app: App) -> list[str]:
    return [event["subject"] for event in audit_events(app, "integrity:violation")]


def lee_id(app: App) -> int:
    return int(scalar(app, "SELECT id FROM accounts WHERE username = 'lee'"))  # type: ignore[arg-type]


def _forged_ssh_key(app: App) -> str:
    forged = ssh_public_key("attacker")
    inject(app, "INSERT INTO ssh_keys (account_id, key_type, key_data, fingerprint, comment, "
           "created_at) VALUES (:account, 'ssh-ed25519', :data, :fp, '', CURRENT_TIMESTAMP)",
           account=lee_id(app), data=forged.data_b64, fp=forged.fingerprint)
    return forged.data_b64


@dataclass(frozen=True)
class Attack:
    """One database write and what it must not grant."""

    name: str
    write: Callable[[World], object]
    use: Callable[[World, object], None]
    violated: str  # The table of the row the violation event names.


def _forge_key_and_sign_in(world: World, data: object) -> None:
    assert isinstance(data, str)
    sign_in(world, key=PublicKey("ssh-ed25519", base64.b64decode(data), ""))


ATTACKS = [
    Attack("insert an SSH key for a partner account", lambda w: _forged_ssh_key(w.app),
           _forge_key_and_sign_in, "ssh_keys"),
    Attack("copy a partner's SSH key row, seal and all, to a staff account",
           lambda w: inject(w.app, "UPDATE ssh_keys SET account_id = (SELECT id FROM accounts "
                            "WHERE username = 'clerk') WHERE account_id = :lee",
                            lee=lee_id(w.app)),
           lambda w, _: sign_in(w, "clerk", w.lee_key), "ssh_keys"),
    Attack("re-enable a disabled account",
           lambda w: (w.app.accounts.disable(OPERATOR, username="lee"),
                      inject(w.app, "UPDATE accounts SET disabled = 0 WHERE username = 'lee'")),
           lambda w, _: sign_in(w), "accounts"),
    Attack("swap the seals of two accounts",
           lambda w: inject(w.app,
                            "UPDATE accounts SET seal = (SELECT seal FROM accounts WHERE "
                            "username = 'clerk') WHERE username = 'lee'"),
           lambda w, _: sign_in(w), "accounts"),
    Attack("replace a TOTP secret with a known one",
           lambda w: inject(w.app, "UPDATE totp_secrets SET secret = :known WHERE account_id "
                            "= :lee", known=w.lee_secret, lee=lee_id(w.app)),
           lambda w, _: sign_in(w), "totp_secrets"),
    Attack("swap the TOTP rows of two accounts",
           lambda w: inject(w.app,
                            "UPDATE totp_secrets SET secret = (SELECT secret FROM totp_secrets "
                            "WHERE account_id = (SELECT id FROM accounts WHERE username = "
                            "'clerk')), seal = (SELECT seal FROM totp_secrets WHERE account_id "
                            "= (SELECT id FROM accounts WHERE username = 'clerk')) "
                            "WHERE account_id = :lee", lee=lee_id(w.app)),
           lambda w, _: sign_in(w), "totp_secrets"),
    Attack("insert an approved recipient key",
           lambda w: inject(w.app,
                            "INSERT INTO partner_keys (partner_id, recipient, kind, fingerprint,"
                            " label, state, proposed_by, proposed_at, approved_by, approved_at)"
                            " SELECT partner_id, :recipient, kind, 'SHA256:forged', '', "
                            "'approved', proposed_by, proposed_at, approved_by, approved_at "
                            "FROM partner_keys WHERE partner_id = (SELECT id FROM partners "
                            "WHERE slug = 'uni')", recipient=str(
                                envelope.generate_identity().recipient)),
           lambda w, _: upload_to(w, "uni"), "partner_keys"),
    Attack("copy an approved key row, seal and all, to another partner",
           lambda w: inject(w.app, "UPDATE partner_keys SET partner_id = (SELECT id FROM "
                            "partners WHERE slug = 'lab') WHERE partner_id = (SELECT id FROM "
                            "partners WHERE slug = 'uni')"),
           lambda w, _: upload_to(w, "lab"), "partner_keys"),
    Attack("lift a partner's download limit",
           lambda w: inject(w.app, "UPDATE partners SET max_downloads = NULL WHERE slug = "
                            "'uni'"),
           lambda w, _: upload_to(w, "uni"), "partners"),
    Attack("make a staff account a machine account (key alone, from anywhere)",
           lambda w: inject(w.app, "UPDATE accounts SET machine = true, allow_from = "
                            "'0.0.0.0/0' WHERE username = 'clerk'"),
           lambda w, _: _key_alone(w, "clerk", w.clerk_key), "accounts"),
    Attack("lift an account's allow-list",
           lambda w: (w.app.accounts.set_allow_from(OPERATOR, username="lee",
                                                     allow_from="192.0.2.0/24"),
                      inject(w.app, "UPDATE accounts SET allow_from = NULL WHERE username = "
                             "'lee'")),
           lambda w, _: sign_in(w), "accounts"),
    Attack("reopen a second factor's enrolment window (the secret would be shown)",
           lambda w: inject(w.app, "UPDATE totp_secrets SET enrol_until = :later WHERE "
                            "account_id = :lee", lee=lee_id(w.app),
                            later=(w.clock() + timedelta(days=3)).replace(tzinfo=None)),
           lambda w, _: _key_alone(w, "lee", w.lee_key), "totp_secrets"),
    Attack("insert an approved machine grant",
           lambda w: inject(w.app, "INSERT INTO machine_grants (account_id, allow_from, state,"
                            " proposed_by, proposed_at) SELECT id, '0.0.0.0/0', 'proposed', id,"
                            " CURRENT_TIMESTAMP FROM accounts WHERE username = 'root-admin'"),
           lambda w, _: w.app.machines.approve(actor(w.app, "second-admin"), grant_id=1),
           "machine_grants"),
    Attack("extend a file's expiry and lift its limit",
           lambda w: inject(w.app, "UPDATE transfers SET max_downloads = NULL, expires_at = "
                            ":later", later=(w.clock() + timedelta(days=900)).replace(
                                tzinfo=None)),
           lambda w, _: download(w), "transfers"),
]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda attack: attack.name)
def test_a_row_written_behind_the_gateway_grants_nothing(world: World, attack: Attack) -> None:
    written = attack.write(world)
    with pytest.raises(GatewayError) as refused:
        attack.use(world, written)
    assert "integrity check failed" in str(refused.value)
    assert any(subject.startswith(f"{attack.violated}:") for subject in violations(world.app))
    report = world.app.integrity.check(OPERATOR)
    assert any(f.table == attack.violated for f in report.findings)
    with pytest.raises(VerificationError) as verified:
        world.app.audit_view.verify(OPERATOR)
    assert f"{attack.violated} row" in verified.value.diagnostics()


def test_untouched_rows_verify_and_work(world: World) -> None:
    app = world.app
    assert app.integrity.check(OPERATOR).ok
    sign_in(world)
    upload_to(world, "uni")
    download(world)
    # Every kind of change the log replays: the database must match it exactly.
    upload_to(world, "uni")  # Supersedes new.csv.age.
    app.transfers.withdraw(actor(app, "clerk"), "new.csv.age", partner="uni")
    app.accounts.reset_totp(OPERATOR, username="lee")
    app.accounts.add_key(OPERATOR, username="clerk", key=ssh_public_key())
    app.accounts.disable(OPERATOR, username="clerk")
    app.partners.disable(OPERATOR, slug="lab")
    lab_key = next(k for k in app.keys.all(OPERATOR) if k.partner == "lab")
    app.keys.revoke(actor(app, "root-admin"), key_id=lab_key.id)
    world.clock.advance(days=30)
    assert app.retention.purge().purged == 1  # rows.csv, used up by its one download.
    assert app.integrity.check(OPERATOR).ok
    app.audit_view.verify(OPERATOR)
    assert violations(app) == []


def test_an_injected_recipient_receives_no_file(world: World) -> None:
    ATTACKS[6].write(world)
    with pytest.raises(GatewayError, match="integrity check failed for partner_keys"):
        upload_to(world, "uni")
    names = [f.name for f in world.app.transfers.inbox(actor(world.app, "clerk"), "uni")]
    assert names == ["rows.csv.age"]  # Nothing new was stored, encrypted or not.


def test_totp_secrets_are_encrypted_and_bound(world: World) -> None:
    stored = str(scalar(world.app, "SELECT secret FROM totp_secrets WHERE account_id = :lee",
                        lee=lee_id(world.app)))
    assert world.lee_secret not in stored and stored.startswith("v1.")


def test_the_gateway_does_not_launder_a_forged_row(world: World) -> None:
    # An injection makes a staff account an admin; an operator later disables the account
    # without noticing. Disabling would re-seal the row: it is refused instead.
    inject(world.app, "UPDATE accounts SET role = 'admin' WHERE username = 'clerk'")
    with pytest.raises(GatewayError, match="integrity check failed for accounts"):
        world.app.accounts.disable(OPERATOR, username="clerk")
    clerk = scalar(world.app, "SELECT id FROM accounts WHERE username = 'clerk'")
    assert f"accounts:{clerk}" in violations(world.app)
    assert [f.table for f in world.app.integrity.check(OPERATOR).findings] == ["accounts"]


def test_a_forged_row_is_removed_and_the_check_passes_again(world: World) -> None:
    _forged_ssh_key(world.app)
    forged = world.app.integrity.check(OPERATOR).findings[0]
    with pytest.raises(GatewayError, match="verifies and is current; only forged"):
        remove_forged(world.app, OPERATOR, table="accounts", row_id=str(lee_id(world.app)))
    remove_forged(world.app, OPERATOR, table=forged.table, row_id=forged.row)
    assert world.app.integrity.check(OPERATOR).ok
    assert audit_events(world.app, "integrity:remove")[-1]["subject"] == (
        f"ssh_keys:{forged.row}")


def test_reconciliation_names_table_row_and_field(world: World) -> None:
    # Someone holding the state key could re-seal a changed row; the log still disagrees.
    inject(world.app, "UPDATE partner_keys SET state = 'revoked'")
    with world.app.transaction() as session:
        for key in session.scalars(select(PartnerKey)):
            seal(world.app.state_keys, key)
    with pytest.raises(VerificationError) as failed:
        world.app.audit_view.verify(OPERATOR)
    assert "partner_keys row 1: state: the log implies 'approved', the database holds " \
        "'revoked'" in failed.value.diagnostics()


def test_a_sign_in_refused_for_integrity_is_audited_as_such(world: World) -> None:
    _forged_ssh_key(world.app)
    forged = PublicKey("ssh-ed25519", base64.b64decode(str(scalar(
        world.app, "SELECT key_data FROM ssh_keys ORDER BY id DESC LIMIT 1"))), "")
    with pytest.raises(AuthenticationError, match="integrity check failed"):
        sign_in(world, key=forged)
    failure = audit_events(world.app, "auth:login:failure")[-1]
    assert failure["details"]["reason"] == "integrity check failed"


def test_seals_made_before_fields_were_added_still_verify(world: World) -> None:
    # Rows sealed by a gateway that did not know the added fields (an upgrade) verify:
    # a field at its initial value is left out of what the seal covers.
    before = {Account: ("id", "username", "role", "partner_id", "password_hash", "disabled"),
              SSHKey: ("id", "account_id", "key_type", "key_data", "fingerprint"),
              TOTPSecret: ("account_id", "secret")}
    with world.app.read() as session:
        for model, fields in before.items():
            for row in session.scalars(select(model)):
                message = seal_message(str(model.__tablename__),
                                       {name: getattr(row, name) for name in fields})
                assert world.app.state_keys.check_mac("row", message, row.seal or "")
