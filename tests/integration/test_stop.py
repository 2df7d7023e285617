"""Stopping ``blindpost sftp`` as systemd, a container runtime or Ctrl-C do, and stopping it
during large uploads: it exits 0 within the drain time plus a few seconds, leaves no
process behind, never leaves a partial file visible, and signs a last checkpoint."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.app import App
from gateway.db.models import Role, Transfer
from sftp_server.server import STOPPED_REASON, STOPPING_MESSAGE
from tests.integration.gateway_process import (
    GatewayProcess,
    real_code,
    throttled_upload,
    wait_for,
)
from tests.unit.sftp_server.harness import (
    Installation,
    audit_events,
    openssh_sftp,
    paramiko_sftp,
    require_tool,
)

pytestmark = pytest.mark.integration
MIB = 1 << 20
DEFAULT_DRAIN = 10
# Past the drain: a worker's grace to abort and exit, and the shutdown checkpoint.
BOUND_SLACK = 6


@pytest.fixture
def inst(tmp_path: Path) -> Iterator[Installation]:
    installation = Installation(tmp_path)
    installation.add_partner("acme")
    for name in ("clerk", "clerk2"):
        installation.add_user(name, Role.STAFF)
    installation.add_user("lee", Role.PARTNER, partner="acme")
    yield installation
    installation.close()


def _assert_stopped_and_checkpointed(inst: Installation, *, reason: str) -> None:
    stop, = audit_events(inst.app, "service:stop")
    assert stop["details"]["component"] == "sftp" and stop["details"]["reason"] == reason
    with inst.app.transaction() as session:
        size = inst.app.audit.size(session)
        latest = inst.app.audit.latest_checkpoint(session)
    assert latest is not None
    # The shutdown checkpoint covers everything up to its own entry, the stop included.
    assert latest.checkpoint.size == size - 1 > stop["index"]


@pytest.mark.parametrize(("signum", "group"), [
    (signal.SIGTERM, True),   # systemctl stop (KillMode=control-group), docker stop
    (signal.SIGTERM, False),  # KillMode=mixed, kill PID
    (signal.SIGINT, True),    # Ctrl-C in a terminal
], ids=["SIGTERM-to-group", "SIGTERM-to-main", "SIGINT-to-group"])
def test_sftp_stops_cleanly(inst: Installation, signum: signal.Signals, group: bool) -> None:
    server = GatewayProcess.sftp(inst, workers=2)
    try:
        listing = openssh_sftp(inst, inst.users["lee"], ["ls"],
                               code=real_code(inst.users["lee"]))
        assert listing.returncode == 0, listing.stderr
        # An idle signed-in session must not hold the stop up.
        with paramiko_sftp(inst, inst.users["clerk"], code=real_code(inst.users["clerk"])):
            took = server.stop(signum, group=group)
        assert server.process.returncode == 0, server.output
        assert took < DEFAULT_DRAIN + BOUND_SLACK
        assert server.leftovers() == []
    finally:
        server.kill()
    assert "Traceback" not in server.output
    assert audit_events(inst.app, "service:start")[0]["details"]["workers"] == 2
    _assert_stopped_and_checkpointed(inst, reason=signum.name)


def test_sftp_signs_due_checkpoints_while_it_runs(inst: Installation) -> None:
    """The time-based checkpoint does not depend on `serve`: a quiet `blindpost sftp`
    signs the entries of a sign-in within audit_checkpoint_seconds plus a tick."""
    server = GatewayProcess.sftp(inst, workers=2, env={"BLINDPOST_AUDIT_CHECKPOINT_SECONDS": "3"})
    try:
        # A fresh checkpoint (by the real clock, as the server's): the sign-in's own
        # entries then find none due, and only the timer can sign them, since nothing is
        # appended after them.
        real_clock = App(inst.settings)
        with real_clock.transaction() as session:
            real_clock.audit.checkpoint(session)
        real_clock.close()
        listing = openssh_sftp(inst, inst.users["lee"], ["ls"],
                               code=real_code(inst.users["lee"]))
        assert listing.returncode == 0, listing.stderr
        login, = audit_events(inst.app, "auth:login:success")

        def signed() -> bool:
            with inst.app.transaction() as session:
                latest = inst.app.audit.latest_checkpoint(session)
            return latest is not None and latest.checkpoint.size > login["index"]

        wait_for(signed, 10, "a checkpoint covering the sign-in")
        assert server.process.poll() is None
        server.stop()
    finally:
        server.kill()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def _partials(inst: Installation) -> int:
    return sum(1 for p in inst.app.store.partial_dir.iterdir() if p.stat().st_size > 0)


def _decrypted_sha256(inst: Installation, name: str) -> str:
    with inst.app.transaction() as session:
        object_id = session.scalar(select(Transfer.object_id).where(Transfer.name == name))
    assert object_id is not None
    plain = inst.root / "decrypted.bin"
    subprocess.run([require_tool("age"), "-d", "-i", str(inst.age_identity_file("acme")),
                    "-o", str(plain), str(inst.app.store.object_path(object_id))], check=True)
    return hashlib.sha256(plain.read_bytes()).hexdigest()


def test_stop_during_100_mib_uploads(inst: Installation) -> None:
    """One upload finishes within the drain and is stored whole; one cannot and is
    aborted; neither is ever visible half-written."""
    drain = 5
    source = inst.root / "extract.bin"
    data = os.urandom(100 * MIB)
    source.write_bytes(data)
    server = GatewayProcess.sftp(inst, workers=2,
                                 env={"BLINDPOST_SHUTDOWN_DRAIN_SECONDS": str(drain)})
    throttled = throttled_upload(inst, source, "/acme/throttled.bin")
    try:
        wait_for(lambda: _partials(inst) == 1, what="the throttled upload under way")
        with paramiko_sftp(inst, inst.users["clerk2"],
                           code=real_code(inst.users["clerk2"])) as sftp:
            handle = sftp.open("/acme/drained.bin", "wb")
            handle.set_pipelined(True)
            for offset in range(0, 99 * MIB, MIB):
                handle.write(data[offset:offset + MIB])
            os.killpg(server.pid, signal.SIGTERM)
            # The signal reaches each worker in its own time: once no process accepts on
            # the port, every worker is draining (on a busy machine an open sent at once
            # could still arrive before that).
            wait_for(lambda: _refused(inst.port), what="the workers stopped accepting")
            with pytest.raises(OSError, match=STOPPING_MESSAGE):
                sftp.open("/acme/late.bin", "wb")
            assert _names(inst) == []  # Nothing is visible before it is committed.
            handle.write(data[99 * MIB:])
            handle.close()
        server.process.wait(drain + BOUND_SLACK)
        assert server.process.returncode == 0, server.output
        assert throttled.wait(30) != 0
        assert server.leftovers() == []
    finally:
        throttled.kill()
        throttled.communicate()
        server.kill()
    assert _names(inst) == ["drained.bin.age"]
    assert _decrypted_sha256(inst, "drained.bin.age") == hashlib.sha256(data).hexdigest()
    aborted, = audit_events(inst.app, "file:upload:aborted")
    assert aborted["details"]["name"] == "throttled.bin.age"
    assert aborted["details"]["reason"] == STOPPED_REASON
    assert list(inst.app.store.partial_dir.iterdir()) == []
    assert len(list(inst.app.store.list_objects())) == 1
    _assert_stopped_and_checkpointed(inst, reason="SIGTERM")


def _names(inst: Installation) -> list[str]:
    return [f.name for f in inst.app.transfers.inbox(inst.actor(inst.users["lee"]))]
