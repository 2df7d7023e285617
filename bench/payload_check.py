"""Benchmark: the cost of checking that a pre-encrypted upload's payload is ciphertext.

1. In process: feeds age files of several sizes through
   :class:`gateway.payload_check.PayloadCheck` (every byte screened by numpy passes,
   samples tested) in 255 KiB writes (what SFTP clients send), grouped in the gateway's
   batches (``_PassThrough.BATCH``), and compares its time with SHA-256 over the same bytes,
   which every upload already pays (the store hashes the ciphertext), measured in the same
   run. Prints milliseconds per file, seconds per GiB, the check's cost relative to the
   hash, and its throughput. Then runs the check on a thread of its own
   (:class:`~gateway.payload_check.CheckThread`, as the gateway does) beside a thread
   spinning in Python, and prints the share of its speed that thread kept (100%: the
   check held no GIL it needed) and the check's time so (longer: each numpy pass gives
   the GIL up and waits up to the switch interval to take it back from a thread that
   never gives it up; a session's thread gives it up at every read, hash and write).
2. Over SFTP (as root, unless ``--sftp-mib 0``): the same real age file uploaded with the
   OpenSSH ``sftp`` client and the same cipher to OpenSSH's sshd + sftp-server, to
   Blindpost, and to Blindpost with the check and its thread replaced by a no-op that
   clears every batch at once (``bench/unchecked``, on that server's PYTHONPATH only), in
   alternating order, ``--rounds`` times. Prints the median MB/s of each and the upload
   ratios against OpenSSH with and without the check. Target: the check costs no
   measurable share of the upload (the two ratios within the run-to-run spread).

Each part prints the load average before it: on a shared machine, compare figures only
within a run.

    python bench/payload_check.py [--repeat 3] [--sizes-mib 0.1,1,16,256,1024]
                                  [--sftp-mib 1024] [--rounds 3] [--workers N]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.sftp import Blindpost, OpenSSH, Side, with_and_without  # noqa: E402
from gateway import envelope  # noqa: E402
from gateway.payload_check import CheckThread, PayloadCheck  # noqa: E402
from gateway.transfers import _PassThrough  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30
WRITE = 255 * 1024
SIZES_MIB = "0.1,1,16,256,1024"
UNCHECKED = Path(__file__).resolve().parent / "unchecked"


def header() -> bytes:
    sink = io.BytesIO()
    with envelope.Encryptor(sink, [envelope.generate_identity().recipient]) as encryptor:
        encryptor.write(b"")
    data = sink.getvalue()
    return data[:data.index(b"\n", data.index(b"\n--- ") + 1) + 1]


def writes(size: int, pool: bytes) -> list[bytes]:
    """``size`` bytes of random-looking payload as 255 KiB writes, reusing ``pool``: bytes,
    as the SFTP server hands them to the upload."""
    chunks = [pool[start:start + WRITE] for start in range(0, len(pool), WRITE)]
    pieces = [chunks[number % len(chunks)] for number in range(size // WRITE)]
    return pieces + ([pool[:size % WRITE]] if size % WRITE else [])


def best(repeat: int, run: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def batches(head: bytes, pieces: list[bytes]) -> list[list[bytes]]:
    """The writes grouped as the gateway hands them to the check (``_PassThrough.BATCH``)."""
    grouped: list[list[bytes]] = [[]]
    size = 0
    for piece in [head, *pieces]:
        grouped[-1].append(piece)
        size += len(piece)
        if size >= _PassThrough.BATCH:
            grouped.append([])
            size = 0
    return grouped


def check(grouped: list[list[bytes]]) -> None:
    checker = PayloadCheck(armored=False)
    for batch in grouped:
        checker.feed(*batch)
    checker.finish()


def sha256(head: bytes, pieces: list[bytes]) -> None:
    digest = hashlib.sha256(head)
    for piece in pieces:
        digest.update(piece)


def _spin(until: threading.Event) -> int:
    turns = 0
    while not until.is_set():
        turns += 1
    return turns


def beside_python(grouped: list[list[bytes]]) -> tuple[float, float]:
    """The check on its own thread while this one runs Python: the share of this thread's
    speed alone that it kept, and the check's seconds."""
    alone = threading.Event()
    timer = threading.Timer(0.3, alone.set)
    began = time.perf_counter()
    timer.start()
    rate_alone = _spin(alone) / (time.perf_counter() - began)
    done = threading.Event()
    began = time.perf_counter()
    thread = CheckThread(PayloadCheck(armored=False), max_lag=1 << 62)
    for batch in grouped:
        thread.feed(batch)
    waiter = threading.Thread(target=lambda: (thread.finish(), done.set()))
    waiter.start()
    turns = _spin(done)
    seconds = time.perf_counter() - began
    waiter.join()
    return turns / seconds / rate_alone, seconds


def load() -> str:
    return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def in_process(sizes_mib: list[float], repeat: int) -> None:
    print(f"In process ({load()}):")
    head = header()
    # The pool is a multiple of the write size, so every write is a whole slice of it.
    pool = os.urandom(64 * WRITE)
    print(f"{'payload':>10}  {'check ms':>9}  {'sha256 ms':>9}  {'check s/GiB':>11}  "
          f"{'check/sha256':>12}  {'check MB/s':>10}  {'Python kept':>11}  "
          f"{'check s/GiB so':>14}")
    for size_mib in sizes_mib:
        size = int(size_mib * MIB)
        pieces = writes(size, pool)
        grouped = batches(head, pieces)
        checked = best(repeat, lambda: check(grouped))  # noqa: B023
        hashed = best(repeat, lambda: sha256(head, pieces))  # noqa: B023
        kept, beside = beside_python(grouped)
        print(f"{size_mib:>7g} MiB  {checked * 1000:9.1f}  {hashed * 1000:9.1f}  "
              f"{checked / size * GIB:11.3f}  {checked / hashed:12.2f}  "
              f"{size / checked / 1e6:10.0f}  {kept:11.0%}  {beside / size * GIB:14.3f}")


def age_file(path: Path, recipient: envelope.Recipient, size: int) -> None:
    """A real age file of ``size`` random plaintext bytes for ``recipient``."""
    chunk = os.urandom(MIB)
    with path.open("wb") as sink, envelope.Encryptor(sink, [recipient]) as encryptor:
        for _ in range(size // MIB):
            encryptor.write(chunk)


def over_sftp(size_mib: int, rounds: int, workers: int) -> bool:
    work = Path(tempfile.mkdtemp(prefix="bench-payload-"))
    work.chmod(0o755)
    checked = Blindpost(work, workers, name="checked")
    unchecked = Blindpost(work, workers, name="unchecked",
                          env={"PYTHONPATH": os.pathsep.join(
                              [str(UNCHECKED), os.environ.get("PYTHONPATH", "")]).rstrip(":")})
    openssh = OpenSSH(work)
    (openssh.work / "in").mkdir()
    source = work / "upload.bin.age"
    age_file(source, checked.recipient, size_mib * MIB)
    # Both servers' partners take the same file: its header must fit each one's key.
    other = work / "other.bin.age"
    age_file(other, unchecked.recipient, size_mib * MIB)
    print(f"Over SFTP ({load()}):")
    try:
        return with_and_without("check", "age file", size_mib, rounds, openssh, source, (
            Side("checked", "Blindpost, payload checked", checked, source),
            Side("unchecked", "Blindpost, check replaced by a no-op", unchecked, other)))
    finally:
        checked.stop()
        unchecked.stop()
        openssh.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes-mib", default=SIZES_MIB,
                        help="payload sizes for the in-process part, comma-separated")
    parser.add_argument("--sftp-mib", type=int, default=1024,
                        help="size of the SFTP upload (0: skip that part)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tiny", action="store_true",
                        help="a size that runs in seconds (the test suite runs every bench so)")
    args = parser.parse_args()
    if args.tiny:
        args.sizes_mib, args.sftp_mib, args.rounds, args.repeat = "0.1,1", 2, 1, 1
    in_process([float(size) for size in args.sizes_mib.split(",")], args.repeat)
    if args.sftp_mib <= 0:
        return 0
    return 0 if over_sftp(args.sftp_mib, args.rounds, args.workers) else 1


if __name__ == "__main__":
    sys.exit(main())
