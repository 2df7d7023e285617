"""Services the console added to the core: partner changes, file listings and removal, the
dashboard, verification records, console settings."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from gateway import throttle
from gateway.app import App
from gateway.config import Settings
from gateway.db.models import Role, TransferState
from gateway.errors import AuthenticationError, ConfigError, ConflictError, UsageError
from gateway.partners import PartnerChange
from gateway.transfers import FileFilter
from tests.conftest import FakeClock
from tests.unit.gateway.factories import OPERATOR, account, actor, audit_events, partner_with_key


def _upload(app: App, name: str) -> str:
    upload = app.transfers.begin_upload(actor(app, "clerk"), partner="uni", name=name)
    upload.write(b"rows")
    return upload.commit().id


@pytest.fixture
def files(app: App) -> App:
    partner_with_key(app, "uni")
    account(app, "clerk", Role.STAFF)
    return app


def test_partner_change_audits_old_and_new(app: App) -> None:
    app.partners.add(OPERATOR, slug="uni", max_downloads=3)
    changed = app.partners.change(OPERATOR, slug="uni", change=PartnerChange(
        retention_seconds=3 * 86400, unlimited_downloads=True))
    assert (changed.retention, changed.max_downloads) == ("3d", None)
    details = audit_events(app, "partner:change")[-1]["details"]
    assert details["retention_seconds_old"] == 7 * 86400
    assert details["retention_seconds_new"] == 3 * 86400
    assert details["max_downloads_old"] == 3
    assert details["max_downloads_new"] is None
    with pytest.raises(UsageError, match="retention must be between 1s and 30d"):
        app.partners.change(OPERATOR, slug="uni",
                            change=PartnerChange(retention_seconds=31 * 86400))
    app.partners.change(OPERATOR, slug="uni", change=PartnerChange(retention_seconds=3 * 86400))
    assert len(audit_events(app, "partner:change")) == 1  # Nothing changed: no event.


def test_file_listing_filters_and_removal(files: App, clock: FakeClock) -> None:
    first = _upload(files, "a.csv")
    clock.advance(days=1)
    second = _upload(files, "b.csv")
    listed = files.transfers.files(OPERATOR, FileFilter(since=clock() - timedelta(hours=1)))
    assert [f.name for f in listed] == ["b.csv.age"]
    files.transfers.withdraw_file(OPERATOR, file_id=first)
    files.transfers.purge_file(OPERATOR, file_id=second)
    states = {f.name: f.state for f in files.transfers.files(OPERATOR)}
    assert states == {"a.csv.age": TransferState.WITHDRAWN, "b.csv.age": TransferState.PURGED}
    assert files.transfers.files(OPERATOR, FileFilter(state=TransferState.PURGED))[0].id == second
    with pytest.raises(ConflictError, match="already purged"):
        files.transfers.purge_file(OPERATOR, file_id=second)
    assert list((files.settings.store_dir / "objects").rglob("*.age")) == []
    purge = audit_events(files, "file:purge")[-1]
    assert purge["subject"] == f"file:{second}"
    assert purge["details"]["reason"] == f"purged by {OPERATOR.name}"


def test_dashboard_counts_waiting_and_expiring_files(files: App, clock: FakeClock) -> None:
    _upload(files, "old.csv")
    clock.advance(days=6, hours=12)
    _upload(files, "new.csv")
    overview = files.dashboard.overview(actor(files, "root-admin"))
    assert [(w.partner, w.files, w.expiring_soon) for w in overview.waiting] == [("uni", 2, 1)]
    assert overview.audit_size > 0
    assert overview.last_verification is None
    assert overview.insecure_settings == ()


def test_verification_is_recorded_for_the_dashboard(app: App) -> None:
    app.audit_view.verify(OPERATOR)
    last = app.dashboard.overview(OPERATOR).last_verification
    assert last is not None
    assert last.ok
    assert audit_events(app, "audit:verify")[-1]["details"]["ok"] is True


def test_account_enable_refuses_an_enabled_account(app: App) -> None:
    account(app, "clerk", Role.STAFF)
    with pytest.raises(ConflictError, match="is not disabled"):
        app.accounts.enable(OPERATOR, username="clerk")


def test_console_settings() -> None:
    assert Settings().effective_console_origin == "http://localhost:8443"
    tls = Settings(console_tls_cert="c.pem", console_tls_key="k.pem")
    assert tls.effective_console_origin == "https://localhost:8443"
    assert Settings(console_origin="https://b.example/").effective_console_origin == \
        "https://b.example"
    with pytest.raises(ConfigError, match="set both"):
        Settings(console_tls_cert="c.pem")
    with pytest.raises(ConfigError, match="console_origin"):
        Settings(console_origin="https://b.example/console")
    assert dataclasses.replace(Settings(), console_listen="[::1]:9000") \
        .effective_console_origin == "http://localhost:9000"


def test_a_passkey_challenge_serves_one_purpose_once(clock: FakeClock) -> None:
    from gateway.db.models import ConsoleSession
    from gateway.passkeys import CHALLENGE_LIFETIME, issue_challenge, take_challenge

    row = ConsoleSession()
    issue_challenge(row, b"c" * 32, purpose="key approve 1", now=clock())
    assert take_challenge(row, purpose="key approve 2", now=clock()) is None
    assert take_challenge(row, purpose="key approve 1", now=clock()) is None  # Consumed.
    issue_challenge(row, b"c" * 32, purpose="key approve 1", now=clock())
    assert take_challenge(row, purpose="key approve 1", now=clock()) == b"c" * 32
    issue_challenge(row, b"d" * 32, purpose="sign-in", now=clock())
    late = clock() + CHALLENGE_LIFETIME + timedelta(seconds=1)
    assert take_challenge(row, purpose="sign-in", now=late) is None


def test_wrong_tokens_slow_their_source_and_a_valid_one_still_passes(app: App) -> None:
    """A token is no guessable secret of a person: a wrong one counts against the source
    only, and a held-back source still gets through with a valid one (issue 14)."""
    strict = App(dataclasses.replace(app.settings, source_throttle_threshold=2),
                 clock=app.clock)
    token = strict.tokens.create(OPERATOR, name="nightly", role=Role.AUDITOR).token
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            strict.tokens.authenticate("bpt_" + "x" * 43, source="192.0.2.5")
    with strict.read() as session:
        assert throttle.failures(session, scope=throttle.Scope.SOURCE, key="192.0.2.5",
                                 now=strict.clock(), policy=strict.auth.policy) == 2
    assert [e["subject"] for e in audit_events(strict, "auth:lockout")] == ["source:192.0.2.5"]
    assert strict.tokens.authenticate(token, source="192.0.2.5").name == "token:nightly"
