"""Benchmark: what reading a plaintext upload's data elements costs (issue 24).

1. In process: a CSV fed in 255 KiB writes (what SFTP clients send) through the age
   encryptor alone, and through the header parse and record count
   (:class:`gateway.data_elements.ContentScan`) plus the encryptor, as
   :class:`gateway.transfers.Upload` does; best of ``--repeat``. Prints seconds per GiB
   of each, the scan's own throughput and its share of the encrypting upload.
2. Over SFTP (as root, unless ``--sftp-mib 0``): the same CSV uploaded with the OpenSSH
   ``sftp`` client and the same cipher to OpenSSH's sshd + sftp-server, to Blindpost, and
   to Blindpost with the scan replaced by a no-op (``bench/unscanned``, on that server's
   PYTHONPATH only), in alternating order, ``--rounds`` times. Prints the median MB/s of
   each and the upload ratios against OpenSSH with and without the scan. Target: the
   scan costs no measurable share (the two ratios within the run-to-run spread).

    python bench/data_elements.py [--repeat 3] [--size-mib 256] [--sftp-mib 1024]
                                  [--rounds 3] [--workers N]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway import envelope  # noqa: E402
from gateway.data_elements import ContentScan  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30
WRITE = 255 * 1024
UNSCANNED = Path(__file__).resolve().parent / "unscanned"
HEADER = b'"health_card_number",birth_date,postal_code,sex,diagnosis_code\r\n'
ROW = b"1234567890,1980-01-02,K1A 0B1,F,O80.1\r\n"


def csv_bytes(size: int) -> bytes:
    """A CSV of about ``size`` bytes: a quoted header, CRLF rows."""
    return HEADER + ROW * max(0, (size - len(HEADER)) // len(ROW))


class _Null(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        return len(data)


def best(repeat: int, run: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def in_process(size_mib: float, repeat: int) -> None:
    data = csv_bytes(int(size_mib * MIB))
    pieces = [data[start:start + WRITE] for start in range(0, len(data), WRITE)]
    recipient = envelope.generate_identity(post_quantum=False).recipient

    def encrypt(scan: bool) -> None:
        scanner = ContentScan() if scan else None
        with envelope.Encryptor(_Null(), [recipient]) as encryptor:
            for piece in pieces:
                if scanner is not None:
                    scanner.feed(piece)
                encryptor.write(piece)
        if scanner is not None:
            assert scanner.finish().records == (len(data) - len(HEADER)) // len(ROW)

    def scan_only() -> None:
        scanner = ContentScan()
        for piece in pieces:
            scanner.feed(piece)
        scanner.finish()

    per_gib = GIB / len(data)
    plain, scanned, alone = (best(repeat, lambda: encrypt(False)),
                             best(repeat, lambda: encrypt(True)), best(repeat, scan_only))
    print(f"In process, {len(data) / MIB:.1f} MiB CSV in 255 KiB writes, best of {repeat}:")
    print(f"  encrypt only            {plain * per_gib:7.3f} s/GiB")
    print(f"  scan + encrypt          {scanned * per_gib:7.3f} s/GiB")
    print(f"  scan alone              {alone * per_gib:7.3f} s/GiB "
          f"({len(data) / alone / MIB:,.0f} MiB/s)")
    print(f"  scan's share of an encrypting upload: {alone / plain:6.2%} "
          f"(scan + encrypt / encrypt: {scanned / plain:5.3f}x)")


def over_sftp(size_mib: int, rounds: int, workers: int) -> bool:
    # Imported here: the SFTP harness loads the whole gateway, which --tiny does not need.
    from bench.sftp import Blindpost, OpenSSH, Side, with_and_without

    work = Path(tempfile.mkdtemp(prefix="bench-elements-"))
    work.chmod(0o755)
    # Only the clerk uploads: no partner users to make.
    scanned = Blindpost(work, workers, name="scanned", partners=0)
    unscanned = Blindpost(work, workers, name="unscanned", partners=0,
                          env={"PYTHONPATH": os.pathsep.join(
                              [str(UNSCANNED), os.environ.get("PYTHONPATH", "")]).rstrip(":")})
    openssh = OpenSSH(work)
    (openssh.work / "in").mkdir()
    source = work / "extract.csv"
    with source.open("wb") as sink:
        sink.write(HEADER)
        block = ROW * (MIB // len(ROW))
        for _ in range(size_mib):
            sink.write(block)
    try:
        return with_and_without("scan", "CSV", size_mib, rounds, openssh, source, (
            Side("scanned", "Blindpost, data elements read", scanned, source),
            Side("unscanned", "Blindpost, scan replaced by a no-op", unscanned, source)))
    finally:
        scanned.stop()
        unscanned.stop()
        openssh.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size-mib", type=float, default=256,
                        help="size of the in-process CSV")
    parser.add_argument("--sftp-mib", type=int, default=1024,
                        help="size of the SFTP upload (0: skip that part)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tiny", action="store_true",
                        help="a size that runs in seconds (the test suite runs every bench so)")
    args = parser.parse_args()
    if args.tiny:
        # In process only: two SFTP servers take most of a minute to set up, too long for
        # the suite's budget; bench/payload_check.py runs the same SFTP harness tiny.
        args.size_mib, args.sftp_mib, args.rounds, args.repeat = 1, 0, 1, 1
    in_process(args.size_mib, args.repeat)
    if args.sftp_mib <= 0:
        return 0
    return 0 if over_sftp(args.sftp_mib, args.rounds, args.workers) else 1


if __name__ == "__main__":
    sys.exit(main())
