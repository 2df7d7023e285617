"""Faults a running gateway survives: a killed worker process, a PostgreSQL restart, an
SQLite database locked by a backup. Real ``blindpost sftp`` processes throughout."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from paramiko.sftp import CMD_CLOSE

from gateway.db.models import Role
from sftp_server.errors import UNAVAILABLE_MESSAGE
from sftp_server.transport import UNAVAILABLE_TEXT
from tests.integration.gateway_process import (
    VENV_BIN,
    GatewayProcess,
    banner_served_by,
    real_code,
    serving_pid,
    sign_in_within,
    wait_for,
)
from tests.postgres import PostgresServer, create_database
from tests.unit.sftp_server.harness import (
    Installation,
    audit_events,
    openssh_sftp,
    paramiko_sftp,
)

pytestmark = pytest.mark.integration


@contextmanager
def _installation(root: Path, environ: dict[str, str] | None = None) -> Iterator[Installation]:
    inst = Installation(root, environ=environ)
    try:
        inst.add_partner("acme")
        inst.add_user("clerk", Role.STAFF)
        inst.add_user("lee", Role.PARTNER, partner="acme")
        yield inst
    finally:
        inst.close()


def _local_port(sftp: object) -> int:
    channel = sftp.get_channel()  # type: ignore[attr-defined]
    return int(channel.get_transport().sock.getsockname()[1])


def test_a_killed_worker_is_replaced_and_other_sessions_carry_on(tmp_path: Path) -> None:
    with _installation(tmp_path) as inst:
        _kill_a_worker(inst)


def _numpy_loaded(pid: int) -> bool:
    return "_multiarray_umath" in Path(f"/proc/{pid}/maps").read_text()


def _kill_a_worker(inst: Installation) -> None:
    server = GatewayProcess.sftp(inst, workers=2)
    try:
        clerk = inst.users["clerk"]
        with paramiko_sftp(inst, clerk, code=real_code(clerk)) as session:
            workers = server.worker_pids()
            assert len(workers) == 2
            serving = serving_pid(workers, server_port=server.port,
                                  client_port=_local_port(session))
            victim, = (pid for pid in workers if pid != serving)
            os.kill(victim, signal.SIGKILL)
            # The session on the other worker does not notice.
            with session.open("/acme/during.csv", "wb") as handle:
                handle.write(b"id,value\n1,2\n")
            signed_in = sign_in_within(inst, inst.users["lee"], 5, ["ls -1"])
            assert signed_in.returncode == 0, signed_in.stderr
            assert "during.csv.age" in signed_in.stdout
            wait_for(lambda: "is back" in server.output, 5, "the replacement worker")
            replacement, = set(server.worker_pids()) - set(workers)
            # The replacement accepts connections (the kernel spreads them over both).
            wait_for(lambda: banner_served_by(server) == replacement, 10,
                     "a connection to the replacement worker")
            # Every worker, the replacement too, loads the payload check's numpy once it
            # serves, not in the first pre-encrypted upload it receives.
            wait_for(lambda: all(_numpy_loaded(pid) for pid in server.worker_pids()), 20,
                     "numpy loaded by every worker")
        server.stop()
        assert server.process.returncode == 0, server.output
        assert server.leftovers() == []
    finally:
        server.kill()
    restart, = audit_events(inst.app, "service:worker:restart")
    assert restart["details"]["cause"] == "killed by SIGKILL"
    assert (restart["details"]["old_pid"], restart["details"]["new_pid"]) == (victim,
                                                                              replacement)
    took = re.search(r"SFTP worker \d is back: ready ([\d.]+) s after its restart",
                     server.output)
    assert took and float(took.group(1)) < 5


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own, which it stops and starts."""
    server = PostgresServer()
    server.start()
    yield server
    server.remove()


def _no_traceback_flood(server: GatewayProcess) -> None:
    assert "Traceback" not in server.output, server.output
    assert len(server.lines) < 40, server.output


def _stored_objects(inst: Installation) -> int:
    assert list(inst.app.store.partial_dir.iterdir()) == []
    return len(list(inst.app.store.list_objects()))


def test_postgres_restart_under_a_running_gateway(tmp_path: Path,
                                                  postgres: PostgresServer) -> None:
    environ = {"BLINDPOST_DATABASE_URL": create_database(postgres.url, "blindpost")}
    with _installation(tmp_path, environ) as inst:
        _restart_postgres(inst, postgres)
    verified = subprocess.run([str(VENV_BIN / "blindpost"), "audit", "verify",
                               "--data-dir", str(tmp_path / "var")],
                              env={**os.environ, **environ}, capture_output=True, text=True,
                              check=False)
    assert verified.returncode == 0, verified.stderr


def _restart_postgres(inst: Installation, postgres: PostgresServer) -> None:
    server = GatewayProcess.sftp(inst, workers=2)
    clerk, lee = inst.users["clerk"], inst.users["lee"]
    try:
        with paramiko_sftp(inst, clerk, code=real_code(clerk)) as session:
            with session.open("/acme/before.csv", "wb") as handle:
                handle.write(b"id\n1\n")
            cut = session.open("/acme/cut.csv", "wb")
            cut.write(os.urandom(1 << 20))
            postgres.stop()
            refused = openssh_sftp(inst, lee, ["ls"], code=real_code(lee))
            assert refused.returncode != 0
            assert UNAVAILABLE_TEXT in refused.stderr
            with pytest.raises(OSError, match=re.escape(UNAVAILABLE_MESSAGE)):
                session.open("/acme/during.csv", "wb")
            cut.write(b"the rest")
            # paramiko's client swallows errors on close, so ask for the status directly.
            with pytest.raises(OSError, match=re.escape(UNAVAILABLE_MESSAGE)):
                session._request(CMD_CLOSE, cut.handle)
            postgres.start()
            # The same session, on the same worker, works again: no restart needed.
            with session.open("/acme/after.csv", "wb") as handle:
                handle.write(b"id\n2\n")
        listing = openssh_sftp(inst, lee, ["ls -1"], code=real_code(lee))
        assert listing.returncode == 0, listing.stderr
        assert listing.stdout.split()[-2:] == ["after.csv.age", "before.csv.age"]
        server.stop()
        assert server.process.returncode == 0, server.output
    finally:
        server.kill()
    _no_traceback_flood(server)
    assert "the database is unavailable" in server.output
    assert _stored_objects(inst) == 2


@contextmanager
def _backup_lock(database: Path, *, release_after: float | None = None) -> Iterator[None]:
    """Hold SQLite's write lock as a backup script that copies the files would."""
    connection = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    connection.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(release_after or 0, connection.commit)
    if release_after is not None:
        timer.start()
    try:
        yield
    finally:
        timer.cancel()
        connection.commit()
        connection.close()


def test_sqlite_locked_by_a_backup(tmp_path: Path) -> None:
    with _installation(tmp_path) as inst:
        _lock_sqlite(inst)


def _lock_sqlite(inst: Installation) -> None:
    server = GatewayProcess.sftp(inst, workers=2,
                                 env={"BLINDPOST_SQLITE_BUSY_TIMEOUT_SECONDS": "4"})
    database = inst.data_dir / "blindpost.db"
    clerk, lee = inst.users["clerk"], inst.users["lee"]
    try:
        # A lock shorter than the busy timeout is waited out.
        with _backup_lock(database, release_after=1.5):
            waited = openssh_sftp(inst, lee, ["ls"], code=real_code(lee))
        assert waited.returncode == 0, waited.stderr
        # A longer one ends in a clear refusal; once it is gone, sign-ins work again.
        with _backup_lock(database):
            refused = openssh_sftp(inst, clerk, ["ls"], code=real_code(clerk))
        assert refused.returncode != 0
        assert UNAVAILABLE_TEXT in refused.stderr
        signed_in = openssh_sftp(inst, clerk, ["ls"], code=real_code(clerk))
        assert signed_in.returncode == 0, signed_in.stderr
        server.stop()
        assert server.process.returncode == 0, server.output
    finally:
        server.kill()
    _no_traceback_flood(server)
    assert "database is locked" in server.output
