"""Envelope throughput: Blindpost against the age CLI and a raw ChaCha20-Poly1305 loop.

Every run is file to file on the same scratch directory:

- ``raw (memory)``: ChaCha20-Poly1305 over 64 KiB chunks of one buffer, no I/O; the
  ceiling for the cipher alone.
- ``raw (file)``: the same loop reading the input and writing the output files; the
  ceiling for any age implementation on this machine.
- ``library``: ``gateway.envelope`` streaming file to file in a fresh Python process
  (timed inside it, so interpreter start-up is excluded), X25519 and hybrid.
- ``blindpost CLI``: ``.venv/bin/blindpost encrypt/decrypt`` to standard output (or
  ``python -m gateway.cli`` if the script is missing), timed from outside.
- ``age CLI``: ``age -e/-d`` to standard output (X25519; Debian's age has no hybrid keys).

Each measurement is repeated (``--repeat``) and the fastest run is reported, since
page-cache and memory-ballooning noise on shared machines only ever slows a run down.
Peak RSS is each child's own maximum resident set, as GNU time (/usr/bin/time) reports it.

Usage: .venv/bin/python bench/envelope.py [--size 1G] [--repeat 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

REPO = Path(__file__).resolve().parents[1]
TIME = shutil.which("time", path="/usr/bin")  # GNU time, for a child's own peak RSS
CHUNK = 64 * 1024
BLOCK = 1024 * 1024


@dataclass
class Result:
    """The fastest of the repeated runs of one measurement."""

    name: str
    seconds: float
    rss_kib: int | None


def parse_size(text: str) -> int:
    """Parse ``1G``, ``256M``, ``64K`` or a plain byte count."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    suffix = text[-1].upper()
    return int(text[:-1]) * units[suffix] if suffix in units else int(text)


# --- workers: run in a fresh interpreter so their RSS is their own ------------------


def worker(kind: str, source: str, target: str, key_file: str) -> None:
    """Run one timed operation and print its duration as JSON."""
    from gateway.envelope import Decryptor, Encryptor, parse_identities_file

    view = memoryview(bytearray(BLOCK))
    identities = parse_identities_file(Path(key_file).read_text()) if key_file != "-" else []
    with Path(source).open("rb") as src, Path(target).open("r+b") as dst:
        start = time.perf_counter()
        if kind == "raw":
            raw_file_loop(src, dst)
        elif kind == "encrypt":
            with Encryptor(dst, [identities[0].recipient]) as encryptor:
                while count := src.readinto(view):
                    encryptor.write(view[:count])
        else:
            with Decryptor(src, identities) as decryptor:
                while count := decryptor.readinto(view):
                    dst.write(view[:count])
        dst.truncate()
        print(json.dumps({"seconds": time.perf_counter() - start}))


def raw_file_loop(src: BinaryIO, dst: BinaryIO) -> None:
    """Seal 64 KiB chunks read from ``src`` into ``dst``, with no other work.

    The best I/O shape found: 1 MiB reads into one buffer, chunks sealed into one
    reused output buffer, one write per 1 MiB.
    """
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    aead = ChaCha20Poly1305(os.urandom(32))
    view = memoryview(bytearray(BLOCK))
    out = memoryview(bytearray(BLOCK // CHUNK * (CHUNK + 16)))
    counter = 0
    while count := src.readinto(view):  # type: ignore[attr-defined]  # BufferedReader at run time
        filled = 0
        for offset in range(0, count, CHUNK):
            chunk = view[offset : min(offset + CHUNK, count)]
            nonce = counter.to_bytes(12, "big")
            aead.encrypt_into(nonce, chunk, None, out[filled : filled + len(chunk) + 16])
            filled += len(chunk) + 16
            counter += 1
        dst.write(out[:filled])


def raw_memory_loop(size: int) -> float:
    """Seconds to seal ``size`` bytes in 64 KiB chunks of one in-memory buffer."""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    aead = ChaCha20Poly1305(os.urandom(32))
    chunk = os.urandom(CHUNK)
    out = memoryview(bytearray(CHUNK + 16))
    start = time.perf_counter()
    for counter in range(size // CHUNK):
        aead.encrypt_into(counter.to_bytes(12, "big"), chunk, None, out)
    return time.perf_counter() - start


# --- the driver ----------------------------------------------------------------------


def run_child(argv: list[str], output: Path | None = None) -> tuple[float, int, str]:
    """Run ``argv``; return wall seconds, its peak RSS in KiB, and its stdout.

    With ``output``, standard output goes into that existing file, overwritten in
    place and then cut to length, instead of being captured. The RSS comes from GNU
    time when installed: a child forked from this (large) process would otherwise
    inherit this process's high-water mark at exec.
    """
    with (
        tempfile.NamedTemporaryFile("r") as rss_file,
        output.open("r+b") if output else tempfile.TemporaryFile() as out_file,
    ):
        prefix = [TIME, "-q", "-f", "%M", "-o", rss_file.name] if TIME else []
        start = time.perf_counter()
        process = subprocess.run(
            [*prefix, *argv], stdout=out_file, stderr=subprocess.PIPE, check=False
        )
        wall = time.perf_counter() - start
        if process.returncode != 0:
            raise SystemExit(f"{argv[0]} failed: {process.stderr.decode(errors='replace')}")
        out_file.truncate(out_file.seek(0, os.SEEK_END) if output is None else out_file.tell())
        out_file.seek(0)
        stdout = b"" if output else out_file.read()
        rss = int(rss_file.read().split()[-1]) if TIME else 0
    return wall, rss, stdout.decode()


def blindpost_cli() -> tuple[list[str], str]:
    """The blindpost command line and a label saying which form it is."""
    script = REPO / ".venv" / "bin" / "blindpost"
    if script.exists():
        return [str(script)], ".venv/bin/blindpost"
    return [sys.executable, "-m", "gateway.cli"], "python -m gateway.cli"


class Bench:
    """Holds the scratch files and keeps the fastest run of each measurement."""

    def __init__(self, workdir: Path, size: int) -> None:
        self.dir = workdir
        self.size = size
        self.plain = workdir / "plain.bin"
        self.sealed = workdir / "sealed.age"
        self.opened = workdir / "opened.bin"
        self.best: dict[str, Result] = {}
        self.cli, self.cli_label = blindpost_cli()
        self.keys = {kind: self._keygen(kind) for kind in ("x25519", "hybrid")}

    def _keygen(self, kind: str) -> Path:
        path = self.dir / f"{kind}.key"
        argv = [*self.cli, "keygen", "-o", str(path), *(["--classic"] if kind == "x25519" else [])]
        subprocess.run(argv, check=True, capture_output=True)
        return path

    def recipient(self, kind: str) -> str:
        """The public key in the identity file of ``kind``."""
        text = self.keys[kind].read_text()
        return next(line.split(": ")[1] for line in text.splitlines() if "public key" in line)

    def record(self, name: str, seconds: float, rss_kib: int | None) -> None:
        """Keep the run if it is the fastest so far."""
        best = self.best.get(name)
        if best is None or seconds < best.seconds:
            self.best[name] = Result(name, seconds, rss_kib)

    def make_files(self) -> None:
        """Write the random input, and preallocate the two output files.

        Every tool then overwrites an output file in place: on virtual machines,
        fresh page-cache pages can cost more than the encryption, and that cost
        lands on whichever run happens to need them.
        """
        with self.plain.open("wb") as handle:
            for start in range(0, self.size, 16 * BLOCK):
                handle.write(os.urandom(min(16 * BLOCK, self.size - start)))
        for path in (self.sealed, self.opened):
            shutil.copyfile(self.plain, path)
            with path.open("ab") as handle:
                handle.write(bytes(BLOCK))

    def library(self, kind: str, name: str, source: Path, target: Path, key: Path) -> None:
        """Time one library operation in a fresh interpreter."""
        argv = [sys.executable, __file__, "--worker", kind, str(source), str(target), str(key)]
        _, rss, out = run_child(argv)
        self.record(name, json.loads(out)["seconds"], rss)

    def external(self, name: str, argv: list[str], output: Path) -> None:
        """Time a whole command (start-up included) writing to standard output."""
        wall, rss, _ = run_child(argv, output)
        self.record(name, wall, rss)

    def one_round(self, *, verify: bool) -> None:
        """Run every measurement once."""
        plain, sealed, opened = self.plain, self.sealed, self.opened
        self.record("raw ChaCha20-Poly1305 (memory)", raw_memory_loop(self.size), None)
        self.library("raw", "raw ChaCha20-Poly1305 (file)", plain, sealed, Path("-"))
        for kind, key in self.keys.items():
            self.library("encrypt", f"library encrypt {kind}", plain, sealed, key)
            self.library("decrypt", f"library decrypt {kind}", sealed, opened, key)
            self.check(verify=verify)
        recipient, key_file = self.recipient("x25519"), str(self.keys["x25519"])
        cli, age = "blindpost CLI", "age CLI"
        encrypt = [*self.cli, "encrypt", "-r", recipient, str(plain)]
        self.external(f"{cli} encrypt x25519", encrypt, sealed)
        self.external(
            f"{cli} decrypt x25519", [*self.cli, "decrypt", "-i", key_file, str(sealed)], opened
        )
        self.check(verify=verify)
        self.external(f"{age} encrypt x25519", ["age", "-e", "-r", recipient, str(plain)], sealed)
        self.external(f"{age} decrypt x25519", ["age", "-d", "-i", key_file, str(sealed)], opened)
        self.check(verify=verify)

    def check(self, *, verify: bool) -> None:
        """Compare the decrypted file with the input (first round only)."""
        if verify and not filecmp.cmp(self.plain, self.opened, shallow=False):
            raise SystemExit(f"decrypted output differs from input: {self.opened}")


def report(bench: Bench, startup: float) -> None:
    """Print throughput, peak RSS and the ratios the targets are stated in."""
    size = bench.size
    print(
        f"\ninput {size / 2**20:.0f} MiB; best of the runs; blindpost CLI = {bench.cli_label}"
        f" (its interpreter start-up, {startup:.2f} s, is included in CLI times;"
        " both CLIs write to standard output)\n"
    )
    print(f"{'measurement':38} {'MB/s':>8} {'seconds':>8} {'peak RSS':>10}")
    for result in bench.best.values():
        rss = f"{result.rss_kib / 1024:.1f} MiB" if result.rss_kib else "-"
        print(
            f"{result.name:38} {size / result.seconds / 1e6:8.0f} {result.seconds:8.3f} {rss:>10}"
        )

    def rate(name: str) -> float:
        return size / bench.best[name].seconds

    print()
    for direction in ("encrypt", "decrypt"):
        lib, cli, age = (
            rate(f"library {direction} x25519"),
            rate(f"blindpost CLI {direction} x25519"),
            rate(f"age CLI {direction} x25519"),
        )
        warm = size / (bench.best[f"blindpost CLI {direction} x25519"].seconds - startup)
        print(
            f"{direction}: library/age {lib / age:.2f}x, CLI/age {cli / age:.2f}x "
            f"({warm / age:.2f}x without start-up), "
            f"library/raw(file) {lib / rate('raw ChaCha20-Poly1305 (file)'):.0%}, "
            f"library/raw(memory) {lib / rate('raw ChaCha20-Poly1305 (memory)'):.0%}"
        )


def main() -> None:
    """Parse arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=1 << 30, help="input size (1G, 64M, …)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement")
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory parent")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--tiny", action="store_true",
                        help="a size that runs in seconds (the test suite runs every bench so)")
    args = parser.parse_args()
    if args.tiny:
        args.size, args.repeat = 1 << 20, 1
    if args.worker:
        worker(*args.worker)
        return
    if shutil.which("age") is None:
        raise SystemExit("the age CLI is missing: apt-get install age")
    workdir = Path(tempfile.mkdtemp(prefix="blindpost-bench-", dir=args.dir))
    try:
        bench = Bench(workdir, args.size)
        bench.make_files()
        startup, _, _ = run_child([*bench.cli, "--version"])
        for round_number in range(args.repeat):
            print(f"round {round_number + 1}/{args.repeat}", file=sys.stderr)
            bench.one_round(verify=round_number == 0)
        report(bench, startup)
    finally:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
