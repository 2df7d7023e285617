"""An upload cut off in the middle leaves no visible file and, after a sweep, nothing.

Two cuts: the client is killed (the server aborts the upload when the session ends),
and the whole server (parent and worker processes) is killed and started again (the
partial object stays invisible and the purger removes it).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway import totp
from gateway.app import App
from gateway.db.models import Role
from tests.unit.sftp_server.harness import (
    Installation,
    User,
    askpass_script,
    audit_events,
    openssh_sftp,
    require_tool,
)

pytestmark = pytest.mark.integration
VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


def _wait_for(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _partials(inst: Installation) -> list[Path]:
    return [p for p in inst.app.store.partial_dir.iterdir() if p.stat().st_size > 0]


def _slow_upload(inst: Installation, user: User, code: str) -> subprocess.Popen[str]:
    """An OpenSSH upload of 8 MiB throttled to about 500 kB/s, left running."""
    source = inst.root / "big.bin"
    source.write_bytes(os.urandom(8 << 20))
    batch = inst.root / "upload.txt"
    batch.write_text("put big.bin /acme/big.bin\n")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(inst.root), "DISPLAY": ":0",
           "SSH_ASKPASS": str(askpass_script(inst.root, code)), "SSH_ASKPASS_REQUIRE": "force"}
    return subprocess.Popen(
        [require_tool("sftp"), "-o", "BatchMode=no", "-b", str(batch), "-l", "4000",
         "-P", str(inst.port), "-i", str(user.key_path), "-F", "/dev/null",
         "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={inst.known_hosts()}",
         f"{user.username}@127.0.0.1"],
        env=env, cwd=inst.root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def _assert_nothing_visible(app: App, inst: Installation) -> None:
    clerk = inst.actor(inst.users["clerk"])
    assert app.transfers.inbox(clerk, "acme") == []
    assert list(app.store.list_objects()) == []


@pytest.fixture
def inst(tmp_path: Path) -> Iterator[Installation]:
    installation = Installation(tmp_path)
    installation.add_partner("acme")
    installation.add_user("clerk", Role.STAFF)
    installation.add_user("lee", Role.PARTNER, partner="acme")
    yield installation
    installation.close()


def test_client_killed_mid_upload_leaves_nothing(inst: Installation) -> None:
    inst.start()
    client = _slow_upload(inst, inst.users["clerk"], inst.code(inst.users["clerk"]))
    try:
        _wait_for(lambda: bool(_partials(inst)))
    finally:
        client.kill()
        client.communicate()
    _wait_for(lambda: bool(audit_events(inst.app, "file:upload:aborted")))
    assert not any(inst.app.store.partial_dir.iterdir())
    _assert_nothing_visible(inst.app, inst)
    aborted = audit_events(inst.app, "file:upload:aborted")[-1]["details"]
    assert aborted["reason"] == "connection closed before the file was closed"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(inst: Installation) -> subprocess.Popen[str]:
    """``blindpost sftp`` with two worker processes, in its own process group."""
    server = subprocess.Popen(
        [str(VENV_BIN / "blindpost"), "sftp", "--data-dir", str(inst.data_dir),
         "--listen", f"127.0.0.1:{inst.port}", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "BLINDPOST_DATA_DIR": str(inst.data_dir)})
    assert server.stdout is not None
    line = server.stdout.readline()
    assert "listening" in line, line + server.stdout.read()
    return server


def _real_code(user: User) -> str:
    return totp.current_code(user.secret, now=datetime.now(UTC))


def test_server_killed_mid_upload_leaves_nothing_after_restart(inst: Installation) -> None:
    inst.port = _free_port()
    server = _start_server(inst)
    client = _slow_upload(inst, inst.users["clerk"], _real_code(inst.users["clerk"]))
    try:
        _wait_for(lambda: bool(_partials(inst)))
        os.killpg(server.pid, signal.SIGKILL)
        server.communicate()
        assert client.wait(timeout=30) != 0
    finally:
        client.kill()
        client.communicate()
    leftovers = _partials(inst)
    assert leftovers, "the kill should have left a partial object behind"
    server = _start_server(inst)
    try:
        listing = openssh_sftp(inst, inst.users["lee"], ["ls -l"],
                               code=_real_code(inst.users["lee"]))
        assert listing.returncode == 0, listing.stderr
        assert "big.bin" not in listing.stdout
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.communicate(timeout=30)
    app = App(inst.settings)
    try:
        _assert_nothing_visible(app, inst)
        # The killed upload's object was recorded as pending: the sweep finds it without
        # listing the store.
        assert app.retention.purge(upload_grace=timedelta(0)).swept == 1
        assert not any(app.store.partial_dir.iterdir())
        assert list(app.store.list_objects()) == []
    finally:
        app.close()
