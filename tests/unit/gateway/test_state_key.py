"""The state key's life: created by init, adopted by an old installation, rotated, recovered."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from gateway import state_keys, totp
from gateway.app import App
from gateway.config import load_settings
from gateway.datadir import initialise
from gateway.db.models import Role
from gateway.errors import ConfigError, PolicyError
from gateway.resealing import rotate
from gateway.state_keys import StateKeys
from tests.conftest import FakeClock
from tests.unit.gateway.factories import OPERATOR, account, actor, audit_events, partner_with_key


def _seal_key_ids(app: App) -> set[str]:
    with app.engine.connect() as connection:
        seals = connection.execute(text(
            "SELECT seal FROM accounts UNION ALL SELECT seal FROM partner_keys "
            "UNION ALL SELECT seal FROM totp_secrets UNION ALL SELECT seal FROM transfers"))
        return {StateKeys.key_id_of(seal) for (seal,) in seals}


def _working(app: App, clock: FakeClock, secret: str, key_blob: bytes) -> None:
    """Sign in, upload and download: everything that verifies seals."""
    clock.advance(seconds=totp.STEP_SECONDS)
    attempt = app.auth.begin(source="192.0.2.9")
    app.auth.accept_public_key(attempt, username="lee", key_blob=key_blob)
    app.auth.accept_code(attempt, username="lee", code=totp.current_code(secret, now=clock()))
    upload = app.transfers.begin_upload(actor(app, "clerk"), partner="uni", name="f.csv")
    upload.write(b"rows")
    upload.commit()
    download = app.transfers.open_download(actor(app, "lee"), "f.csv.age")
    download.read_at(0, download.size)
    download.close()


@pytest.fixture
def populated(app: App) -> tuple[App, str, bytes]:
    partner_with_key(app, "uni")
    new, key = account(app, "lee", Role.PARTNER, partner="uni")
    account(app, "clerk", Role.STAFF)
    return app, new.totp_uri.split("secret=")[1].split("&", maxsplit=1)[0], key.blob


def test_rotation_reseals_everything_and_everything_still_works(
        populated: tuple[App, str, bytes], clock: FakeClock) -> None:
    app, secret, key_blob = populated
    old = app.state_keys.current.key_id
    done = rotate(app, OPERATOR)
    assert (done.old_key, done.new_key) == (old, app.state_keys.current.key_id) != (old, old)
    assert _seal_key_ids(app) == {done.new_key}
    assert not (app.settings.keys_dir / "state_key.new").exists()
    _working(app, clock, secret, key_blob)
    fresh = App(app.settings, clock=clock)  # As the next start of the service sees it.
    try:
        assert fresh.integrity.check(OPERATOR).ok
        fresh.audit_view.verify(OPERATOR)
    finally:
        fresh.close()
    assert audit_events(app, "integrity:key:rotate")[-1]["details"]["rows"] == done.rows


def test_rotation_is_refused_while_a_row_fails(populated: tuple[App, str, bytes]) -> None:
    app, _, _ = populated
    before = (app.settings.keys_dir / "state_key").read_text()
    with app.engine.begin() as connection:
        connection.execute(text("UPDATE partners SET max_downloads = 99"))
    with pytest.raises(PolicyError, match="partners row 1"):
        rotate(app, OPERATOR)
    assert (app.settings.keys_dir / "state_key").read_text() == before
    assert not (app.settings.keys_dir / "state_key.new").exists()


def test_a_rotation_stopped_before_its_commit_is_forgotten(
        populated: tuple[App, str, bytes], clock: FakeClock) -> None:
    app, secret, key_blob = populated
    state_keys.begin_rotation(app.settings.keys_dir)  # ... and the process dies here.
    restarted = App(app.settings, clock=clock)
    try:
        _working(restarted, clock, secret, key_blob)
    finally:
        restarted.close()
    assert not (app.settings.keys_dir / "state_key.new").exists()


def test_a_rotation_stopped_after_its_commit_is_finished(
        populated: tuple[App, str, bytes], clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    app, secret, key_blob = populated

    def die(_keys_dir: Path) -> None:
        raise SystemExit("killed between the commit and the rename")

    monkeypatch.setattr(state_keys, "finish_rotation", die)
    with pytest.raises(SystemExit):
        rotate(app, OPERATOR)
    monkeypatch.undo()
    assert (app.settings.keys_dir / "state_key.new").exists()
    restarted = App(app.settings, clock=clock)
    try:
        assert restarted.state_keys.current.key_id in _seal_key_ids(restarted)
        _working(restarted, clock, secret, key_blob)
        restarted.audit_view.verify(OPERATOR)
    finally:
        restarted.close()
    assert not (app.settings.keys_dir / "state_key.new").exists()


def test_a_missing_key_is_a_clear_error(data_dir: Path) -> None:
    (data_dir / "keys" / "state_key").unlink()
    app = App(load_settings(data_dir=data_dir, environ={}))
    try:
        with pytest.raises(ConfigError, match="state key is missing"):
            app.check_ready()
    finally:
        app.close()


def test_an_installation_from_before_signed_state_is_adopted(data_dir: Path,
                                                             clock: FakeClock) -> None:
    settings = load_settings(data_dir=data_dir, environ={})
    app = App(settings, clock=clock)
    partner_with_key(app, "uni")
    new, key = account(app, "lee", Role.PARTNER, partner="uni")
    account(app, "clerk", Role.STAFF)
    secret = new.totp_uri.split("secret=")[1].split("&", maxsplit=1)[0]
    app.close()
    # What 0.1 left: no seals, TOTP secrets in clear, no state key.
    with app.engine.begin() as connection:
        for table in ("partners", "accounts", "ssh_keys", "totp_secrets", "partner_keys"):
            connection.execute(text(f"UPDATE {table} SET seal = NULL"))
        connection.execute(text("UPDATE totp_secrets SET secret = :plain "
                                "WHERE account_id = (SELECT id FROM accounts "
                                "WHERE username = 'lee')"), {"plain": secret})
    (data_dir / "keys" / "state_key").unlink()
    result = initialise(data_dir, admin=None, force=True, environ={})
    assert result.adopted_rows > 0
    adopted = App(settings, clock=clock)
    try:
        assert adopted.integrity.check(OPERATOR).ok
        _working(adopted, clock, secret, key.blob)
        adopted.audit_view.verify(OPERATOR)
        assert audit_events(adopted, "integrity:adopt")[-1]["details"]["rows"] == (
            result.adopted_rows)
    finally:
        adopted.close()
