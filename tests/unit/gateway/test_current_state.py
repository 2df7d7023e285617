"""Current state: an old copy of a sealed row, put back, grants nothing.

Each attack keeps a copy of rows as the gateway sealed them, lets an admin change them
through the gateway (revoke, disable, remove, reset, sign out, narrow), then writes the
old copy back with plain SQL, seal and all, as a database writer with an old backup or a
lasting injection would. The row verifies its seal, but it is not the current version
the audit log records: it must grant nothing, be one ``integrity:violation`` naming the
table and row, and be named by ``integrity check`` and ``audit verify``. Restrictions
must survive deleting or resetting the rows that record them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text

from gateway import console_sessions, totp
from gateway.app import App
from gateway.audit import VerificationError
from gateway.db.models import Account, SSHKey
from gateway.errors import AuthenticationError, GatewayError
from gateway.integrity import STATE_INFO
from gateway.ledger import Ledger
from gateway.resealing import rotate
from tests.conftest import FakeClock
from tests.unit.gateway.factories import (
    OPERATOR,
    actor,
    audit_events,
    ssh_public_key,
)
from tests.unit.gateway.test_integrity import (
    World,
    inject,
    lee_id,
    make_world,
    scalar,
    sign_in,
    upload_to,
)

Rows = list[dict[str, Any]]


@pytest.fixture
def world(app: App, clock: FakeClock) -> World:
    return make_world(app, clock)


def keep(app: App, table: str, where: str, **params: object) -> Rows:
    """A copy of rows as the database holds them now (an attacker's backup)."""
    with app.engine.connect() as connection:
        result = connection.execute(text(f"SELECT * FROM {table} WHERE {where}"), params)
        return [dict(row._mapping) for row in result]


def put_back(app: App, table: str, rows: Rows, key: str = "id") -> None:
    """Write the kept rows back, replacing whatever holds their key now."""
    for row in rows:
        columns = ", ".join(row)
        values = ", ".join(f":{name}" for name in row)
        assignments = ", ".join(f"{name} = :{name}" for name in row)
        with app.engine.begin() as connection:
            updated = connection.execute(
                text(f"UPDATE {table} SET {assignments} WHERE {key} = :{key}"), row)
            if updated.rowcount == 0:
                connection.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({values})"),
                                   row)


def violations(app: App, table: str) -> list[dict[str, Any]]:
    return [event for event in audit_events(app, "integrity:violation")
            if event["details"]["table"] == table]


def _revoked_key_back(world: World) -> tuple[str, str]:
    app = world.app
    key_id = int(scalar(app, "SELECT id FROM partner_keys"))  # type: ignore[arg-type]
    kept = keep(app, "partner_keys", "id = :id", id=key_id)
    app.keys.revoke(actor(app, "root-admin"), key_id=key_id, keep_waiting=True)
    put_back(app, "partner_keys", kept)
    return "partner_keys", str(key_id)


def _upload(world: World) -> None:
    upload_to(world, "uni")


def _disabled_account_back(world: World) -> tuple[str, str]:
    kept = keep(world.app, "accounts", "username = 'lee'")
    world.app.accounts.disable(OPERATOR, username="lee")
    put_back(world.app, "accounts", kept)
    return "accounts", str(lee_id(world.app))


def _removed_key_back(world: World) -> tuple[str, str]:
    app = world.app
    kept = keep(app, "ssh_keys", "account_id = :lee", lee=lee_id(app))
    app.accounts.add_key(OPERATOR, username="lee", key=ssh_public_key("spare"))
    app.accounts.remove_key(OPERATOR, username="lee", fingerprint=world.lee_key.fingerprint)
    put_back(app, "ssh_keys", kept)
    return "ssh_keys", str(kept[0]["id"])


def _reset_secret_back(world: World) -> tuple[str, str]:
    app = world.app
    kept = keep(app, "totp_secrets", "account_id = :lee", lee=lee_id(app))
    app.accounts.reset_totp(OPERATOR, username="lee")
    put_back(app, "totp_secrets", kept, key="account_id")
    return "totp_secrets", str(lee_id(app))


def _narrowed_networks_back(world: World) -> tuple[str, str]:
    app = world.app
    kept = keep(app, "accounts", "username = 'lee'")
    app.accounts.set_allow_from(OPERATOR, username="lee", allow_from="203.0.113.0/24")
    put_back(app, "accounts", kept)
    return "accounts", str(lee_id(app))


@dataclass(frozen=True)
class Rollback:
    """One change undone by writing an old copy back, and the use it must not grant."""

    name: str
    roll_back: Callable[[World], tuple[str, str]]
    use: Callable[[World], object]


ROLLBACKS = [
    Rollback("a revoked recipient key made approved again", _revoked_key_back, _upload),
    Rollback("a disabled account re-enabled", _disabled_account_back, sign_in),
    Rollback("a removed SSH key re-inserted", _removed_key_back, sign_in),
    Rollback("a reset TOTP secret put back", _reset_secret_back, sign_in),
    Rollback("narrowed networks widened again", _narrowed_networks_back, sign_in),
]


@pytest.mark.parametrize("rollback", ROLLBACKS, ids=lambda r: r.name)
def test_an_old_copy_put_back_grants_nothing(world: World, rollback: Rollback) -> None:
    table, row = rollback.roll_back(world)
    with pytest.raises(GatewayError):
        rollback.use(world)
    named = violations(world.app, table)
    assert [event["details"]["row"] for event in named] == [row]
    assert "not current" in named[0]["details"]["reason"]
    report = world.app.integrity.check(OPERATOR)
    assert any(f.table == table and f.row == row and "not current" in f.reason
               for f in report.findings)
    with pytest.raises(VerificationError) as failed:
        world.app.audit_view.verify(OPERATOR)
    assert any(f"{table} row {row}" in problem and "not current" in problem
               for problem in failed.value.problems)


def test_the_current_rows_still_grant(world: World) -> None:
    sign_in(world)
    upload_to(world, "uni")
    assert world.app.integrity.check(OPERATOR).ok
    world.app.audit_view.verify(OPERATOR)


def test_an_ended_console_session_put_back_grants_nothing(world: World) -> None:
    app = world.app
    with app.transaction() as session:
        account_row = session.get(Account, lee_id(app))
        assert account_row is not None
        token, row = console_sessions.open_session(
            session, account_row, stage=console_sessions.Stage.FULL, source="192.0.2.1",
            client="test", now=world.clock())
        session_id = row.id
    kept = keep(app, "console_sessions", "id = :id", id=session_id)
    with app.transaction() as session:
        assert console_sessions.end_all(session, lee_id(app)) == 1
    put_back(app, "console_sessions", kept)
    with app.transaction() as session, pytest.raises(console_sessions.SessionExpiredError):
        console_sessions.load(session, console_sessions.token_id(token), now=world.clock(),
                              integrity=app.integrity)
    assert [e["details"]["row"] for e in violations(app, "console_sessions")] == [session_id]


def test_a_used_code_stays_used_when_the_last_step_is_reset(world: World) -> None:
    sign_in(world)
    inject(world.app, "UPDATE totp_secrets SET last_step = NULL")
    attempt = world.app.auth.begin(source="198.51.100.7")
    world.app.auth.accept_public_key(attempt, username="lee", key_blob=world.lee_key.blob)
    with pytest.raises(AuthenticationError, match="replayed"):
        world.app.auth.accept_code(attempt, username="lee",
                                   code=totp.current_code(world.lee_secret, now=world.clock()))


def test_a_lockout_stays_when_its_rows_are_deleted(world: World) -> None:
    app = world.app
    for _ in range(app.settings.lockout_threshold):
        attempt = app.auth.begin(source="198.51.100.7")
        app.auth.accept_public_key(attempt, username="lee", key_blob=world.lee_key.blob)
        with pytest.raises(AuthenticationError):
            app.auth.accept_code(attempt, username="lee", code="000000")
    inject(app, "DELETE FROM auth_throttle")
    with pytest.raises(AuthenticationError, match="locked"):
        sign_in(world)
    app.auth.unlock(OPERATOR, username="lee")
    sign_in(world)


def test_wrong_codes_keep_counting_when_their_rows_are_deleted(world: World) -> None:
    app = world.app
    for _ in range(app.settings.lockout_threshold):
        attempt = app.auth.begin(source="198.51.100.7")
        app.auth.accept_public_key(attempt, username="lee", key_blob=world.lee_key.blob)
        inject(app, "DELETE FROM auth_throttle")
        with pytest.raises(AuthenticationError):
            app.auth.accept_code(attempt, username="lee", code="000000")
    with pytest.raises(AuthenticationError, match="locked"):
        sign_in(world)


def _download(world: World) -> None:
    handle = world.app.transfers.open_download(actor(world.app, "lee"), "rows.csv.age")
    handle.read_at(0, handle.size)
    handle.close()


def test_a_download_limit_survives_a_reset_count(world: World) -> None:
    _download(world)
    inject(world.app, "UPDATE transfers SET downloads = 0", "DELETE FROM served_ranges")
    with pytest.raises(GatewayError, match="download limit was reached"):
        _download(world)


def test_a_split_download_limit_survives_deleted_ranges(world: World) -> None:
    app = world.app
    first = app.transfers.open_download(actor(app, "lee"), "rows.csv.age")
    half = first.size // 2
    first.read_at(0, half)
    first.close()
    inject(app, "DELETE FROM served_ranges")
    second = app.transfers.open_download(actor(app, "lee"), "rows.csv.age")
    second.read_at(half, second.size - half)
    assert second.close() is True  # The two halves make one download, deleted rows or not.
    with pytest.raises(GatewayError, match="download limit was reached"):
        _download(world)


def test_hit_and_run_fails_audit_verify(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Put a revoked key back for one upload, then the revoked row again: the database
    matches the log afterwards, but the upload's own event names a revoked key. (The
    runtime check is switched off here, as an attacker with the gateway's keys would.)"""
    app = world.app
    key_id = int(scalar(app, "SELECT id FROM partner_keys"))  # type: ignore[arg-type]
    approved = keep(app, "partner_keys", "id = :id", id=key_id)
    app.keys.revoke(actor(app, "root-admin"), key_id=key_id, keep_waiting=True)
    revoked = keep(app, "partner_keys", "id = :id", id=key_id)
    put_back(app, "partner_keys", approved)
    monkeypatch.setattr(Ledger, "stale", lambda *_args, **_kw: None)
    upload_to(world, "uni")
    monkeypatch.undo()
    put_back(app, "partner_keys", revoked)
    assert app.integrity.check(OPERATOR).ok  # Every row is as the log says, now.
    with pytest.raises(VerificationError) as failed:
        app.audit_view.verify(OPERATOR)
    upload = audit_events(app, "file:upload:complete")[-1]
    assert any(f"entry {upload['index']} (file:upload:complete): partner_keys row {key_id}: "
               "state was 'revoked'" in problem for problem in failed.value.problems)


def test_a_restored_old_database_is_refused(world: World, tmp_path: Any) -> None:
    app = world.app
    backup = tmp_path / "old.db"
    raw = app.engine.raw_connection()
    try:
        raw.cursor().execute(f"VACUUM INTO '{backup}'")  # An online copy, as a backup takes.
    finally:
        raw.close()
    app.accounts.disable(OPERATOR, username="clerk")
    app.ledger.catch_up()
    app.close()
    database = app.settings.data_dir / "blindpost.db"
    for suffix in ("-wal", "-shm"):
        (database.parent / (database.name + suffix)).unlink(missing_ok=True)
    backup.replace(database)
    restored = App(app.settings, clock=world.clock)
    try:
        with pytest.raises(GatewayError, match="backup-and-restore"):
            restored.check_ready(serving=True)
        with pytest.raises(GatewayError):
            sign_in(World(restored, world.clock, world.lee_secret, world.lee_key,
                          world.clerk_key))
    finally:
        restored.close()


def test_a_node_starts_from_its_snapshot(world: World) -> None:
    app = world.app
    app.ledger.catch_up()
    app.ledger.save_snapshot()
    assert app.settings.state_snapshot_path.stat().st_mode & 0o777 == 0o600
    upload_to(world, "uni")
    fresh = App(app.settings, clock=world.clock)
    try:
        replayed: list[int] = []
        fresh.ledger._bootstrap = lambda apply: replayed.append(1) or 0  # type: ignore[assignment,func-returns-value]
        assert fresh.ledger.catch_up() == scalar(app, "SELECT max(idx) + 1 FROM audit_entries")
        assert replayed == []
        sign_in(World(fresh, world.clock, world.lee_secret, world.lee_key, world.clerk_key))
    finally:
        fresh.close()


def test_an_unknown_sealed_row_is_not_current_after_the_baseline(world: World) -> None:
    """A row copied from another installation's database (sealed with the same key, as
    a second node's would be) is not in this log: it grants nothing."""
    app = world.app
    spare = ssh_public_key("from elsewhere")
    with app.sessions.begin() as session:
        session.info.pop(STATE_INFO)  # Sealed with the key, but never recorded here.
        session.add(SSHKey(account_id=lee_id(app), key_type=spare.key_type,
                           key_data=spare.data_b64, fingerprint=spare.fingerprint,
                           comment="", created_at=world.clock()))
    row = str(scalar(app, "SELECT id FROM ssh_keys WHERE fingerprint = :fp",
                     fp=spare.fingerprint))
    assert [(f.table, f.row) for f in app.integrity.check(OPERATOR).findings] == [
        ("ssh_keys", row)]
    with pytest.raises(GatewayError):
        sign_in(world, key=spare)


def test_state_key_rotation_is_refused_while_another_process_uses_it(
        world: World, tmp_path: Any) -> None:
    script = ("import sys, time\n"
              "from gateway.app import App\n"
              "from gateway.config import load_settings\n"
              "from pathlib import Path\n"
              "app = App(load_settings(data_dir=Path(sys.argv[1]), environ={}))\n"
              "app.state_keys\n"
              "print('ready', flush=True)\n"
              "sys.stdin.read()\n")
    other = subprocess.Popen([sys.executable, "-c", script, str(world.app.settings.data_dir)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "ready"
        with pytest.raises(GatewayError, match=f"-{other.pid} "):
            rotate(world.app, OPERATOR)
    finally:
        other.communicate("")
    done = rotate(world.app, OPERATOR)
    assert done.rows > 0
    sign_in(world)



def _replays(app: App) -> list[int]:
    """Count the whole-log replays ``app``'s ledger makes from now on."""
    replayed: list[int] = []
    bootstrap = app.ledger._bootstrap

    def counting(apply: Callable[[int, Any], None]) -> int:
        replayed.append(1)
        return bootstrap(apply)

    app.ledger._bootstrap = counting  # type: ignore[method-assign]
    return replayed


def _command_line_follow(world: World) -> App:
    """A process that follows the whole log and never closes its app (as the command
    line's do), on a data directory no snapshot was saved in."""
    app = world.app
    app.ledger.catch_up()
    app.settings.state_snapshot_path.unlink(missing_ok=True)
    short_lived = App(app.settings, clock=world.clock)
    assert short_lived.ledger.catch_up() == scalar(app, "SELECT max(idx) + 1 FROM audit_entries")
    short_lived.engine.dispose()  # No close(): that would save the snapshot.
    return app


def test_a_long_follow_saves_the_snapshot_without_close(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # The test log is short: every follow counts as long.
    monkeypatch.setattr("gateway.ledger.LONG_FOLLOW", 0)
    app = _command_line_follow(world)
    snapshot_file = app.settings.state_snapshot_path
    assert snapshot_file.stat().st_mode & 0o777 == 0o600
    assert not snapshot_file.with_name(snapshot_file.name + ".tmp").exists()
    later = App(app.settings, clock=world.clock)
    try:
        replayed = _replays(later)
        later.ledger.catch_up()
        assert replayed == []
    finally:
        later.close()


def test_a_short_follow_leaves_the_snapshot_to_close(world: World) -> None:
    app = _command_line_follow(world)
    assert not app.settings.state_snapshot_path.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_root_saves_the_snapshot_as_the_data_directorys_owner(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.ledger.LONG_FOLLOW", 0)
    data_dir = world.app.settings.data_dir
    service_user = 65534  # nobody: the service's own account in a real installation
    os.chown(data_dir, service_user, service_user)
    app = _command_line_follow(world)
    snapshot_file = app.settings.state_snapshot_path
    for path in (snapshot_file, snapshot_file.with_name(snapshot_file.name + ".lock")):
        status = path.stat()
        assert (status.st_uid, status.st_gid) == (service_user, service_user), path
        assert status.st_mode & 0o777 == 0o600
