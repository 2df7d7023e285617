"""Disabling an account or a partner ends its open SFTP sessions within seconds.

Real SFTP sessions (paramiko as the client) against the server in this process, and
against two separate ``blindpost sftp`` nodes (one with two worker processes) that
share the database: the change is made in the test process, and every node hears of it
through the database alone.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import paramiko
import pytest

from gateway import totp
from gateway.db.models import Role
from sftp_server.listener import SESSION_CHECK_SECONDS
from tests.unit.gateway.factories import OPERATOR
from tests.unit.sftp_server.harness import Installation, User, audit_events, paramiko_sftp

pytestmark = pytest.mark.integration
VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"
# The check runs every SESSION_CHECK_SECONDS; the session's supervisor hangs up within a
# second of it. Generous for a loaded CI machine, and still "within seconds".
WITHIN = SESSION_CHECK_SECONDS + 8


def _ended(client: paramiko.SFTPClient) -> bool:
    transport = client.get_channel().get_transport()
    return not transport.is_active()


def _wait_until_ended(clients: list[paramiko.SFTPClient]) -> float:
    started = time.monotonic()
    while not all(_ended(client) for client in clients):
        assert time.monotonic() - started < WITHIN, "the sessions were not ended in time"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture
def inst(tmp_path: Path) -> Iterator[Installation]:
    installation = Installation(tmp_path)
    installation.add_partner("acme")
    installation.add_user("clerk", Role.STAFF)
    installation.add_user("lee", Role.PARTNER, partner="acme")
    yield installation
    installation.close()


def test_disabling_ends_open_sessions_and_aborts_their_uploads(inst: Installation) -> None:
    inst.start()
    with (paramiko_sftp(inst, inst.users["clerk"]) as clerk,
          paramiko_sftp(inst, inst.users["lee"]) as lee):
        upload = clerk.open("/acme/half.csv", "wb")
        upload.write(b"row\n" * 1000)
        upload.flush()
        assert lee.listdir("/") == []
        inst.app.accounts.disable(OPERATOR, username="clerk")
        _wait_until_ended([clerk])
        assert lee.listdir("/") == []  # Another account's session goes on.
        inst.app.partners.disable(OPERATOR, slug="acme")
        _wait_until_ended([lee])
    aborted = audit_events(inst.app, "file:upload:aborted")
    assert [e["details"]["reason"] for e in aborted] == ["session ended: account disabled"]
    ended = audit_events(inst.app, "auth:session:ended")
    assert [(e["subject"], e["details"]["reason"]) for e in ended] == [
        ("account:clerk", "account disabled"), ("account:lee", "partner disabled")]
    assert list(inst.app.store.list_objects()) == []


def _start_node(inst: Installation, workers: int) -> tuple[subprocess.Popen[str], int]:
    server = subprocess.Popen(
        [str(VENV_BIN / "blindpost"), "sftp", "--data-dir", str(inst.data_dir),
         "--listen", "127.0.0.1:0", "--workers", str(workers)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "BLINDPOST_DATA_DIR": str(inst.data_dir)})
    assert server.stdout is not None
    line = server.stdout.readline()
    found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    assert found, line + server.stdout.read()
    return server, int(found.group(1))


def _session(stack: ExitStack, inst: Installation, user: User,
             port: int) -> paramiko.SFTPClient:
    inst.port = port
    code = totp.current_code(user.secret, now=datetime.now(UTC))
    return stack.enter_context(paramiko_sftp(inst, user, code=code))


def test_every_node_and_worker_ends_the_sessions(inst: Installation) -> None:
    partners = [inst.add_user(f"p{n}", Role.PARTNER, partner="acme") for n in range(5)]
    nodes = [_start_node(inst, workers=2), _start_node(inst, workers=1)]
    try:
        with ExitStack() as stack:
            sessions = [_session(stack, inst, user, nodes[n % 2][1])
                        for n, user in enumerate(partners)]
            clerk = _session(stack, inst, inst.users["clerk"], nodes[1][1])
            assert all(session.listdir("/") == [] for session in sessions)
            assert clerk.listdir("/") == ["acme"]
            inst.app.partners.disable(OPERATOR, slug="acme")
            _wait_until_ended(sessions)
            assert clerk.listdir("/") == []  # Staff go on, without the disabled partner.
            inst.app.accounts.disable(OPERATOR, username="clerk")
            _wait_until_ended([clerk])
    finally:
        for server, _port in nodes:
            os.killpg(server.pid, signal.SIGTERM)
            server.communicate(timeout=30)
    ended = audit_events(inst.app, "auth:session:ended")
    assert sorted(e["subject"] for e in ended) == sorted(
        [f"account:p{n}" for n in range(5)] + ["account:clerk"])
