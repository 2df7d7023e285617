"""The object-store contract, run against every backend: the local directory and S3.

S3 runs against a moto server started by the tests (real HTTP), built through the same
factory (``store_url``) that an installation uses.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.errors import NotFoundError, StorageError
from gateway.store import ObjectStore, open_store
from gateway.store.s3 import PartBuffers, S3Store
from tests.s3 import create_bucket, s3_settings

MIB = 1 << 20
PART = 5 * MIB


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    overrides: dict[str, object] = {"store_url": f"file://{tmp_path / 'store'}"}
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        overrides = {**s3_settings(endpoint, create_bucket(endpoint)), "s3_part_size_mib": 5,
                     "max_upload_mib": 1024}
    return open_store(load_settings(data_dir=tmp_path, environ={}, overrides=overrides))


def _put(store: ObjectStore, data: bytes, chunk: int = 65536) -> str:
    pending = store.create()
    for start in range(0, len(data), chunk):
        pending.write(memoryview(data)[start:start + chunk])
    return pending.commit().object_id


def _read_all(store: ObjectStore, object_id: str) -> bytes:
    reader = store.open(object_id)
    try:
        return reader.read_at(0, reader.size + 10)
    finally:
        reader.close()


def _future() -> datetime:
    return datetime.now(UTC) + timedelta(minutes=5)


def test_put_commit_get(store: ObjectStore) -> None:
    pending = store.create()
    pending.write(b"hello ")
    pending.write(memoryview(b"world"))
    stored = pending.commit()
    assert stored.size == 11
    assert stored.sha256 == "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    assert _read_all(store, stored.object_id) == b"hello world"
    assert [info.object_id for info in store.list_objects()] == [stored.object_id]
    assert [info.size for info in store.list_objects()] == [11]


def test_empty_object(store: ObjectStore) -> None:
    stored = store.create().commit()
    assert (stored.size, stored.sha256) == (0, hashlib.sha256().hexdigest())
    assert _read_all(store, stored.object_id) == b""


def test_large_object_in_several_parts(store: ObjectStore) -> None:
    data = os.urandom(2 * PART + 12345)
    object_id = _put(store, data)
    assert _read_all(store, object_id) == data
    reader = store.open(object_id)
    rng = random.Random(7)
    for _ in range(40):  # Reads jumping around, and reads in order that continue a stream.
        offset = rng.choice([0, MIB - 3, PART, len(data) - 5, rng.randrange(len(data))])
        length = rng.choice([1, 7, 255 * 1024, MIB + 1])
        assert reader.read_at(offset, length) == data[offset:offset + length]
        offset = min(offset + length, len(data))
        assert reader.read_at(offset, length) == data[offset:offset + length]
    reader.close()


def test_uncommitted_object_is_invisible_and_swept(store: ObjectStore) -> None:
    """A crash between write and commit: nothing listed, nothing openable, sweep removes it."""
    pending = store.create()
    pending.write(b"x" * 1000)
    # No commit: the process "dies" here.
    assert list(store.list_objects()) == []
    with pytest.raises(NotFoundError):
        store.open(pending.object_id)
    assert store.sweep_partials(older_than=_future()) == [pending.object_id]
    assert store.sweep_partials(older_than=_future()) == []


def test_sweep_keeps_recent_partials(store: ObjectStore) -> None:
    """An upload that wrote recently survives the sweep.

    More than one part is written: on S3 an upload's age is that of its newest part
    (or its start, before the first part), and moto reports a fixed start time in 2010.
    """
    pending = store.create()
    pending.write(b"x" * (PART + 11))
    assert store.sweep_partials(older_than=datetime.now(UTC) - timedelta(hours=1)) == []
    assert pending.commit().size == PART + 11


def test_abort_removes_everything(store: ObjectStore) -> None:
    pending = store.create()
    pending.write(b"abc")
    pending.abort()
    pending.abort()
    assert store.sweep_partials(older_than=_future()) == []
    assert list(store.list_objects()) == []
    with pytest.raises(StorageError):
        pending.write(b"more")


def test_delete_discards_an_uncommitted_object(store: ObjectStore) -> None:
    """The sweep of pending ids deletes what a crashed upload left: partial data goes too."""
    pending = store.create()
    pending.write(os.urandom(PART + 1000))
    assert store.delete(pending.object_id) is True
    assert store.delete(pending.object_id) is False
    assert store.sweep_partials(older_than=_future()) == []
    with pytest.raises(StorageError):
        pending.commit()
    assert list(store.list_objects()) == []


def test_ids_are_random_and_not_paths(store: ObjectStore) -> None:
    ids = {store.create().object_id for _ in range(20)}
    assert len(ids) == 20
    for bad in ("../../etc/passwd", "a" * 31, "A" * 32, "", "0" * 31 + "/"):
        with pytest.raises(NotFoundError):
            store.open(bad)


def test_missing_object(store: ObjectStore) -> None:
    with pytest.raises(NotFoundError):
        store.open("0" * 32)


def test_concurrent_puts(store: ObjectStore) -> None:
    results: list[tuple[str, bytes]] = []
    lock = threading.Lock()

    def put(n: int) -> None:
        data = bytes([n]) * (70_000 + n)
        object_id = _put(store, data, chunk=4096)
        with lock:
            results.append((object_id, data))

    threads = [threading.Thread(target=put, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    for object_id, data in results:
        assert _read_all(store, object_id) == data


@pytest.mark.parametrize(("offset", "length", "expected"), [
    (0, 0, b""), (0, 1, b"0"), (9, 1, b"9"), (9, 5, b"9"), (10, 5, b""), (3, 4, b"3456"),
    (100, 5, b""),
])
def test_ranged_reads_at_boundaries(store: ObjectStore, offset: int, length: int,
                                    expected: bytes) -> None:
    reader = store.open(_put(store, b"0123456789"))
    assert reader.size == 10
    assert reader.read_at(offset, length) == expected
    reader.close()


def test_negative_range_is_refused(store: ObjectStore) -> None:
    reader = store.open(_put(store, b"abc"))
    with pytest.raises(StorageError):
        reader.read_at(-1, 2)
    reader.close()


def test_delete(store: ObjectStore) -> None:
    object_id = _put(store, b"x")
    assert store.delete(object_id) is True
    assert store.delete(object_id) is False
    assert list(store.list_objects()) == []
    with pytest.raises(NotFoundError):
        store.open(object_id)


def test_s3_upload_memory_is_bounded_by_one_part(tmp_path: Path, s3_endpoint: str) -> None:
    """Streaming 8 parts through S3 holds about one part in memory, not the object."""
    settings = load_settings(data_dir=tmp_path, environ={}, overrides={
        **s3_settings(s3_endpoint, create_bucket(s3_endpoint)), "s3_part_size_mib": 5,
                     "max_upload_mib": 1024})
    store = open_store(settings)
    assert isinstance(store, S3Store)
    chunk = os.urandom(65536)
    tracemalloc.start()
    try:
        pending = store.create()
        for _ in range(8 * PART // len(chunk)):
            pending.write(chunk)
        pending.commit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * PART, f"peak {peak / MIB:.1f} MiB for 40 MiB in 5 MiB parts"


def test_s3_server_side_encryption_is_requested(tmp_path: Path, s3_endpoint: str) -> None:
    bucket = create_bucket(s3_endpoint)
    settings = load_settings(data_dir=tmp_path, environ={}, overrides={
        **s3_settings(s3_endpoint, bucket), "s3_sse": "AES256"})
    store = open_store(settings)
    assert isinstance(store, S3Store)
    object_id = _put(store, b"ciphertext")
    head = store.client.head_object(Bucket=bucket, Key=store.key(object_id))
    assert head["ServerSideEncryption"] == "AES256"


def test_s3_unreachable_bucket_is_one_clear_error(tmp_path: Path, s3_endpoint: str) -> None:
    settings = load_settings(data_dir=tmp_path, environ={}, overrides={
        **s3_settings(s3_endpoint, "no-such-bucket")})
    store = open_store(settings)
    with pytest.raises(StorageError, match="cannot create object: S3 error NoSuchBucket"):
        store.create()
    with pytest.raises(StorageError, match="cannot sweep partial uploads: S3 error NoSuch"):
        store.sweep_partials(older_than=_future())


def test_s3_concurrent_uploads_share_a_bounded_set_of_part_buffers(
        tmp_path: Path, s3_endpoint: str) -> None:
    """Issue 21: six uploads at once with two part buffers all complete, intact, and the
    process never holds more than the two buffers for parts."""
    settings = load_settings(data_dir=tmp_path, environ={}, overrides={
        **s3_settings(s3_endpoint, create_bucket(s3_endpoint)), "s3_part_size_mib": 5,
        "s3_part_buffers": 2, "max_upload_mib": 1024})
    store = open_store(settings)
    assert isinstance(store, S3Store)
    datas = [os.urandom(2 * PART + 1000 * n) for n in range(6)]
    results: dict[int, str] = {}
    most = [0]

    def put(n: int) -> None:
        pending = store.create()
        for start in range(0, len(datas[n]), 255 * 1024):
            pending.write(datas[n][start:start + 255 * 1024])
            most[0] = max(most[0], store.parts.in_use)
        results[n] = pending.commit().object_id

    threads = [threading.Thread(target=put, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 2 and store.parts.in_use == 0
    for n, object_id in results.items():
        assert _read_all(store, object_id) == datas[n]


def test_part_buffers_go_round_in_order_and_a_long_wait_is_refused() -> None:
    buffers = PartBuffers(part_size=16, count=1, wait_seconds=0.2)
    first = buffers.take()
    order: list[int] = []

    def wait_turn(n: int) -> None:
        buffer = buffers.take()
        order.append(n)
        buffers.give_back(buffer)

    waiters = []
    for n in range(3):
        waiters.append(threading.Thread(target=wait_turn, args=(n,)))
        waiters[-1].start()
        while buffers.waiting < n + 1:
            time.sleep(0.001)
    buffers.give_back(first)
    for thread in waiters:
        thread.join()
    assert order == [0, 1, 2] and buffers.in_use == 0
    held = buffers.take()
    with pytest.raises(StorageError, match="the server is busy: all 1 S3 part buffers"):
        buffers.take()
    buffers.give_back(held)
    assert len(buffers.take()) == 16


def test_s3_download_survives_a_stream_the_server_closed(tmp_path: Path,
                                                         s3_endpoint: str) -> None:
    """Reads in order continue one GET; if it was closed meanwhile (a client that paused
    past the server's idle limit), the next read starts a new one where it stopped."""
    store = open_store(load_settings(data_dir=tmp_path, environ={}, overrides={
        **s3_settings(s3_endpoint, create_bucket(s3_endpoint))}))
    assert isinstance(store, S3Store)
    data = os.urandom(3 * MIB)
    reader = store.open(_put(store, data))
    assert reader.read_at(0, MIB) == data[:MIB]
    stream = reader._stream  # The stream the server would drop.
    stream.close()
    assert reader.read_at(MIB, 2 * MIB) == data[MIB:]
    assert reader._stream is not stream
    reader.close()


def test_s3_ready_takes_the_part_buffer_before_a_write_not_during_it(
        tmp_path: Path, s3_endpoint: str) -> None:
    """Issue 21: an upload that calls ``ready`` before each write (as the SFTP server
    does) waits for a part buffer there, never in a write with its data in hand; the
    parts it sends early are valid S3 parts and the objects arrive intact. (6 MiB parts:
    a part of S3's smallest size, 5 MiB, cannot be sent early.)"""
    settings = load_settings(data_dir=tmp_path, environ={}, overrides={
        **s3_settings(s3_endpoint, create_bucket(s3_endpoint)), "s3_part_size_mib": 6,
        "s3_part_buffers": 1, "max_upload_mib": 1024})
    store = open_store(settings)
    assert isinstance(store, S3Store)
    taking, in_write = store.parts.take, threading.local()
    taken_in_write: list[int] = []

    def take(before_waiting: Callable[[], None] | None = None) -> bytearray:
        if getattr(in_write, "n", None) is not None:
            taken_in_write.append(in_write.n)
        return taking(before_waiting)

    store.parts.take = take  # type: ignore[method-assign]
    # Writes of an SFTP write sealed: never a multiple of the part size.
    write = 255 * 1024 + 5 * 16
    datas = [os.urandom(3 * PART + 12345 * n) for n in range(3)]
    results: dict[int, str] = {}

    def put(n: int) -> None:
        pending = store.create()
        for start in range(0, len(datas[n]), write):
            pending.ready()
            in_write.n = n
            pending.write(datas[n][start:start + write])
            in_write.n = None
        results[n] = pending.commit().object_id

    threads = [threading.Thread(target=put, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert taken_in_write == []
    assert store.parts.in_use == 0
    assert all(len(buffer) == store.parts.part_size for buffer in store.parts._free)
    for n, object_id in results.items():
        assert _read_all(store, object_id) == datas[n]


def test_local_ready_waits_for_nothing(tmp_path: Path) -> None:
    store = open_store(load_settings(data_dir=tmp_path, environ={}, overrides={
        "store_url": f"file://{tmp_path / 'store'}"}))
    pending = store.create()
    pending.ready()
    pending.write(b"ciphertext")
    pending.ready(before_waiting=lambda: pytest.fail("a local upload never waits"))
    assert _read_all(store, pending.commit().object_id) == b"ciphertext"


def test_a_wait_for_a_part_buffer_is_announced_first() -> None:
    """The SFTP server sends the replies it holds back before an upload waits for a
    buffer (``before_waiting``), not after: a buffer free at once announces nothing."""
    buffers = PartBuffers(part_size=16, count=1, wait_seconds=5)
    announced: list[int] = []
    first = buffers.take(lambda: announced.append(1))
    assert announced == []
    taken: list[bytearray] = []
    waiting = threading.Thread(target=lambda: taken.append(
        buffers.take(lambda: announced.append(buffers.waiting))))
    waiting.start()
    deadline = time.monotonic() + 5
    while buffers.waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    # Announced before it joined the queue, and still waiting.
    assert announced == [0] and taken == []
    buffers.give_back(first)
    waiting.join(5)
    assert taken == [first]
