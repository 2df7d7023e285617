"""Benchmark: the cost of checking that a pre-encrypted upload's payload is ciphertext.

Feeds age files of several sizes through :class:`gateway.payload_check.PayloadCheck` in
255 KiB writes (what SFTP clients send) and compares its time with SHA-256 over the same
bytes, which every upload already pays (the store hashes the ciphertext), measured in the
same run. Prints milliseconds per file, the check's cost relative to the hash, and its
throughput.

    python bench/payload_check.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway import envelope  # noqa: E402
from gateway.payload_check import PayloadCheck  # noqa: E402

MIB = 1 << 20
WRITE = 255 * 1024
SIZES_MIB = (0.1, 1, 16, 256, 1024)


def header() -> bytes:
    sink = io.BytesIO()
    with envelope.Encryptor(sink, [envelope.generate_identity().recipient]) as encryptor:
        encryptor.write(b"")
    data = sink.getvalue()
    return data[:data.index(b"\n", data.index(b"\n--- ") + 1) + 1]


def writes(size: int, pool: bytes) -> list[memoryview]:
    """``size`` bytes of random-looking payload as 255 KiB writes, reusing ``pool``."""
    view = memoryview(pool)
    return [view[offset % len(pool):offset % len(pool) + min(WRITE, size - offset)]
            for offset in range(0, size, WRITE)]


def best(repeat: int, run: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def check(head: bytes, pieces: list[memoryview]) -> None:
    checker = PayloadCheck(armored=False)
    checker.feed(head)
    for piece in pieces:
        checker.feed(piece)
    checker.finish()


def sha256(head: bytes, pieces: list[memoryview]) -> None:
    digest = hashlib.sha256(head)
    for piece in pieces:
        digest.update(piece)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tiny", action="store_true",
                        help="a size that runs in seconds (the test suite runs every bench so)")
    args = parser.parse_args()
    sizes = (0.1, 1) if args.tiny else SIZES_MIB
    if args.tiny:
        args.repeat = 1
    head = header()
    # The pool is a multiple of the write size, so every write is a whole slice of it.
    pool = os.urandom(64 * WRITE)
    print(f"{'payload':>10}  {'check ms':>9}  {'sha256 ms':>9}  {'check/sha256':>12}  "
          f"{'check MB/s':>10}")
    for size_mib in sizes:
        size = int(size_mib * MIB)
        pieces = writes(size, pool)
        checked = best(args.repeat, lambda: check(head, pieces))  # noqa: B023
        hashed = best(args.repeat, lambda: sha256(head, pieces))  # noqa: B023
        print(f"{size_mib:>7g} MiB  {checked * 1000:9.1f}  {hashed * 1000:9.1f}  "
              f"{checked / hashed:12.2f}  {size / checked / 1e6:10.0f}")


if __name__ == "__main__":
    main()
