"""Uploads that wait for the store wait before their next write is read (issue 21).

On S3 the uploads of a process share a few part buffers. An upload that finds none free
used to wait inside a write: with the write (up to 255 KiB) and its sealed chunks in hand,
so that every waiting session grew the process. The server now queues the session's
upload for its store (``Upload.ready``) when the next request is a write, before reading
it; what the client sent stays in the channel, within its window, and the session's
thread keeps no earlier request meanwhile. Three sessions upload at once through one part
buffer; no part buffer is ever waited for inside a write or with a write in hand, and
every file arrives intact.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from gateway.db.models import Role
from gateway.store.s3 import PartBuffers
from sftp_server.handles import UploadHandle
from tests.s3 import create_bucket, s3_settings
from tests.unit.sftp_server.harness import (
    Installation,
    assert_delivered,
    paramiko_sftp,
    upload_at_once,
)

pytestmark = pytest.mark.integration
KIB = 1 << 10
MIB = 1 << 20
SESSIONS = 3
# Two parts of 6 MiB and a last one (5 MiB parts cannot be sent early, see gateway.store.s3).
SIZE = 13 * MIB


@pytest.fixture
def inst(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[Installation]:
    installation = Installation(tmp_path_factory.mktemp("queue"),
                                **s3_settings(s3_endpoint, create_bucket(s3_endpoint)),
                                s3_part_size_mib=6, s3_part_buffers=1)
    installation.add_partner("acme")
    installation.add_user("clerk", Role.STAFF)
    installation.add_user("lee", Role.PARTNER, partner="acme")
    installation.start()
    yield installation
    installation.close()


def test_uploads_queue_for_the_store_before_taking_a_write(
        inst: Installation, monkeypatch: pytest.MonkeyPatch) -> None:
    writing = threading.local()
    takes: list[bool] = []  # For each part buffer taken: whether inside a write.
    handle_write, take = UploadHandle.write, PartBuffers.take

    def spy_write(handle: UploadHandle, offset: int, data: bytes | memoryview) -> int:
        writing.on = True
        try:
            return handle_write(handle, offset, data)
        finally:
            writing.on = False

    def spy_take(buffers: PartBuffers,
                 before_waiting: Callable[[], None] | None = None) -> bytearray:
        takes.append(getattr(writing, "on", False))
        return take(buffers, before_waiting)

    held: list[int] = []  # Sizes of requests the session's thread kept while it queued.
    handle_ready = UploadHandle.ready

    # Replies the session still held back when its upload was about to wait.
    unsent: list[int] = []

    def spy_ready(handle: UploadHandle,
                  before_waiting: Callable[[], None] | None = None) -> None:
        frame = sys._getframe(1)
        while frame is not None:
            held.extend(len(value) for value in frame.f_locals.values()
                        if isinstance(value, bytes | memoryview) and len(value) > 16 * KIB)
            frame = frame.f_back
        assert before_waiting is not None

        def announced() -> None:
            before_waiting()
            unsent.append(len(before_waiting.__self__._held_replies))  # type: ignore[attr-defined]

        handle_ready(handle, announced)

    monkeypatch.setattr(UploadHandle, "write", spy_write)
    monkeypatch.setattr(UploadHandle, "ready", spy_ready)
    monkeypatch.setattr(PartBuffers, "take", spy_take)
    files = {f"part-{n}.bin": os.urandom(SIZE + 1000 * n) for n in range(SESSIONS)}
    with ExitStack() as stack:
        clients = [stack.enter_context(paramiko_sftp(inst, inst.users["clerk"]))
                   for _ in files]
        upload_at_once(clients, files, "acme", timeout=60)
    # Each upload took the buffer at least once per part, never inside a write.
    assert len(takes) >= SESSIONS * 3
    assert not any(takes)
    # Nor did a queued session keep its last write (paramiko's request loop did), nor
    # the replies to its earlier ones.
    assert held == []
    assert unsent and not any(unsent)
    assert_delivered(inst, inst.users["lee"], files, "acme")
