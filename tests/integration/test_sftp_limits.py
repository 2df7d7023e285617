"""Limits through real SFTP sessions: a full disk, the size cap, the reorder buffer, idleness.

Each failure must give the client a clear error and leave nothing behind: no visible
file, no partial object, no transfer row, and an ``file:upload:aborted`` audit entry.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest
from paramiko.sftp import CMD_CLOSE

from gateway.db.models import Role
from gateway.store import LocalStore
from sftp_server.budget import ENTRY_OVERHEAD
from sftp_server.errors import SFTP_OK
from tests.unit.sftp_server.harness import Installation, RawSFTP, audit_events, paramiko_sftp

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
    inst = _installation(tmp_path, max_upload_mib=1, sftp_reorder_buffer_mib=1)
    inst.start()
    yield inst
    inst.close()


@pytest.fixture
def short_idle(tmp_path: Path) -> Iterator[Installation]:
    # Only the idle test gets a 1 s limit: on a busy machine a pause of a second between
    # two requests of the other tests would end their session (seen under pytest-xdist).
    inst = _installation(tmp_path, sftp_idle_timeout_seconds=1)
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
        full = "out-of-order writes of this upload"
        with pytest.raises(OSError, match=full):  # noqa: PT012  # Fails on the Nth write.
            for _ in range(24):
                handle.write(b"y" * (64 * 1024))
                handle.flush()
        # paramiko's client swallows errors on close, so ask for the status directly.
        with pytest.raises(OSError, match="nothing was stored"):
            sftp._request(CMD_CLOSE, handle.handle)
    _nothing_left(inst)


def test_idle_session_is_closed(short_idle: Installation) -> None:
    inst = short_idle
    with paramiko_sftp(inst, inst.users["lee"]) as sftp:
        assert sftp.listdir("/") == []
        time.sleep(2.5)
        with pytest.raises((OSError, EOFError, paramiko.SSHException)):
            sftp.listdir("/")


# -- hostile pipelined writes (issue 15, point 3) -------------------------------------

class Statuses:
    """Reads every status a session sends back, in a thread, while the test pipelines."""

    def __init__(self, raw: RawSFTP) -> None:
        self.replies: list[tuple[int, int, str]] = []
        self._raw = raw
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(EOFError, OSError):
            while True:
                self.replies.append(self._raw.status())

    def wait_for(self, count: int) -> list[tuple[int, int, str]]:
        deadline = time.monotonic() + 60
        while len(self.replies) < count:
            assert time.monotonic() < deadline, f"{len(self.replies)} of {count} replies"
            time.sleep(0.05)
        return sorted(self.replies)


def _gapped_writes(raw: RawSFTP, handles: list[bytes], count: int, first_id: int) -> int:
    """Pipeline ``count`` one-byte writes per handle, each leaving a gap before it (none
    can be passed on until offset 0 arrives, which never does). Returns the next id."""
    request_id, batch = first_id, []
    for index in range(count):
        for handle in handles:
            batch.append(raw.write_packet(handle, 2 * index + 1, b"x", request_id))
            request_id += 1
        if len(batch) >= 256:
            raw.send_raw(b"".join(batch))
            batch.clear()
    raw.send_raw(b"".join(batch))
    return request_id


@pytest.fixture
def small_buffers(tmp_path: Path) -> Iterator[Installation]:
    inst = _installation(tmp_path, sftp_reorder_buffer_mib=4, sftp_session_buffer_mib=1,
                         sftp_process_buffer_mib=2)
    inst.start()
    yield inst
    inst.close()


def _accepted_before_refusal(replies: list[tuple[int, int, str]]) -> tuple[int, str]:
    refused = next(i for i, (_, code, _) in enumerate(replies) if code != SFTP_OK)
    assert all(code == SFTP_OK for _, code, _ in replies[:refused])
    return refused, replies[refused][2]


def test_gapped_one_byte_writes_on_many_handles_hit_the_session_budget(
        small_buffers: Installation) -> None:
    """The attack: 8 handles, each sent thousands of one-byte writes that all leave a
    gap. Each write costs ~160 bytes of bookkeeping; the session's 1 MiB, counted with
    that overhead, is full after exactly 1 MiB / 161 held writes, whichever handles
    hold them. Every upload then aborts, audited, and nothing is stored."""
    inst = small_buffers
    raw = RawSFTP(inst, "clerk")
    try:
        handles = [raw.open_upload(f"/acme/hostile-{n}.csv", n) for n in range(8)]
        statuses = Statuses(raw)
        last = _gapped_writes(raw, handles, 1500, first_id=100)
        replies = statuses.wait_for(last - 100)
    finally:
        raw.close()
    accepted, message = _accepted_before_refusal(replies)
    assert accepted == MIB // (1 + ENTRY_OVERHEAD)
    assert message.startswith("write at offset ")
    assert "the buffer for out-of-order writes of this session (1 MiB) is full" in message
    _wait(lambda: len(audit_events(inst.app, "file:upload:aborted")) == 8)
    reasons = [e["details"]["reason"] for e in audit_events(inst.app, "file:upload:aborted")]
    assert any("this session (1 MiB) is full" in reason for reason in reasons)
    _nothing_left(inst)


def test_sessions_together_hit_the_process_budget_and_get_it_back(
        small_buffers: Installation) -> None:
    inst = small_buffers
    per_session = 6000  # 6000 x 161 bytes: within one session's 1 MiB.
    first, second, third = (RawSFTP(inst, "clerk") for _ in range(3))
    try:
        for raw in (first, second):
            handle = raw.open_upload("/acme/hold.csv", 1)
            statuses = Statuses(raw)
            _gapped_writes(raw, [handle], per_session, first_id=10)
            assert all(code == SFTP_OK for _, code, _ in statuses.wait_for(per_session))
        more, after = (third.open_upload(f"/acme/{name}.csv", n)
                       for n, name in enumerate(("more", "after")))
        statuses = Statuses(third)
        _gapped_writes(third, [more], per_session, first_id=10)
        accepted, message = _accepted_before_refusal(statuses.wait_for(per_session))
        assert accepted == 2 * MIB // (1 + ENTRY_OVERHEAD) - 2 * per_session
        assert "of this server process (2 MiB) is full" in message
        first.close()  # Its upload is abandoned and its memory given back.
        _wait(lambda: len(audit_events(inst.app, "file:upload:aborted")) == 2)
        _gapped_writes(third, [after], per_session, first_id=20_000)
        assert all(code == SFTP_OK for request, code, _ in statuses.wait_for(2 * per_session)
                   if request >= 20_000)
    finally:
        for raw in (first, second, third):
            raw.close()


def _wait(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
