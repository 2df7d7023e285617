"""``encrypt -o`` / ``decrypt -o`` in ranges of chunks, a worker process per core
(:mod:`gateway.client.ranges`): the same bytes as the streaming path, and a damaged
chunk anywhere refuses the file and leaves nothing behind."""

from __future__ import annotations

import collections
import errno
import io
import itertools
import os
import select
import signal
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli import conversions
from gateway.cli.program import main
from gateway.client import ranges
from gateway.client.files import atomic_output
from gateway.envelope import (
    CHUNK_SIZE,
    ENCRYPTED_CHUNK_SIZE,
    Decryptor,
    Encryptor,
    Identity,
    PayloadError,
    PayloadSealer,
    generate_identity,
)
from gateway.envelope import encrypt as encrypt_module

ROOT = Path(__file__).resolve().parents[4]

_SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE,
          7 * CHUNK_SIZE + 5, (3 << 20) + 12_345, 5 << 20]


@pytest.fixture(scope="module")
def identity() -> Identity:
    return generate_identity(post_quantum=False)


@pytest.fixture
def same_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every new file gets the same file key and payload nonce, so that two ways of
    writing it can be compared byte for byte."""
    fixed = types.SimpleNamespace(urandom=lambda size: bytes(range(size)))
    monkeypatch.setattr(encrypt_module, "os", fixed)


def _payload(age_file: bytes) -> bytes:
    """The payload nonce and chunks of a binary age file (the header's stanzas differ
    from file to file: each wraps the key with a fresh ephemeral share)."""
    mac_line = age_file.index(b"\n---") + 1
    return age_file[age_file.index(b"\n", mac_line) + 1:]


def _in_ranges(tmp_path: Path, plain: bytes, identity: Identity, workers: int) -> bytes:
    source = tmp_path / "plain"
    source.write_bytes(plain)
    sealed = tmp_path / "sealed.age"
    with source.open("rb") as handle, atomic_output(sealed, durable=False) as sink, \
            PayloadSealer([identity.recipient]) as sealer:
        ranges.encrypt_file(handle.fileno(), sink.fd, sealer, workers=workers)
    return sealed.read_bytes()


def _streamed(plain: bytes, identity: Identity) -> bytes:
    out = io.BytesIO()
    with Encryptor(out, [identity.recipient]) as encryptor:
        encryptor.write(plain)
    return out.getvalue()


def _open_in_ranges(tmp_path: Path, sealed: bytes, identity: Identity,
                    workers: int) -> bytes:
    source = tmp_path / "in.age"
    source.write_bytes(sealed)
    out = tmp_path / "opened"
    with source.open("rb") as handle, Decryptor(handle, [identity]) as decryptor, \
            atomic_output(out, durable=False) as sink:
        ranges.decrypt_file(handle.fileno(), sink.fd, decryptor, workers=workers)
    return out.read_bytes()


@pytest.mark.usefixtures("same_keys")
@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("size", _SIZES)
def test_ranges_write_the_bytes_the_stream_writes(tmp_path: Path, identity: Identity,
                                                  size: int, workers: int) -> None:
    plain = os.urandom(size)
    sealed = _in_ranges(tmp_path, plain, identity, workers)
    assert _payload(sealed) == _payload(_streamed(plain, identity))
    assert Decryptor(io.BytesIO(sealed), [identity]).read() == plain
    assert _open_in_ranges(tmp_path, _streamed(plain, identity), identity, workers) == plain


def _damaged_in_second_range(identity: Identity, *, chunks: int
                             ) -> tuple[bytes, bytes, int]:
    """A file of ``chunks`` full chunks with one byte flipped in the middle chunk of
    the second of two ranges; its plaintext, and the offset of that chunk in it."""
    plain = os.urandom(chunks * CHUNK_SIZE)
    sealed = bytearray(_streamed(plain, identity))
    start = len(sealed) - chunks * ENCRYPTED_CHUNK_SIZE
    victim = chunks // 2 + chunks // 4
    sealed[start + victim * ENCRYPTED_CHUNK_SIZE + 100] ^= 1
    return bytes(sealed), plain, victim * CHUNK_SIZE


def test_a_damaged_chunk_in_the_second_range_refuses_the_file(tmp_path: Path,
                                                              identity: Identity) -> None:
    sealed, plain, at = _damaged_in_second_range(identity, chunks=40)
    source = tmp_path / "in.age"
    source.write_bytes(sealed)
    sink_path = tmp_path / "sink"
    with source.open("rb") as handle, Decryptor(handle, [identity]) as decryptor, \
            sink_path.open("wb") as sink, pytest.raises(PayloadError, match="damaged"):
        ranges.decrypt_file(handle.fileno(), sink.fileno(), decryptor, workers=2)
    # Verified chunks may have been written (the caller's temporary file is removed),
    # but nothing of the failed one: not its plaintext, and not what the flipped byte
    # turned it into.
    written = sink_path.read_bytes()
    assert written[:CHUNK_SIZE] == plain[:CHUNK_SIZE]
    assert not any(written[at:at + CHUNK_SIZE])
    assert plain[at + 200:at + 300] not in written


@pytest.mark.parametrize("cut", ["chunk boundary", "inside a chunk", "trailing data"])
def test_a_cut_or_extended_file_is_refused(tmp_path: Path, identity: Identity,
                                           cut: str) -> None:
    sealed = _streamed(os.urandom(9 * CHUNK_SIZE), identity)
    changed = {"chunk boundary": sealed[:-ENCRYPTED_CHUNK_SIZE],
               "inside a chunk": sealed[:-1000],
               "trailing data": sealed + b"x" * 100}[cut]
    with pytest.raises(PayloadError):
        _open_in_ranges(tmp_path, changed, identity, workers=2)
    assert not (tmp_path / "opened").exists()


def _run(args: list[str]) -> Result:
    return CliRunner().invoke(main, args)


@pytest.fixture
def three_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conversions, "range_workers", lambda: 3)


@pytest.mark.usefixtures("three_ranges")
def test_decrypt_o_refuses_a_damaged_chunk_and_leaves_no_file(tmp_path: Path,
                                                              identity: Identity) -> None:
    key = tmp_path / "k.key"
    key.write_text(identity.to_secret_string() + "\n")
    sealed, _, _ = _damaged_in_second_range(identity, chunks=30)
    (tmp_path / "f.age").write_bytes(sealed)
    result = _run(["decrypt", "-i", str(key), "-o", str(tmp_path / "out"),
                   str(tmp_path / "f.age")])
    assert result.exit_code == 1
    assert result.stderr == "blindpost: error: payload is damaged or truncated\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.age", "k.key"]


@pytest.mark.usefixtures("three_ranges")
def test_encrypt_o_from_a_file_goes_in_ranges_and_stdin_streams(
        tmp_path: Path, identity: Identity, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = ranges.encrypt_file

    def counted(*args: object, **kwargs: object) -> None:
        calls.append(1)
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(conversions, "encrypt_file", counted)
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(CHUNK_SIZE * 5 + 3))
    recipient = str(identity.recipient)
    assert _run(["encrypt", "-r", recipient, "-o", str(tmp_path / "a.age"),
                 str(plain)]).exit_code == 0
    assert calls == [1]
    streamed = CliRunner().invoke(main, ["encrypt", "-r", recipient, "-o",
                                         str(tmp_path / "b.age"), "-"],
                                  input=plain.read_bytes())
    assert streamed.exit_code == 0
    assert calls == [1]
    for name in ("a.age", "b.age"):
        opened = Decryptor(io.BytesIO((tmp_path / name).read_bytes()), [identity]).read()
        assert opened == plain.read_bytes()


def test_input_that_changes_size_is_refused(tmp_path: Path, identity: Identity,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(3 * CHUNK_SIZE))
    real_fstat = os.fstat
    sizes = iter([3 * CHUNK_SIZE, 3 * CHUNK_SIZE + 1])

    def growing(fd: int) -> os.stat_result:
        result = real_fstat(fd)
        if fd == source:
            values = list(result)
            values[6] = next(sizes)
            return os.stat_result(values)
        return result

    with plain.open("rb") as handle, (tmp_path / "out").open("wb") as sink, \
            PayloadSealer([identity.recipient]) as sealer:
        source = handle.fileno()
        monkeypatch.setattr(ranges.os, "fstat", growing)
        with pytest.raises(ranges.ChangedInputError, match="changed size"):
            ranges.encrypt_file(source, sink.fileno(), sealer, workers=2)


@pytest.mark.parametrize(("error", "refused"), [(errno.ENOSPC, True), (errno.EOPNOTSUPP, False)])
def test_a_full_disk_fails_before_any_work_and_no_allocation_is_no_error(
        tmp_path: Path, identity: Identity, monkeypatch: pytest.MonkeyPatch, error: int,
        refused: bool) -> None:
    def cannot(_fd: int, _offset: int, _size: int) -> None:
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(ranges.os, "posix_fallocate", cannot)
    plain = os.urandom(3 * CHUNK_SIZE + 1)
    if refused:
        with pytest.raises(OSError, match="No space left"):
            _in_ranges(tmp_path, plain, identity, workers=2)
        assert not (tmp_path / "sealed.age").exists()
    else:
        sealed = _in_ranges(tmp_path, plain, identity, workers=2)
        assert Decryptor(io.BytesIO(sealed), [identity]).read() == plain


class _Log:
    """Lines appended by any of the workers (each line one ``write`` of an ``O_APPEND``
    file, so lines from different processes never mix)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def add(self, *fields: object) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, (" ".join(map(str, fields)) + "\n").encode())
        finally:
            os.close(fd)

    def lines(self) -> list[list[str]]:
        return [line.split() for line in self.path.read_text().splitlines()]


def test_a_worker_held_back_leaves_the_other_batches_to_the_rest(
        tmp_path: Path, identity: Identity) -> None:
    """Batches are handed out as workers ask for them: while the worker holding the
    first batch is stopped, the other (another process) takes every other batch, and
    the file is whole."""
    plain = os.urandom(10 * ranges._BATCH * CHUNK_SIZE + 7)  # 11 batches, the last short
    source = tmp_path / "plain"
    source.write_bytes(plain)
    rest_done, say_rest_done = os.pipe()
    sealed_by = _Log(tmp_path / "sealed-by")

    class HeldBack(PayloadSealer):
        def seal_at(self, first: int, chunks: encrypt_module.Buffer,
                    out: encrypt_module.Buffer, *, final: bool) -> int:
            sealed_by.add(os.getpid())
            if first == 0:
                ready, _, _ = select.select([rest_done], [], [], 10)
                assert ready, "the other worker did not take the other batches"
            written = super().seal_at(first, chunks, out, final=final)
            if final:
                os.write(say_rest_done, b"x")
            return written

    try:
        with source.open("rb") as handle, \
                atomic_output(tmp_path / "sealed.age", durable=False) as sink, \
                HeldBack([identity.recipient]) as sealer:
            ranges.encrypt_file(handle.fileno(), sink.fd, sealer, workers=2)
    finally:
        os.close(rest_done)
        os.close(say_rest_done)
    counts = collections.Counter(pid for pid, in sealed_by.lines())
    assert sorted(counts.values()) == [1, 10]
    assert str(os.getpid()) in counts  # This process is one of the two workers.
    opened = Decryptor(io.BytesIO((tmp_path / "sealed.age").read_bytes()), [identity])
    assert opened.read() == plain


def test_one_worker_writes_at_a_time_and_each_batch_whole(
        tmp_path: Path, identity: Identity, monkeypatch: pytest.MonkeyPatch,
        helper_seals_first: type[PayloadSealer]) -> None:
    """The workers' writes never overlap (a process spinning in the kernel for the
    file's lock costs more than waiting on ours), and a batch's writes are not
    interleaved with another batch's."""
    log = _Log(tmp_path / "writes")
    real = ranges.write_at

    def watched(fd: int, data: memoryview, offset: int) -> None:
        began = time.monotonic_ns()  # One clock for every process.
        time.sleep(0.002)  # Long enough for the other worker to arrive.
        real(fd, data, offset)
        log.add(os.getpid(), began, time.monotonic_ns())

    monkeypatch.setattr(ranges, "write_at", watched)
    plain = os.urandom(6 * ranges._BATCH * CHUNK_SIZE + 5)
    source = tmp_path / "plain"
    source.write_bytes(plain)
    with source.open("rb") as handle, \
            atomic_output(tmp_path / "sealed.age", durable=False) as sink, \
            helper_seals_first([identity.recipient]) as sealer:
        ranges.encrypt_file(handle.fileno(), sink.fd, sealer, workers=2)
    writes = sorted((int(began), int(ended), pid) for pid, began, ended in log.lines())
    # The header, then one call per batch (its pieces together), from both workers.
    assert len(writes) == 1 + 7
    assert len({pid for _, _, pid in writes}) == 2
    for (_, ended, _), (began, _, _) in itertools.pairwise(writes):
        assert ended <= began
    sealed = (tmp_path / "sealed.age").read_bytes()
    assert Decryptor(io.BytesIO(sealed), [identity]).read() == plain


@pytest.fixture
def helper_seals_first(tmp_path: Path) -> Iterator[type[PayloadSealer]]:
    """A sealer under which this process's first batch waits until a helper has begun
    one, so that the helper surely takes part however late the scheduler runs it."""
    parent = os.getpid()
    began, say_began = os.pipe()

    class WaitingForAHelper(PayloadSealer):
        def seal_at(self, first: int, chunks: encrypt_module.Buffer,
                    out: encrypt_module.Buffer, *, final: bool) -> int:
            if os.getpid() != parent:
                os.write(say_began, b"x")
            elif first == 0:
                ready, _, _ = select.select([began], [], [], 10)
                assert ready, "no helper sealed a batch"
            return super().seal_at(first, chunks, out, final=final)

    try:
        yield WaitingForAHelper
    finally:
        os.close(began)
        os.close(say_began)


def _failing_in_a_helper(base: type[PayloadSealer],
                         failure: Callable[[], None]) -> type[PayloadSealer]:
    """A ``base`` sealer that calls ``failure`` when a helper process (not this one)
    seals."""
    parent = os.getpid()

    class Failing(base):  # type: ignore[valid-type,misc]
        def seal_at(self, first: int, chunks: encrypt_module.Buffer,
                    out: encrypt_module.Buffer, *, final: bool) -> int:
            written: int = super().seal_at(first, chunks, out, final=final)
            if os.getpid() != parent:
                failure()
            return written

    return Failing


def _encrypt_with(tmp_path: Path, sealer_type: type[PayloadSealer], identity: Identity,
                  *, workers: int = 2) -> None:
    source = tmp_path / "plain"
    source.write_bytes(os.urandom(8 * ranges._BATCH * CHUNK_SIZE))
    with source.open("rb") as handle, \
            atomic_output(tmp_path / "sealed.age", durable=False) as sink, \
            sealer_type([identity.recipient]) as sealer:
        ranges.encrypt_file(handle.fileno(), sink.fd, sealer, workers=workers)


def _no_children_left() -> bool:
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_a_helpers_failure_is_raised_here_and_leaves_no_file(
        tmp_path: Path, identity: Identity, helper_seals_first: type[PayloadSealer]) -> None:
    def disk_error() -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    with pytest.raises(OSError, match="Input/output error") as raised:
        _encrypt_with(tmp_path, _failing_in_a_helper(helper_seals_first, disk_error),
                      identity)
    assert raised.value.errno == errno.EIO
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]
    assert _no_children_left()


def test_a_helper_that_ends_without_a_word_fails_the_file(
        tmp_path: Path, identity: Identity, helper_seals_first: type[PayloadSealer]) -> None:
    def killed() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(ranges.HelperLostError, match="signal 9"):
        _encrypt_with(tmp_path, _failing_in_a_helper(helper_seals_first, killed), identity)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]
    assert _no_children_left()


class _NeedsAWordError(Exception):
    """Cannot be rebuilt from its arguments (nor, so, unpickled)."""

    def __init__(self, message: str, *, word: str) -> None:
        super().__init__(message)
        self.word = word


@pytest.mark.parametrize(("raised", "said"), [
    ("a local class", "a helper process failed: LocalError: x"),
    ("a class that cannot be rebuilt", "a helper process failed: _NeedsAWordError: y"),
])
def test_a_helpers_failure_of_another_kind_fails_the_file_naming_it(
        tmp_path: Path, identity: Identity, helper_seals_first: type[PayloadSealer],
        raised: str, said: str) -> None:
    class LocalError(Exception):
        pass

    def failure() -> None:
        if raised == "a local class":
            raise LocalError("x")
        raise _NeedsAWordError("y", word="z")

    with pytest.raises(ranges.HelperLostError, match=said):
        _encrypt_with(tmp_path, _failing_in_a_helper(helper_seals_first, failure), identity)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]


@pytest.mark.parametrize("failure", [
    OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/out/x.age"),
    OSError(errno.EIO, os.strerror(errno.EIO)),
    ranges.ChangedInputError("the input file changed\nwhile it was read"),
    PayloadError("chunk 7 failed to verify"),
    KeyboardInterrupt(),
])
def test_what_a_helper_says_is_text_the_parent_raises_again(failure: BaseException) -> None:
    """A helper's failure crosses the pipe as lines of text (nothing is pickled) and
    comes back as the same kind with the same message."""
    reasons, tell = os.pipe()
    ranges._tell(tell, failure)
    os.close(tell)
    said = ranges._read_all(reasons)
    os.close(reasons)
    assert b"\x80" not in said and said.decode("utf-8")
    again = ranges._failure(said, 1 << 8)
    assert type(again) is type(failure)
    assert str(again) == str(failure).replace("\n", " ")
    if isinstance(failure, OSError):
        assert isinstance(again, OSError)
        assert (again.errno, again.filename) == (failure.errno, failure.filename)


def test_a_failure_here_ends_the_helpers(tmp_path: Path, identity: Identity) -> None:
    parent = os.getpid()

    class FailingHere(PayloadSealer):
        def seal_at(self, first: int, chunks: encrypt_module.Buffer,
                    out: encrypt_module.Buffer, *, final: bool) -> int:
            if os.getpid() == parent:
                raise KeyboardInterrupt
            time.sleep(0.05)  # The helper is still at work when this process fails.
            return super().seal_at(first, chunks, out, final=final)

    with pytest.raises(KeyboardInterrupt):
        _encrypt_with(tmp_path, FailingHere, identity)
    assert _no_children_left()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]


def test_a_helper_whose_parent_is_gone_takes_no_batch(tmp_path: Path) -> None:
    """A helper left behind by a parent that was killed stops instead of sealing the
    rest of the file into a temporary file no one will rename."""
    layout = ranges._Layout(0, CHUNK_SIZE, 0, ENCRYPTED_CHUNK_SIZE, 3 * CHUNK_SIZE, 3)
    board = ranges._Board(2)
    taken: list[int] = []

    def transform(first: int, data: memoryview, out: memoryview, final: bool) -> int:
        taken.append(first)
        return 0

    source = tmp_path / "in"
    source.write_bytes(bytes(3 * CHUNK_SIZE))
    try:
        with source.open("rb") as handle:
            for parent in (os.getppid() + 1, os.getppid()):
                ranges._batches(handle.fileno(), -1, layout, transform, board,
                                ranges._Lock(None), slot=1, report=None, parent=parent)
                assert taken == ([] if parent != os.getppid() else [0])
    finally:
        board.close()


def test_without_record_locks_the_workers_still_write_the_whole_file(
        tmp_path: Path, identity: Identity, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_locks(*_args: object) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    import fcntl

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    plain = os.urandom(5 * ranges._BATCH * CHUNK_SIZE + 3)
    sealed = _in_ranges(tmp_path, plain, identity, workers=2)
    assert Decryptor(io.BytesIO(sealed), [identity]).read() == plain


def test_progress_ends_at_the_whole_input(tmp_path: Path, identity: Identity) -> None:
    """The progress bar, fed by this process, is told the helper's last batch too."""
    parent = os.getpid()

    class SlowHelper(PayloadSealer):
        def seal_at(self, first: int, chunks: encrypt_module.Buffer,
                    out: encrypt_module.Buffer, *, final: bool) -> int:
            if os.getpid() != parent:
                time.sleep(0.2)  # This process takes its last batch before it ends.
            return super().seal_at(first, chunks, out, final=final)

    plain = os.urandom(3 * ranges._BATCH * CHUNK_SIZE + 11)
    source = tmp_path / "plain"
    source.write_bytes(plain)
    told: list[int] = []
    with source.open("rb") as handle, \
            atomic_output(tmp_path / "sealed.age", durable=False) as sink, \
            SlowHelper([identity.recipient]) as sealer:
        ranges.encrypt_file(handle.fileno(), sink.fd, sealer, workers=2,
                            progress=told.append)
    assert told == sorted(told)
    assert told[-1] == len(plain)


def test_when_no_helper_can_be_made_this_process_does_it_all(
        tmp_path: Path, identity: Identity, monkeypatch: pytest.MonkeyPatch) -> None:
    def cannot() -> int:
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    monkeypatch.setattr(ranges.os, "fork", cannot)
    before = _open_fds()
    plain = os.urandom(4 * ranges._BATCH * CHUNK_SIZE + 9)
    sealed = _in_ranges(tmp_path, plain, identity, workers=3)
    assert Decryptor(io.BytesIO(sealed), [identity]).read() == plain
    assert _open_fds() == before  # No pipe left open.


def _open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


def test_without_fork_or_record_locks_this_process_does_it_all(tmp_path: Path) -> None:
    """Where there is no fork() and no fcntl (Windows), the module imports and one
    process encrypts the whole file."""
    script = f"""
import os, sys
sys.modules["fcntl"] = None
del os.fork
from gateway.client import ranges
from gateway.client.files import atomic_output
from gateway.envelope import PayloadSealer, generate_identity
source = {str(tmp_path / "plain")!r}
with open(source, "wb") as handle:
    handle.write(os.urandom(3 * ranges._BATCH * 65536 + 5))
identity = generate_identity()
with open(source, "rb") as handle, atomic_output(
        __import__("pathlib").Path({str(tmp_path / "sealed.age")!r}), durable=False) as sink, \\
        PayloadSealer([identity.recipient]) as sealer:
    ranges.encrypt_file(handle.fileno(), sink.fd, sealer, workers=4)
print(os.path.getsize({str(tmp_path / "sealed.age")!r}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 3 * ranges._BATCH * 65536
