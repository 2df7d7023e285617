"""Account and partner lifecycle: each change audited, replayed by `audit verify`, refused
with one clear reason when it cannot be made."""

from __future__ import annotations

import pytest

from gateway.accounts import parse_allow_from as _canonical
from gateway.app import App
from gateway.auth import SignInRefusedError
from gateway.db.models import Role
from gateway.errors import ConflictError, NotFoundError, PolicyError, UsageError
from tests.conftest import FakeClock
from tests.unit.gateway.factories import (
    OPERATOR,
    account,
    actor,
    audit_events,
    partner_with_key,
    ssh_public_key,
)


@pytest.fixture
def uni(app: App) -> App:
    partner_with_key(app, "uni")
    return app


def _verifies(app: App) -> None:
    """The database is what the log implies, and every seal holds."""
    app.audit_view.verify(OPERATOR)


def test_enable_and_disable_an_account(uni: App) -> None:
    account(uni, "clerk", Role.STAFF)
    with pytest.raises(ConflictError, match="is not disabled"):
        uni.accounts.enable(OPERATOR, username="clerk")
    assert uni.accounts.disable(OPERATOR, username="clerk").disabled
    assert not uni.accounts.enable(OPERATOR, username="clerk").disabled
    assert [e["subject"] for e in audit_events(uni, "account:enable")] == ["account:clerk"]
    _verifies(uni)


def test_enable_a_partner(uni: App) -> None:
    uni.partners.disable(OPERATOR, slug="uni")
    assert not uni.partners.enable(OPERATOR, slug="uni").disabled
    with pytest.raises(ConflictError, match="already enabled"):
        uni.partners.enable(OPERATOR, slug="uni")
    assert audit_events(uni, "partner:enable")[-1]["subject"] == "partner:uni"
    _verifies(uni)


def test_remove_a_key(uni: App) -> None:
    _, key = account(uni, "clerk", Role.STAFF)
    spare = ssh_public_key("spare")
    uni.accounts.add_key(OPERATOR, username="clerk", key=spare)
    with pytest.raises(NotFoundError, match=r"has no key SHA256:nope \(its keys: SHA256:"):
        uni.accounts.remove_key(OPERATOR, username="clerk", fingerprint="SHA256:nope")
    uni.accounts.remove_key(OPERATOR, username="clerk", fingerprint=key.fingerprint)
    assert [k.fingerprint for k in uni.accounts.get(OPERATOR, "clerk").ssh_keys] == [
        spare.fingerprint]
    removed = audit_events(uni, "account:key:remove")[-1]
    assert removed["details"]["fingerprint"] == key.fingerprint
    with pytest.raises(SignInRefusedError, match="unknown key"):
        uni.auth.accept_public_key(uni.auth.begin(source="192.0.2.1"), username="clerk",
                                   key_blob=key.blob)
    _verifies(uni)


def test_the_same_key_on_two_accounts_needs_a_flag(uni: App) -> None:
    _, key = account(uni, "clerk", Role.STAFF)
    with pytest.raises(ConflictError, match=r"already registered to clerk; .*--allow-shared-key"):
        account(uni, "lee", Role.PARTNER, partner="uni", key=key)
    assert "lee" not in {a.username for a in uni.accounts.all(OPERATOR)}
    uni.accounts.add(OPERATOR, username="lee", role=Role.PARTNER, partner="uni",
                     ssh_keys=[key], allow_shared_key=True)
    added = audit_events(uni, "account:key:add")[-1]
    assert (added["subject"], added["details"]["shared_with"]) == ("account:lee", ["clerk"])
    assert uni.accounts.get(OPERATOR, "lee").ssh_keys[0].shared
    _verifies(uni)


def test_allow_lists_are_parsed_strictly_and_narrowed_freely(uni: App) -> None:
    account(uni, "clerk", Role.STAFF)
    for bad in ("10.1.2.3/16", "nowhere", "10.0.0.0/33"):
        with pytest.raises(UsageError, match="invalid network"):
            uni.accounts.set_allow_from(OPERATOR, username="clerk",
                                        allow_from=_canonical(bad))
    uni.accounts.set_allow_from(OPERATOR, username="clerk",
                                allow_from=_canonical("192.0.2.7, 10.0.0.0/8"))
    info = uni.accounts.get(OPERATOR, "clerk")
    assert info.allow_from == ("10.0.0.0/8", "192.0.2.7/32")
    uni.accounts.set_allow_from(OPERATOR, username="clerk", allow_from=_canonical("any"))
    assert uni.accounts.get(OPERATOR, "clerk").allow_from is None
    _verifies(uni)


def test_enrol_by_ssh_is_for_sftp_accounts(uni: App) -> None:
    with pytest.raises(UsageError, match="--enrol-by-ssh is for staff and partner"):
        uni.accounts.add(OPERATOR, username="ops", role=Role.ADMIN, enrol_by_ssh=True)
    uni.accounts.add(OPERATOR, username="clerk", role=Role.STAFF, enrol_by_ssh=True)
    reset = uni.accounts.reset_totp(OPERATOR, username="clerk")
    assert reset.totp_uri is not None and reset.enrol_until is None
    assert uni.accounts.get(OPERATOR, "clerk").enrolment == "enrolled"
    _verifies(uni)


# -- machine accounts ---------------------------------------------------------------------

def _machine(app: App, clock: FakeClock) -> tuple[int, bytes]:
    key = ssh_public_key("job")
    new = app.accounts.add(actor(app, "root-admin"), username="nightly", role=Role.STAFF,
                           ssh_keys=[key], machine=True, allow_from=_canonical("10.20.0.0/24"))
    assert new.totp_uri is None and new.machine_grant is not None
    return new.machine_grant, key.blob


def _key_alone(app: App, blob: bytes, source: str) -> object:
    return app.auth.accept_public_key(app.auth.begin(source=source), username="nightly",
                                      key_blob=blob)


def test_a_machine_account_needs_a_second_admin(uni: App, clock: FakeClock) -> None:
    with pytest.raises(Exception, match="may not machine propose"):
        uni.accounts.add(OPERATOR, username="nightly", role=Role.STAFF, machine=True,
                         ssh_keys=[ssh_public_key()], allow_from="10.20.0.0/24")
    grant, blob = _machine(uni, clock)
    # Until approved it cannot sign in at all, and its holder is told why.
    with pytest.raises(SignInRefusedError, match="no second factor") as refused:
        _key_alone(uni, blob, "10.20.0.5")
    assert "second admin's approval" in str(refused.value.tell)
    with pytest.raises(PolicyError, match="two-person rule"):
        uni.machines.approve(actor(uni, "root-admin"), grant_id=grant)
    assert [g.id for g in uni.machines.pending(OPERATOR)] == [grant]
    uni.machines.approve(actor(uni, "second-admin"), grant_id=grant)
    signed_in = _key_alone(uni, blob, "10.20.0.5")
    assert signed_in is not None and getattr(signed_in, "machine", False)
    success = audit_events(uni, "auth:login:success")[-1]["details"]
    assert (success["method"], success["session"]) == ("publickey", "machine")
    with pytest.raises(SignInRefusedError, match="source not allowed"):
        _key_alone(uni, blob, "10.20.1.5")
    approved = audit_events(uni, "account:machine:approve")[-1]
    assert (approved["actor"], approved["details"]["proposed_by"]) == ("second-admin",
                                                                       "root-admin")
    _verifies(uni)


def test_a_machine_account_may_only_upload(uni: App, clock: FakeClock) -> None:
    grant, blob = _machine(uni, clock)
    uni.machines.approve(actor(uni, "second-admin"), grant_id=grant)
    job = _key_alone(uni, blob, "10.20.0.5")
    assert job is not None
    upload = uni.transfers.begin_upload(job, partner="uni", name="extract.csv")  # type: ignore[arg-type]
    upload.write(b"rows")
    upload.commit()
    assert audit_events(uni, "file:upload:complete")[-1]["details"]["session"] == "machine"
    with pytest.raises(PolicyError, match="may not file withdraw"):
        uni.transfers.withdraw(job, "extract.csv.age", partner="uni")  # type: ignore[arg-type]


def test_widening_a_machine_accounts_networks_needs_approval(uni: App,
                                                             clock: FakeClock) -> None:
    grant, blob = _machine(uni, clock)
    uni.machines.approve(actor(uni, "second-admin"), grant_id=grant)
    narrower = uni.accounts.set_allow_from(OPERATOR, username="nightly",
                                           allow_from=_canonical("10.20.0.0/25"))
    assert not isinstance(narrower, int)
    with pytest.raises(PolicyError, match="may not machine propose"):
        uni.accounts.set_allow_from(OPERATOR, username="nightly",
                                    allow_from=_canonical("10.20.0.0/16"))
    proposal = uni.accounts.set_allow_from(actor(uni, "root-admin"), username="nightly",
                                           allow_from=_canonical("10.20.0.0/16"))
    assert isinstance(proposal, int)
    with pytest.raises(SignInRefusedError, match="source not allowed"):
        _key_alone(uni, blob, "10.20.7.1")
    uni.machines.approve(actor(uni, "second-admin"), grant_id=proposal)
    assert _key_alone(uni, blob, "10.20.7.1") is not None
    with pytest.raises(PolicyError, match="cannot be allowed from anywhere"):
        uni.accounts.set_allow_from(actor(uni, "root-admin"), username="nightly",
                                    allow_from=None)
    _verifies(uni)


def test_a_machine_account_has_no_code_to_reset(uni: App, clock: FakeClock) -> None:
    grant, _ = _machine(uni, clock)
    uni.machines.approve(actor(uni, "second-admin"), grant_id=grant)
    with pytest.raises(PolicyError, match="machine account"):
        uni.accounts.reset_totp(OPERATOR, username="nightly")
