"""Sign-in rules: key then code, replay, lockout, disabled accounts, audit of each."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway import totp
from gateway.app import App
from gateway.auth import LoginAttempt
from gateway.db.models import Role
from gateway.errors import AuthenticationError
from gateway.sshkeys import PublicKey
from tests.conftest import FakeClock
from tests.unit.gateway.factories import (
    OPERATOR,
    account,
    audit_events,
    partner_with_key,
    ssh_public_key,
)


@pytest.fixture
def lee(app: App) -> tuple[str, PublicKey]:
    partner_with_key(app)
    new, key = account(app, "lee", Role.PARTNER, partner="uni")
    secret = new.totp_uri.split("secret=")[1].split("&")[0]
    return secret, key


def _code(secret: str, clock: FakeClock) -> str:
    return totp.current_code(secret, now=clock())


def _signed_in(app: App, key: PublicKey) -> LoginAttempt:
    attempt = app.auth.begin(source="192.0.2.7", client="SSH-2.0-test")
    app.auth.accept_public_key(attempt, username="lee", key_blob=key.blob)
    return attempt


def test_key_then_code_signs_in_and_is_audited(app: App, clock: FakeClock,
                                               lee: tuple[str, PublicKey]) -> None:
    secret, key = lee
    signed_in = app.auth.accept_code(_signed_in(app, key), username="lee",
                                       code=_code(secret, clock))
    assert (signed_in.name, signed_in.role) == ("lee", Role.PARTNER)
    success = audit_events(app, "auth:login:success")
    assert success[-1]["details"]["source"] == "192.0.2.7"


def test_code_without_key_is_refused(app: App, clock: FakeClock,
                                     lee: tuple[str, PublicKey]) -> None:
    secret, _ = lee
    attempt = app.auth.begin(source="192.0.2.7")
    with pytest.raises(AuthenticationError, match="without a verified public key"):
        app.auth.accept_code(attempt, username="lee", code=_code(secret, clock))
    assert audit_events(app, "auth:login:failure")


def test_key_for_another_account_does_not_carry_over(app: App, clock: FakeClock,
                                                     lee: tuple[str, PublicKey]) -> None:
    secret, key = lee
    account(app, "eve", Role.PARTNER, partner="uni")
    attempt = _signed_in(app, key)
    with pytest.raises(AuthenticationError):
        app.auth.accept_code(attempt, username="eve", code=_code(secret, clock))


def test_unknown_key_is_refused(app: App, lee: tuple[str, PublicKey]) -> None:
    attempt = app.auth.begin(source="192.0.2.7")
    with pytest.raises(AuthenticationError, match="unknown key"):
        app.auth.accept_public_key(attempt, username="lee", key_blob=ssh_public_key().blob)
    assert audit_events(app, "auth:login:failure")[-1]["details"]["reason"] == "unknown key"


def test_wrong_code(app: App, clock: FakeClock, lee: tuple[str, PublicKey]) -> None:
    secret, key = lee
    code = _code(secret, clock)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    with pytest.raises(AuthenticationError, match="wrong code"):
        app.auth.accept_code(_signed_in(app, key), username="lee", code=wrong)


def test_replayed_code_is_refused(app: App, clock: FakeClock,
                                  lee: tuple[str, PublicKey]) -> None:
    secret, key = lee
    code = _code(secret, clock)
    app.auth.accept_code(_signed_in(app, key), username="lee", code=code)
    clock.advance(seconds=5)
    with pytest.raises(AuthenticationError, match="replayed code"):
        app.auth.accept_code(_signed_in(app, key), username="lee", code=code)
    clock.advance(seconds=30)
    app.auth.accept_code(_signed_in(app, key), username="lee", code=_code(secret, clock))


def test_one_step_of_clock_tolerance(app: App, clock: FakeClock,
                                     lee: tuple[str, PublicKey]) -> None:
    secret, key = lee
    previous = totp.current_code(secret, now=clock() - timedelta(seconds=30))
    app.auth.accept_code(_signed_in(app, key), username="lee", code=previous)
    clock.advance(seconds=90)
    stale = totp.current_code(secret, now=clock() - timedelta(seconds=90))
    with pytest.raises(AuthenticationError):
        app.auth.accept_code(_signed_in(app, key), username="lee", code=stale)


def test_lockout_after_threshold_then_release(app: App, clock: FakeClock,
                                              lee: tuple[str, PublicKey]) -> None:
    secret, key = lee
    for _ in range(app.settings.lockout_threshold):
        with pytest.raises(AuthenticationError):
            app.auth.accept_code(_signed_in(app, key), username="lee", code="000000")
    assert audit_events(app, "auth:lockout")
    # Even the right code is refused while locked.
    with pytest.raises(AuthenticationError, match="locked out"):
        app.auth.accept_public_key(app.auth.begin(source="198.51.100.1"), username="lee",
                                   key_blob=key.blob)
    clock.advance(minutes=app.settings.lockout_minutes + 1)
    app.auth.accept_code(_signed_in(app, key), username="lee", code=_code(secret, clock))


def test_source_address_lockout_covers_other_accounts(app: App, clock: FakeClock,
                                                      lee: tuple[str, PublicKey]) -> None:
    _, key = lee
    for n in range(app.settings.lockout_threshold):
        attempt = app.auth.begin(source="203.0.113.9")
        with pytest.raises(AuthenticationError):
            app.auth.accept_public_key(attempt, username=f"nobody{n}", key_blob=key.blob)
    attempt = app.auth.begin(source="203.0.113.9")
    with pytest.raises(AuthenticationError, match="source locked out"):
        app.auth.accept_public_key(attempt, username="lee", key_blob=key.blob)


@pytest.mark.parametrize("what", ["account", "partner"])
def test_disabled_account_or_partner_is_refused(app: App, lee: tuple[str, PublicKey],
                                                what: str) -> None:
    _, key = lee
    if what == "account":
        app.accounts.disable(OPERATOR, username="lee")
    else:
        app.partners.disable(OPERATOR, slug="uni")
    with pytest.raises(AuthenticationError, match=f"{what} disabled"):
        _signed_in(app, key)


def test_abandoned_connection_is_audited_once(app: App, lee: tuple[str, PublicKey]) -> None:
    attempt = app.auth.begin(source="192.0.2.8")
    app.auth.abandon(attempt, reason="no public key offered")
    app.auth.abandon(attempt, reason="no public key offered")
    failures = [e for e in audit_events(app, "auth:login:failure")
                if e["details"]["source"] == "192.0.2.8"]
    assert len(failures) == 1


def test_abandon_names_the_claimed_user_and_counts_only_then(app: App,
                                                             lee: tuple[str, PublicKey]) -> None:
    for _ in range(app.settings.lockout_threshold + 1):
        app.auth.abandon(app.auth.begin(source="192.0.2.9"), reason="no key offered")
    assert not audit_events(app, "auth:lockout")
    for _ in range(app.settings.lockout_threshold):
        app.auth.abandon(app.auth.begin(source="192.0.2.9"), reason="unknown key",
                         username="lee")
    assert audit_events(app, "auth:login:failure")[-1]["subject"] == "account:lee"
    assert {e["subject"] for e in audit_events(app, "auth:lockout")} == {
        "source:192.0.2.9", "account:lee"}
