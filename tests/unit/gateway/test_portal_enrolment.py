"""The first portal passkey rests on both of a partner's factors: the one-time code at the
portal and an enrolment code read over SFTP (after the SSH key and the one-time code).

The code is random, short-lived, used once and bound to its account; every issue, use and
refusal is audited, a wrong code counts toward the lockout, and neither a row written
behind the gateway's back nor a used code's row put back (seal and all) enrols anything.
The passkey a later sign-in rests on is sealed and current in the same way.
"""

from __future__ import annotations

import dataclasses
import json

import pyotp
import pytest
from sqlalchemy import text

from gateway.app import App
from gateway.auth import INTEGRITY_FAILED
from gateway.console_sessions import Opened, Stage, token_id
from gateway.db.models import Passkey, Role
from gateway.errors import AuthenticationError, AuthorizationError
from gateway.portal_code import normalise, parse, render, rendered_size
from gateway.portal_enrolment import LIFETIME
from tests.conftest import FakeClock
from tests.unit.gateway.factories import account, actor, audit_events
from tests.unit.gateway.test_current_state import keep, put_back, violations

SOURCE = "192.0.2.7"


@pytest.fixture
def lee(app: App) -> str:
    app.partners.add(actor(app, "root-admin"), slug="uni")
    new, _ = account(app, "dr-lee", Role.PARTNER, partner="uni")
    return str(pyotp.parse_uri(new.totp_uri).secret)  # type: ignore[attr-defined]


def sign_in(app: App, clock: FakeClock, secret: str, enrolment: str = "",
            username: str = "dr-lee") -> Opened:
    # Each sign-in uses up its time step: the next one takes the next code.
    clock.advance(seconds=30)
    return app.console_auth.code_sign_in(username=username,
                                         code=pyotp.TOTP(secret).at(clock()),
                                         source=SOURCE, enrolment=enrolment)


def failures(app: App) -> list[tuple[str, str, list[str]]]:
    return [(e["details"]["factor"], e["details"]["reason"], e["details"].get("counted", []))
            for e in audit_events(app, "auth:login:failure")]


def test_the_first_passkey_takes_the_code_read_over_sftp_once(
        app: App, clock: FakeClock, lee: str) -> None:
    issued = app.portal_enrolment.issue(actor(app, "dr-lee"))
    shown = render(issued)
    assert parse(shown) == dataclasses.replace(issued, expires_at=issued.expires_at.replace(
        second=0, microsecond=0))
    assert len(shown.encode()) == rendered_size("dr-lee")
    with pytest.raises(AuthenticationError, match="needs an enrolment code"):
        sign_in(app, clock, lee)
    with pytest.raises(AuthenticationError, match="enrolment code refused"):
        sign_in(app, clock, lee, "AAAA-AAAA-AAAA-AAAA")
    # Typed in lower case, without dashes: the same code.
    opened = sign_in(app, clock, lee, issued.code.replace("-", " ").lower())
    assert opened.session.stage is Stage.PASSKEY
    assert audit_events(app, "auth:login:success")[-1]["details"]["method"] == (
        "totp+enrolment code")
    with pytest.raises(AuthenticationError, match="enrolment code refused"):
        sign_in(app, clock, lee, issued.code)
    # A missing code is not a guess; a wrong or used one counts toward the lockout.
    assert failures(app) == [
        ("enrolment code", "portal enrolment code: no code given", []),
        ("enrolment code", "portal enrolment code: wrong code", ["account"]),
        ("enrolment code", "portal enrolment code: no current code", ["account"])]
    assert [e["details"]["reason"] for e in audit_events(app, "portal:enrolment:failure")] == [
        "no code given", "wrong code", "no current code"]
    assert len(audit_events(app, "portal:enrolment:issue")) == 1
    use = audit_events(app, "portal:enrolment:use")
    assert [(e["actor"], e["subject"]) for e in use] == [("dr-lee", "account:dr-lee")]
    # The code is in no audit event and no database row.
    assert issued.code not in json.dumps(audit_events(app, "portal:enrolment:issue"))


def test_a_code_expires_is_replaced_by_the_next_and_belongs_to_one_account(
        app: App, clock: FakeClock, lee: str) -> None:
    first = app.portal_enrolment.issue(actor(app, "dr-lee"))
    second = app.portal_enrolment.issue(actor(app, "dr-lee"))
    with pytest.raises(AuthenticationError, match="enrolment code refused"):
        sign_in(app, clock, lee, first.code)
    new, _ = account(app, "dr-kim", Role.PARTNER, partner="uni")
    kim = str(pyotp.parse_uri(new.totp_uri).secret)  # type: ignore[attr-defined]
    with pytest.raises(AuthenticationError, match="enrolment code refused"):
        sign_in(app, clock, kim, second.code, username="dr-kim")
    clock.advance(seconds=int(LIFETIME.total_seconds()))
    with pytest.raises(AuthenticationError, match="expired"):
        sign_in(app, clock, lee, second.code)
    assert failures(app)[-1] == ("enrolment code", "portal enrolment code: expired", [])


def test_partner_and_staff_users_are_issued_codes_admins_not(app: App, lee: str) -> None:
    account(app, "clerk", Role.STAFF)
    # Staff sign in to the upload page by code and passkey, as partners to the portal.
    assert app.portal_enrolment.issue(actor(app, "clerk")).username == "clerk"
    with pytest.raises(AuthorizationError):
        app.portal_enrolment.issue(actor(app, "root-admin"))


def test_wrong_enrolment_codes_lock_the_account_like_wrong_one_time_codes(
        app: App, clock: FakeClock, lee: str) -> None:
    app.portal_enrolment.issue(actor(app, "dr-lee"))
    refusals = []
    for _ in range(app.settings.lockout_threshold + 1):
        try:
            sign_in(app, clock, lee, "BBBB-BBBB-BBBB-BBBB")
        except AuthenticationError as exc:
            refusals.append(exc.diagnostics())
    assert len(audit_events(app, "auth:lockout")) == 1
    # Locked: the right code and enrolment code do not get in either (and, as for any
    # refusal before the code is checked, the page does not say why).
    assert "wrong username or one-time code" in refusals[-1]
    assert failures(app)[-1][1] == "account locked out"


def test_a_used_code_put_back_and_a_forged_one_enrol_nothing(
        app: App, clock: FakeClock, lee: str) -> None:
    issued = app.portal_enrolment.issue(actor(app, "dr-lee"))
    kept = keep(app, "portal_enrolments", "1 = 1")
    sign_in(app, clock, lee, issued.code)
    put_back(app, "portal_enrolments", kept, key="account_id")
    with pytest.raises(AuthenticationError, match="enrolment code refused"):
        sign_in(app, clock, lee, issued.code)
    assert violations(app, "portal_enrolments"), "the old copy is not reported"
    # A row written without the state key: the code in it is the writer's, the MAC is not.
    with app.engine.begin() as connection:
        connection.execute(text("UPDATE portal_enrolments SET code_hash = 'v1.x.forged', "
                                "seal = NULL"))
    with pytest.raises(AuthenticationError, match="enrolment code refused"):
        sign_in(app, clock, lee, issued.code)
    assert [e["details"]["reason"] for e in violations(app, "portal_enrolments")][-1] == (
        "no seal")


def test_a_removed_passkey_put_back_grants_no_portal_sign_in(
        app: App, clock: FakeClock, lee: str) -> None:
    lee_id = actor(app, "dr-lee").account_id
    with app.transaction() as session:
        session.add(Passkey(account_id=lee_id, credential_id="AAAA", public_key="AA",
                            sign_count=0, name="phone", created_at=clock()))
    kept = keep(app, "passkeys", "account_id = :a", a=lee_id)
    app.passkeys.remove(actor(app, "root-admin"), passkey_id=kept[0]["id"])
    put_back(app, "passkeys", kept)
    # The old passkey row is back: the code leads to the passkey step, whose check
    # refuses the row before any signature is looked at.
    opened = sign_in(app, clock, lee)
    assert opened.session.stage is Stage.SECOND_FACTOR
    app.console_auth.passkey_options(opened.token)
    with pytest.raises(AuthenticationError, match=INTEGRITY_FAILED):
        app.console_auth.passkey_sign_in(opened.token, credential='{"id": "AAAA"}')
    found = violations(app, "passkeys")
    assert found and "not current" in found[-1]["details"]["reason"]
    # Nor can that session register a passkey, nor a code finish the sign-in.
    with pytest.raises(AuthenticationError):
        app.passkeys.registration_options(token_id(opened.token))


def test_normalise_reads_a_code_as_typed() -> None:
    assert normalise(" abcd efgh-JKLM\tnpqr ") == "ABCD-EFGH-JKLM-NPQR"


def test_a_lost_passkey_is_recovered_with_a_new_enrolment_code(
        app: App, clock: FakeClock, lee: str) -> None:
    lee_id = actor(app, "dr-lee").account_id
    with app.transaction() as session:
        session.add(Passkey(account_id=lee_id, credential_id="AAAA", public_key="AA",
                            sign_count=0, name="phone", created_at=clock()))
    with pytest.raises(AuthorizationError):
        app.passkeys.remove_all(actor(app, "dr-lee"), username="dr-lee")
    assert app.passkeys.remove_all(actor(app, "root-admin"), username="dr-lee") == 1
    assert len(audit_events(app, "account:passkey:remove")) == 1
    with pytest.raises(AuthenticationError, match="needs an enrolment code"):
        sign_in(app, clock, lee)
    issued = app.portal_enrolment.issue(actor(app, "dr-lee"))
    assert sign_in(app, clock, lee, issued.code).session.stage is Stage.PASSKEY
