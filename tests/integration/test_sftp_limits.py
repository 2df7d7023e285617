"""Limits through real SFTP sessions: a full disk, the size cap, the reorder buffer, idleness.

Each failure must give the client a clear error and leave nothing behind: no visible
file, no partial object, no transfer row, and an ``file:upload:aborted`` audit entry.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from paramiko.sftp import CMD_CLOSE

from gateway.db.models import Role
from gateway.store import LocalStore
from tests.unit.sftp_server.harness import Installation, audit_events, paramiko_sftp

pytestmark = pytest.mark.integration
MIB = 1 << 20


def _installation(root: Path, **settings: object) -> Installation:
    inst = Installation(root, **settings)
    inst.add_partner("acme")
    inst.add_user("clerk", Role.STAFF)
    inst.add_user("lee", Role.PARTNER, partner="acme")
    return inst


def _nothing_left(inst: Installation) -> None:
    assert list(inst.app.store.partial_dir.iterdir()) == []
    assert list(inst.app.store.list_objects()) == []
    assert inst.app.transfers.inbox(inst.actor(inst.users["lee"])) == []


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Installation]:
    """An installation whose store is a 1 MiB tmpfs (mounting needs root, as CI runs)."""
    if os.geteuid() != 0:
        pytest.fail("the full-disk test mounts a tmpfs and must run as root (as `make test` "
                    "does in CI)")
    inst = _installation(tmp_path)
    store_dir = inst.settings.store_dir
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(store_dir)],
                   check=True)
    try:
        LocalStore(store_dir)  # The store's folders, now on the small filesystem.
        inst.start()
        yield inst
    finally:
        inst.close()
        subprocess.run(["umount", str(store_dir)], check=True)


def test_full_disk_fails_cleanly_and_loses_nothing(full_disk: Installation) -> None:
    inst = full_disk
    with paramiko_sftp(inst, inst.users["clerk"]) as sftp:
        with (pytest.raises(OSError, match="the object store is full"),
              sftp.open("/acme/too-big.csv", "wb") as handle):
            handle.write(os.urandom(3 * MIB))
        _nothing_left(inst)
        aborted = audit_events(inst.app, "file:upload:aborted")[-1]["details"]
        assert "full" in aborted["reason"]
        # The disk has room again once the failed upload is gone: a small file still works.
        with sftp.open("/acme/small.csv", "wb") as handle:
            handle.write(b"id,value\n1,2\n")
    assert [f.name for f in inst.app.transfers.inbox(inst.actor(inst.users["lee"]))] == [
        "small.csv.age"]


@pytest.fixture
def small_limits(tmp_path: Path) -> Iterator[Installation]:
    inst = _installation(tmp_path, max_upload_mib=1, sftp_reorder_buffer_mib=1,
                         sftp_idle_timeout_seconds=1)
    inst.start()
    yield inst
    inst.close()


def test_size_cap(small_limits: Installation) -> None:
    inst = small_limits
    with (paramiko_sftp(inst, inst.users["clerk"]) as sftp,
          pytest.raises(OSError, match=r"maximum upload size \(1 MiB\)"),
          sftp.open("/acme/big.csv", "wb") as handle):
        handle.write(b"x" * (MIB + 1))
    _nothing_left(inst)


def test_reorder_buffer_overflow(small_limits: Installation) -> None:
    inst = small_limits
    with paramiko_sftp(inst, inst.users["clerk"]) as sftp:
        handle = sftp.open("/acme/holey.csv", "wb")
        # Leave a gap at the start and send more than the 1 MiB buffer after it.
        handle.seek(64 * 1024)
        with pytest.raises(OSError, match="reorder"):  # noqa: PT012  # Fails on the Nth write.
            for _ in range(24):
                handle.write(b"y" * (64 * 1024))
                handle.flush()
        # paramiko's client swallows errors on close, so ask for the status directly.
        with pytest.raises(OSError, match="nothing was stored"):
            sftp._request(CMD_CLOSE, handle.handle)
    _nothing_left(inst)


def test_idle_session_is_closed(small_limits: Installation) -> None:
    inst = small_limits
    with paramiko_sftp(inst, inst.users["lee"]) as sftp:
        assert sftp.listdir("/") == []
        time.sleep(2.5)
        with pytest.raises((OSError, EOFError, paramiko.SSHException)):
            sftp.listdir("/")
