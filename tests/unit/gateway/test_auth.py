"""Sign-in rules: key then code, replay, lockout, disabled accounts, audit of each."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import select

from gateway import throttle, totp
from gateway.app import App
from gateway.auth import (
    MAX_CODE_ATTEMPTS,
    REPLAYED,
    TOO_MANY,
    LoginAttempt,
    SignInRefusedError,
)
from gateway.db.models import AuthThrottle, Role
from gateway.errors import AuthenticationError, UsageError
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
    assert audit_events(app, "auth:lockout")[-1]["subject"] == "account:lee"
    # Even the right key is refused while locked, and its holder is told why and until when.
    with pytest.raises(SignInRefusedError, match="locked out") as refused:
        app.auth.accept_public_key(app.auth.begin(source="198.51.100.1"), username="lee",
                                   key_blob=key.blob)
    assert refused.value.final
    assert refused.value.tell is not None
    assert refused.value.tell.startswith("account locked until 2026-11-02 09:15 UTC")
    clock.advance(minutes=app.settings.lockout_minutes + 1)
    app.auth.accept_code(_signed_in(app, key), username="lee", code=_code(secret, clock))


def _throttle(app: App) -> dict[tuple[str, str], int]:
    with app.read() as session:
        return {(row.scope, row.key): row.failures
                for row in session.scalars(select(AuthThrottle))}


def test_one_connection_counts_once_and_is_cut_after_three_codes(
        app: App, clock: FakeClock, lee: tuple[str, PublicKey]) -> None:
    secret, key = lee
    attempt = _signed_in(app, key)
    refusals = []
    for _ in range(MAX_CODE_ATTEMPTS + 2):
        with pytest.raises(SignInRefusedError) as refused:
            app.auth.accept_code(attempt, username="lee", code="000000")
        refusals.append(refused.value)
    assert [r.final for r in refusals] == [False, False, True, True, True]
    assert refusals[0].tell == "wrong code"
    assert refusals[2].tell == f"wrong code; {TOO_MANY}"
    # Past the cap nothing is checked, not even the right code.
    with pytest.raises(SignInRefusedError, match="too many codes on one connection"):
        app.auth.accept_code(attempt, username="lee", code=_code(secret, clock))
    assert _throttle(app) == {("account", "lee"): 1}
    assert len(audit_events(app, "auth:login:failure")) == MAX_CODE_ATTEMPTS + 3


def test_a_replayed_code_is_told_as_such(app: App, clock: FakeClock,
                                         lee: tuple[str, PublicKey]) -> None:
    secret, key = lee
    code = _code(secret, clock)
    app.auth.accept_code(_signed_in(app, key), username="lee", code=code)
    with pytest.raises(SignInRefusedError) as refused:
        app.auth.accept_code(_signed_in(app, key), username="lee", code=code)
    assert (refused.value.tell, refused.value.final) == (REPLAYED, False)


def test_claiming_a_name_never_locks_the_account(app: App, clock: FakeClock,
                                                 lee: tuple[str, PublicKey]) -> None:
    secret, _ = lee
    for n in range(3 * app.settings.lockout_threshold):
        with pytest.raises(SignInRefusedError) as refused:
            app.auth.accept_public_key(app.auth.begin(source=f"203.0.113.{n}"),
                                       username="lee", key_blob=ssh_public_key().blob)
        # Before the key is proven nothing is told (nor whether the account exists).
        assert refused.value.tell is None
    assert not [e for e in audit_events(app, "auth:lockout") if e["subject"] == "account:lee"]
    assert ("account", "lee") not in _throttle(app)
    app.auth.accept_code(_signed_in(app, lee[1]), username="lee", code=_code(secret, clock))


def _slow_sources(app: App, *, threshold: int = 3) -> None:
    app.settings = dataclasses.replace(app.settings, source_throttle_threshold=threshold,
                                       source_backoff_seconds=30, source_backoff_max_minutes=2)


def _stranger(app: App, source: str) -> SignInRefusedError:
    with pytest.raises(SignInRefusedError) as refused:
        app.auth.accept_public_key(app.auth.begin(source=source), username="nobody",
                                   key_blob=ssh_public_key().blob)
    return refused.value


def test_a_source_is_held_back_but_proven_keys_still_pass(app: App, clock: FakeClock,
                                                          lee: tuple[str, PublicKey]) -> None:
    secret, key = lee
    _slow_sources(app)
    for _ in range(3):
        _stranger(app, "203.0.113.9")
    assert audit_events(app, "auth:lockout")[-1]["subject"] == "source:203.0.113.9"
    held = _stranger(app, "203.0.113.9")
    assert "held back until" in held.reason
    assert _throttle(app)[("source", "203.0.113.9")] == 3  # Not counted while held back.
    # Every probe is answered yes, so the answer tells nothing about who exists.
    assert app.auth.key_is_registered(username="nobody", key_blob=ssh_public_key().blob,
                                      source="203.0.113.9")
    assert not app.auth.key_is_registered(username="nobody", key_blob=ssh_public_key().blob,
                                          source="203.0.113.10")
    # A colleague behind the same address proves their key and signs in.
    attempt = app.auth.begin(source="203.0.113.9")
    app.auth.accept_public_key(attempt, username="lee", key_blob=key.blob)
    app.auth.accept_code(attempt, username="lee", code=_code(secret, clock))


def test_the_source_back_off_doubles_up_to_its_ceiling(app: App, clock: FakeClock) -> None:
    _slow_sources(app, threshold=2)
    blocks = []
    for _ in range(6):
        _stranger(app, "198.51.100.3")
        with app.read() as session:
            until = throttle.blocked_until(session, scope=throttle.Scope.SOURCE,
                                           key="198.51.100.3", now=clock(),
                                           logged=app.ledger)
        blocks.append(None if until is None else (until - clock()).total_seconds())
        if until is not None:
            clock.now = until
    assert blocks == [None, 30, 60, 120, 120, 120]
    # Twice the ceiling without a failure, and the address starts afresh.
    clock.advance(minutes=4, seconds=1)
    _stranger(app, "198.51.100.3")
    assert _throttle(app)[("source", "198.51.100.3")] == 1


def test_a_code_after_the_key_counts_only_against_the_account(
        app: App, lee: tuple[str, PublicKey]) -> None:
    _, key = lee
    with pytest.raises(SignInRefusedError):
        app.auth.accept_code(_signed_in(app, key), username="lee", code="000000")
    assert _throttle(app) == {("account", "lee"): 1}


@pytest.mark.parametrize("what", ["account", "partner"])
def test_disabled_account_or_partner_is_refused(app: App, lee: tuple[str, PublicKey],
                                                what: str) -> None:
    _, key = lee
    if what == "account":
        app.accounts.disable(OPERATOR, username="lee")
    else:
        app.partners.disable(OPERATOR, slug="uni")
    with pytest.raises(SignInRefusedError, match=f"{what} disabled") as refused:
        _signed_in(app, key)
    assert refused.value.final and refused.value.tell


def test_abandoned_connection_is_audited_once(app: App, lee: tuple[str, PublicKey]) -> None:
    attempt = app.auth.begin(source="192.0.2.8")
    app.auth.abandon(attempt, reason="no public key offered")
    app.auth.abandon(attempt, reason="no public key offered")
    failures = [e for e in audit_events(app, "auth:login:failure")
                if e["details"]["source"] == "192.0.2.8"]
    assert len(failures) == 1


def test_abandon_counts_only_a_claimed_unproven_name_and_only_for_the_source(
        app: App, lee: tuple[str, PublicKey]) -> None:
    _, key = lee
    app.auth.abandon(app.auth.begin(source="192.0.2.9"), reason="no key offered")
    assert _throttle(app) == {}
    app.auth.abandon(app.auth.begin(source="192.0.2.9"), reason="unknown key", username="lee")
    assert audit_events(app, "auth:login:failure")[-1]["subject"] == "account:lee"
    assert _throttle(app) == {("source", "192.0.2.9"): 1}
    # A holder who proved their key and left guessed nothing.
    app.auth.abandon(_signed_in(app, key), reason="disconnected before signing in")
    assert _throttle(app) == {("source", "192.0.2.9"): 1}


def test_unlock_and_unblock_are_audited(app: App, clock: FakeClock,
                                        lee: tuple[str, PublicKey]) -> None:
    secret, key = lee
    for _ in range(app.settings.lockout_threshold):
        with pytest.raises(AuthenticationError):
            app.auth.accept_code(_signed_in(app, key), username="lee", code="000000")
    assert app.accounts.get(OPERATOR, "lee").locked_until is not None
    lifted = app.auth.unlock(OPERATOR, username="lee")
    assert lifted.failures == app.settings.lockout_threshold
    assert audit_events(app, "account:unlock")[-1]["details"]["was_blocked_until"]
    assert app.accounts.get(OPERATOR, "lee").locked_until is None
    app.auth.accept_code(_signed_in(app, key), username="lee", code=_code(secret, clock))
    _slow_sources(app, threshold=1)
    _stranger(app, "2001:db8::7")
    assert [b.key for b in app.auth.held_back(OPERATOR)] == ["2001:db8::7"]
    app.auth.unblock_source(OPERATOR, address="2001:0db8::0007")
    assert app.auth.held_back(OPERATOR) == []
    assert audit_events(app, "source:unblock")[-1]["subject"] == "source:2001:db8::7"
    with pytest.raises(UsageError, match="invalid address"):
        app.auth.unblock_source(OPERATOR, address="nowhere")


def test_an_allow_list_refuses_elsewhere_after_the_key(app: App, clock: FakeClock,
                                                       lee: tuple[str, PublicKey]) -> None:
    secret, key = lee
    app.accounts.set_allow_from(OPERATOR, username="lee", allow_from="192.0.2.0/24")
    with pytest.raises(SignInRefusedError, match="source not allowed") as refused:
        app.auth.accept_public_key(app.auth.begin(source="198.51.100.1"), username="lee",
                                   key_blob=key.blob)
    assert refused.value.tell == ("signing in from 198.51.100.1 is not allowed for this "
                                  "account; use one of its allowed networks")
    assert _throttle(app) == {}  # Not a guess: nothing counts.
    attempt = app.auth.begin(source="::ffff:192.0.2.7")
    app.auth.accept_public_key(attempt, username="lee", key_blob=key.blob)
    app.auth.accept_code(attempt, username="lee", code=_code(secret, clock))
    assert audit_events(app, "account:allow-from")[-1]["details"]["allow_from"] == \
        "192.0.2.0/24"


def test_a_wrong_step_up_code_counts_toward_the_lockout(app: App,
                                                        lee: tuple[str, PublicKey]) -> None:
    with pytest.raises(AuthenticationError, match="wrong code"):
        app.auth.prove(username="lee", code="000000", source="local", purpose="test")
    with pytest.raises(AuthenticationError, match="no one-time code"):
        app.auth.prove(username="lee", code="", source="local", purpose="test")
    assert _throttle(app) == {("account", "lee"): 1}


# -- self-enrolment ---------------------------------------------------------------------

def _enrolling(app: App) -> PublicKey:
    partner_with_key(app, "lab")
    key = ssh_public_key()
    new = app.accounts.add(OPERATOR, username="ana", role=Role.PARTNER, partner="lab",
                           ssh_keys=[key], enrol_by_ssh=True)
    assert new.totp_uri is None
    assert new.account.enrolment == "pending"
    return key


def test_the_holder_enrols_with_their_key_then_signs_in_normally(app: App,
                                                                 clock: FakeClock) -> None:
    key = _enrolling(app)
    attempt = app.auth.begin(source="192.0.2.20")
    assert app.auth.accept_public_key(attempt, username="ana", key_blob=key.blob) is None
    assert attempt.enrolment is not None
    assert attempt.enrolment.uri.startswith("otpauth://totp/Blindpost:ana?secret=")
    secret = attempt.enrolment.secret
    with pytest.raises(SignInRefusedError, match="wrong code"):
        app.auth.accept_code(attempt, username="ana", code="000000")
    app.auth.accept_code(attempt, username="ana", code=_code(secret, clock))
    assert audit_events(app, "account:totp:enrol")[-1]["actor"] == "ana"
    assert audit_events(app, "auth:login:success")[-1]["details"]["method"] == \
        "publickey+totp-enrolment"
    assert app.accounts.get(OPERATOR, "ana").enrolment == "enrolled"
    clock.advance(seconds=30)
    again = app.auth.begin(source="192.0.2.20")
    app.auth.accept_public_key(again, username="ana", key_blob=key.blob)
    assert again.enrolment is None
    app.auth.accept_code(again, username="ana", code=_code(secret, clock))


def test_the_enrolment_window_closes(app: App, clock: FakeClock) -> None:
    key = _enrolling(app)
    clock.advance(hours=app.settings.enrolment_hours, seconds=1)
    assert app.accounts.get(OPERATOR, "ana").enrolment == "expired"
    with pytest.raises(SignInRefusedError, match="enrolment window closed") as refused:
        app.auth.accept_public_key(app.auth.begin(source="192.0.2.20"), username="ana",
                                   key_blob=key.blob)
    assert refused.value.tell is not None and "ask the registry" in refused.value.tell
    # An admin opens a new window (or shows the secret the old way).
    app.accounts.reset_totp(OPERATOR, username="ana", enrol_by_ssh=True)
    attempt = app.auth.begin(source="192.0.2.20")
    app.auth.accept_public_key(attempt, username="ana", key_blob=key.blob)
    assert attempt.enrolment is not None
