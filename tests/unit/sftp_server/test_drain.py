"""Stopping the SFTP server drains it: transfers under way may finish, the rest are aborted.

The server runs in this process (threads), so each stop is quick to observe; the same
drain runs in every worker process of ``blindpost sftp`` (see tests/integration).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from paramiko.ssh_exception import SSHException

from gateway.db.models import Role
from sftp_server.server import STOPPED_REASON, STOPPING_MESSAGE
from tests.unit.sftp_server.harness import Installation, audit_events, paramiko_sftp

MIB = 1 << 20


def _installation(root: Path, drain: int) -> Installation:
    inst = Installation(root, shutdown_drain_seconds=drain)
    inst.add_partner("acme")
    inst.add_user("clerk", Role.STAFF)
    inst.add_user("lee", Role.PARTNER, partner="acme")
    inst.start()
    return inst


@pytest.fixture
def inst(tmp_path: Path) -> Iterator[Installation]:
    installation = _installation(tmp_path, drain=10)
    yield installation
    installation.close()


def _stop_in_background(inst: Installation) -> tuple[threading.Thread, list[float]]:
    """Ask the server to stop; the thread ends when it has stopped, noting how long it took."""
    assert inst.server is not None
    server, took = inst.server, []
    server.stop()
    started = time.monotonic()

    def wait() -> None:
        server.wait()
        took.append(time.monotonic() - started)

    thread = threading.Thread(target=wait)
    thread.start()
    return thread, took


def _names(inst: Installation) -> list[str]:
    return [f.name for f in inst.app.transfers.inbox(inst.actor(inst.users["lee"]))]


def test_an_upload_under_way_finishes_and_new_files_are_refused(inst: Installation) -> None:
    data = os.urandom(3 * MIB)
    with paramiko_sftp(inst, inst.users["clerk"]) as sftp:
        handle = sftp.open("/acme/extract.csv", "wb")
        handle.write(data[:MIB])
        stopping, took = _stop_in_background(inst)
        with pytest.raises(OSError, match=STOPPING_MESSAGE):
            sftp.open("/acme/another.csv", "wb")
        assert sftp.listdir("/acme") == []  # Reading still works while draining.
        handle.write(data[MIB:])
        handle.close()
        stopping.join(timeout=20)
    assert took and took[0] < 5
    inst.server = None
    assert _names(inst) == ["extract.csv.age"]
    assert audit_events(inst.app, "file:upload:complete")[-1]["details"]["name"] == (
        "extract.csv.age")
    assert audit_events(inst.app, "file:upload:aborted") == []


def test_an_upload_still_open_when_the_drain_ends_is_aborted(tmp_path: Path) -> None:
    inst = _installation(tmp_path, drain=1)
    try:
        with paramiko_sftp(inst, inst.users["clerk"]) as sftp:
            handle = sftp.open("/acme/extract.csv", "wb")
            handle.write(os.urandom(MIB))
            stopping, took = _stop_in_background(inst)
            stopping.join(timeout=20)
            inst.server = None
            with pytest.raises((OSError, EOFError, SSHException)):
                handle.write(os.urandom(MIB))  # More than paramiko buffers: it is sent.
        assert took and 1 <= took[0] < 5
        assert _names(inst) == []
        assert list(inst.app.store.partial_dir.iterdir()) == []
        assert list(inst.app.store.list_objects()) == []
        aborted = audit_events(inst.app, "file:upload:aborted")
        assert [e["details"]["reason"] for e in aborted] == [STOPPED_REASON]
    finally:
        inst.close()


def test_idle_sessions_and_unfinished_sign_ins_do_not_hold_the_stop(inst: Installation) -> None:
    with paramiko_sftp(inst, inst.users["lee"]) as sftp, \
            socket.create_connection(("127.0.0.1", inst.port)) as half_open:
        assert sftp.listdir("/") == []
        stopping, took = _stop_in_background(inst)
        stopping.join(timeout=20)
        inst.server = None
        assert took and took[0] < 3
        with pytest.raises((OSError, EOFError, SSHException)):
            sftp.listdir("/")
        half_open.settimeout(5)
        assert half_open.recv(100).startswith(b"SSH-2.0-Blindpost")
        assert half_open.recv(100) == b""  # Closed by the server.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", inst.port), timeout=2)
