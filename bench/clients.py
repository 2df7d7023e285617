"""Benchmark: `blindpost send/fetch` against OpenSSH `sftp` + `age` by hand (not a test).

Over one `blindpost sftp` gateway on loopback, with a file of random bytes:

- **send**: `blindpost send` (encrypts while it uploads, then checks the recorded hash)
  against `age -e -R LIST -o FILE.age` followed by `sftp put FILE.age`, as a person would
  run them, timed together;
- **fetch**: `blindpost fetch` (downloads, decrypts while it downloads, checks the hash,
  fsyncs, renames, records) against `sftp get FILE.age` followed by `age -d -o FILE`;
- **-o**: `blindpost encrypt -o` and `decrypt -o` against `age -e -o` / `age -d -o`, on the
  scratch directory's disk (and on /dev/shm with ``--tmpfs``). None of them fsyncs.

Every command is timed from outside, start-up and sign-in included. Each comparison runs
``--repeat`` rounds, alternating which side goes first, and reports the median, the
spread (fastest and slowest run) and the median of the per-round ratios: the machine may
be shared, so a single run proves little. Before each command the page cache's dirty
data are written back (``sync``, untimed), so that neither side pays for the other's.
Each sign-in uses an account of its own, so no one-time code is needed twice. Targets:
send and fetch at least 1.0x their manual pairs; ``-o`` at least 1.3x ``age -o`` both ways.
Partner keys are X25519, which Debian's age 1.1 reads, on both sides of every comparison
(age 1.1 has no hybrid post-quantum keys, so X25519 against X25519: the payload cipher,
ChaCha20-Poly1305 in 64 KiB chunks, is the same for both recipient types; only the
header's key wrapping differs).

The clients are this checkout's ``.venv/bin/blindpost`` (an editable install: its start
includes the import hook that maps the package to the checkout, which loads pathlib early;
the commands load it anyway, and a 100-byte ``encrypt -o`` took 55 ms either way) unless
``--blindpost PATH`` names another program, e.g.
the console script of a virtual environment into which the wheel of ``make dist`` was
installed, as partners and staff install it (the gateway itself always runs from this
checkout's virtual environment, which has the server's dependencies).

The report gives, beside the wall-clock ratio, the ratio of CPU seconds (user + system)
and the load average before each round. On a machine whose cores are busy with other
work the clients run their work in one thread (:mod:`gateway.client.cores`) and the wall
clock mostly measures the scheduler; the CPU ratio then says more.

    .venv/bin/python bench/clients.py [--size-mib 1024] [--repeat 3] [--dir /tmp] [--tmpfs]
                                      [--parts send,fetch,o] [--blindpost PATH]
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIB = 1 << 20
BLINDPOST = ROOT / ".venv" / "bin" / "blindpost"
TIME = shutil.which("time", path="/usr/bin")


@dataclass
class Runs:
    """Every run of one measurement: wall seconds, peak RSS (KiB), CPU seconds."""

    seconds: list[float]
    rss_kib: list[int]
    cpu: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


Measured = tuple[float, int, float]


def run(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
        ) -> Measured:
    """Wall seconds, peak RSS (KiB) and CPU seconds (user + system) of one command."""
    with tempfile.NamedTemporaryFile("r") as usage:
        prefix = [TIME, "-q", "-f", "%M %U %S", "-o", usage.name] if TIME else []
        began = time.perf_counter()
        done = subprocess.run([*prefix, *argv], env=env, cwd=cwd, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, check=False)
        seconds = time.perf_counter() - began
        if done.returncode != 0:
            raise SystemExit(f"{argv[0]} {argv[1]} failed ({done.returncode}):\n"
                             f"{done.stdout}\n{done.stderr}")
        if not TIME:
            return seconds, 0, 0.0
        rss, user, system = usage.read().split()[-3:]
        return seconds, int(rss), float(user) + float(system)


class Gateway:
    """A data directory with staff and partner accounts, and `blindpost sftp` running."""

    def __init__(self, work: Path, accounts: int, workers: int) -> None:
        from gateway.db.models import Role
        from gateway.hostkey import public_host_key
        from tests.unit.sftp_server.harness import Installation

        self.work = work
        setup = Installation(work / "gw")
        self.identity = setup.add_partner("acme", post_quantum=False)
        for n in range(accounts):
            setup.add_user(f"s{n}", Role.STAFF)
            setup.add_user(f"p{n}", Role.PARTNER, partner="acme")
        self.users = setup.users
        setup.app.close()
        self.port = free_port()
        self.process = subprocess.Popen(
            [str(BLINDPOST), "sftp", "--data-dir", str(setup.data_dir), "--listen",
             f"127.0.0.1:{self.port}", "--workers", str(workers)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.process.stdout is not None
        print("  " + self.process.stdout.readline().strip())
        self.known_hosts = work / "known_hosts"
        public = public_host_key(setup.settings.host_key_path)
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {public}\n")
        self.recipients = work / "acme.recipients"
        self.recipients.write_text(f"{self.identity.recipient}\n")
        self.identity_file = work / "acme.key"
        self.identity_file.write_text(self.identity.to_secret_string() + "\n")
        self.identity_file.chmod(0o600)
        self._next = {"s": 0, "p": 0}

    def account(self, kind: str) -> tuple[str, Path, str]:
        """A fresh account of ``kind`` ("s" staff, "p" partner): name, key, current code."""
        from gateway import totp

        name = f"{kind}{self._next[kind]}"
        self._next[kind] += 1
        user = self.users[name]
        return name, user.key_path, totp.current_code(user.secret, now=datetime.now(UTC))

    def stop(self) -> None:
        self.process.terminate()
        self.process.communicate(timeout=60)


class Bench:
    def __init__(self, work: Path, size: int, gateway: Gateway, *,
                 client: Path = BLINDPOST) -> None:
        self.work = work
        # The `blindpost` program whose client commands are measured.
        self.program = client
        self.size = size
        self.gw = gateway
        self.plain = work / "big.bin"
        self.runs: dict[str, Runs] = {}
        # Per round, (ours, theirs) seconds of each comparison.
        self.pairs: dict[tuple[str, str], list[tuple[float, float]]] = {}
        # The same for CPU seconds.
        self.cpu_pairs: dict[tuple[str, str], list[tuple[float, float]]] = {}
        self.loads: list[float] = []

    def keep(self, name: str, result: Measured) -> Measured:
        seconds, rss, cpu = result
        runs = self.runs.setdefault(name, Runs([], [], []))
        runs.seconds.append(seconds)
        runs.rss_kib.append(rss)
        runs.cpu.append(cpu)
        return result

    def compare(self, number: int, ours: tuple[str, Callable[[], Measured]],
                theirs: tuple[str, Callable[[], Measured]]) -> None:
        """Run both sides, ours first in even rounds and theirs first in odd ones."""
        order = [ours, theirs] if number % 2 == 0 else [theirs, ours]
        measured = {}
        for name, measure in order:
            settle()
            measured[name] = self.keep(name, measure())
        self.pairs.setdefault((ours[0], theirs[0]), []).append(
            (measured[ours[0]][0], measured[theirs[0]][0]))
        self.cpu_pairs.setdefault((ours[0], theirs[0]), []).append(
            (measured[ours[0]][2], measured[theirs[0]][2]))

    def client(self, command: str, kind: str, *args: str, home: Path) -> Measured:
        name, key, code = self.gw.account(kind)
        return run([str(self.program), command, "--host", "127.0.0.1", "--port",
                    str(self.gw.port), "--user", name, "--key", str(key), "--known-hosts",
                    str(self.gw.known_hosts), "--totp-command", f"echo {code}", *args],
                   env=_client_env(home), cwd=self.work)

    def sftp(self, kind: str, commands: list[str]) -> Measured:
        from tests.unit.sftp_server.harness import askpass_script

        name, key, code = self.gw.account(kind)
        batch = self.work / f"batch-{name}"
        batch.write_text("\n".join(commands) + "\n")
        env = {"PATH": os.environ["PATH"], "HOME": str(self.work), "DISPLAY": ":0",
               "SSH_ASKPASS": str(askpass_script(self.work, code)),
               "SSH_ASKPASS_REQUIRE": "force"}
        return run(["sftp", "-q", "-o", "BatchMode=no", "-b", str(batch), "-P",
                    str(self.gw.port), "-i", str(key), "-F", "/dev/null", "-o",
                    "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={self.gw.known_hosts}",
                    f"{name}@127.0.0.1"], env=env, cwd=self.work)

    def round(self, number: int, scratch: list[Path], parts: set[str]) -> None:
        home = self.work / f"home{number}"
        home.mkdir()
        out = self.work / f"out{number}"
        by_hand = self.work / "big.bin.age"
        got = self.work / "got.age"

        def send() -> Measured:
            return self.client("send", "s", "acme", str(self.plain), home=home)

        def encrypt_and_put() -> Measured:
            encrypt = self.keep("age -e -o", run(["age", "-e", "-R", str(self.gw.recipients),
                                                  "-o", str(by_hand), str(self.plain)]))
            upload = self.keep("sftp put", self.sftp("s", [f"put {by_hand} /acme/big.bin.age"]))
            by_hand.unlink()
            return _sum(encrypt, upload)

        def fetch() -> Measured:
            measured = self.client("fetch", "p", "-i", str(self.gw.identity_file), "--out",
                                   str(out), "--all", "--overwrite", home=home)
            if number == 0 and not filecmp.cmp(self.plain, out / "big.bin", shallow=False):
                raise SystemExit("blindpost fetch: the decrypted file differs from the input")
            shutil.rmtree(out)
            return measured

        def get_and_decrypt() -> Measured:
            download = self.keep("sftp get", self.sftp("p", [f"get big.bin.age {got}"]))
            decrypt = self.keep("age -d -o", run(["age", "-d", "-i", str(self.gw.identity_file),
                                                  "-o", str(self.work / "by-age.bin"), str(got)]))
            (self.work / "by-age.bin").unlink()
            return _sum(download, decrypt)

        if "send" in parts or "fetch" in parts:
            # fetch needs the file send uploaded.
            self.compare(number, ("blindpost send", send),
                         ("age -e -o + sftp put", encrypt_and_put))
        if "fetch" in parts:
            self.compare(number, ("blindpost fetch", fetch),
                         ("sftp get + age -d -o", get_and_decrypt))
        if "o" not in parts:
            return
        # The ciphertext `sftp get` saved (or age made) is the input of decrypt -o.
        if not got.exists():
            if "fetch" in parts:
                get_and_decrypt()
            else:
                run(["age", "-e", "-R", str(self.gw.recipients), "-o", str(got),
                     str(self.plain)])
        for where in scratch:
            self.outputs(number, where, got)

    def outputs(self, number: int, where: Path, sealed: Path) -> None:
        """encrypt/decrypt -o against age -o, writing new files in ``where``."""
        label = "tmpfs" if str(where).startswith("/dev/shm") else "disk"
        key, recipient = str(self.gw.identity_file), str(self.gw.identity.recipient)
        target = where / "bench-clients.out"

        def timed(argv: list[str]) -> Callable[[], Measured]:
            def measure() -> Measured:
                measured = run(argv)
                target.unlink()
                return measured
            return measure

        self.compare(number, (f"blindpost encrypt -o ({label})", timed(
            [str(self.program), "encrypt", "-r", recipient, "-o", str(target), str(self.plain)])),
            (f"age -e -o ({label})", timed(
                ["age", "-e", "-r", recipient, "-o", str(target), str(self.plain)])))
        self.compare(number, (f"blindpost decrypt -o ({label})", timed(
            [str(self.program), "decrypt", "-i", key, "-o", str(target), str(sealed)])),
            (f"age -d -o ({label})", timed(
                ["age", "-d", "-i", key, "-o", str(target), str(sealed)])))


def _client_env(home: Path) -> dict[str, str]:
    """The clients' environment: PATH, a HOME of their own, and PYTHONPATH if set (to
    measure another checkout's code with this one's environment)."""
    env = {"PATH": os.environ["PATH"], "HOME": str(home)}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def settle() -> None:
    """Write back what earlier commands left dirty in the page cache, untimed, so that no
    command pays for the writeback of the one before it (on the 2-core VM the figures
    come from, the system time of writing 1 GiB varied several-fold with it)."""
    os.sync()


def _sum(first: Measured, second: Measured) -> Measured:
    """Two commands run one after the other."""
    return first[0] + second[0], max(first[1], second[1]), first[2] + second[2]


TARGETS = {"blindpost send": 1.0, "blindpost fetch": 1.0}


def report(bench: Bench) -> None:
    size = bench.size
    print(f"\n{'measurement':36} {'median s':>9} {'fastest':>8} {'slowest':>8} {'MB/s':>6} "
          f"{'CPU s':>6} {'peak RSS':>9}")
    for name, runs in bench.runs.items():
        rss = max(runs.rss_kib)
        shown = f"{rss / 1024:.0f} MiB" if rss else "-"
        print(f"{name:36} {runs.median:9.2f} {min(runs.seconds):8.2f} "
              f"{max(runs.seconds):8.2f} {size / runs.median / 1e6:6.0f} "
              f"{statistics.median(runs.cpu):6.2f} {shown:>9}")
    print()
    for (ours, theirs), pairs in bench.pairs.items():
        ratios = [their / our for our, their in pairs]
        target = TARGETS.get(ours, 1.3)
        value = statistics.median(ratios)
        verdict = "ok" if value >= target else "BELOW TARGET"
        spread = ", ".join(f"{r:.2f}" for r in ratios)
        cpu = [their / our if our else 0.0 for our, their in bench.cpu_pairs[(ours, theirs)]]
        print(f"{ours:30} vs {theirs:24} {value:5.2f}x (rounds: {spread}; "
              f"target {target:.1f}x)  {verdict}; CPU {statistics.median(cpu):.2f}x")
    loads = ", ".join(f"{load:.1f}" for load in bench.loads)
    print(f"load average (1 min) before each round and at the end: {loads}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory parent")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tmpfs", action="store_true",
                        help="also compare -o on /dev/shm (no disk at all)")
    parser.add_argument("--tiny", action="store_true",
                        help="a size that runs in seconds (the test suite runs every bench so)")
    parser.add_argument("--parts", default="send,fetch,o",
                        help="comparisons to run, of send, fetch (which needs send) and o")
    parser.add_argument("--blindpost", type=Path, default=BLINDPOST, metavar="PATH",
                        help="the blindpost program whose client commands are measured "
                        "(default: this checkout's .venv/bin/blindpost)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if not parts <= {"send", "fetch", "o"}:
        parser.error("--parts takes send, fetch and o, comma-separated")
    if not os.access(args.blindpost, os.X_OK):
        parser.error(f"--blindpost {args.blindpost}: not an executable program")
    if args.tiny:
        args.size_mib, args.repeat, args.workers = 1, 1, 1
    for tool in ("age", "sftp"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: make test-deps installs it")
    work = Path(tempfile.mkdtemp(prefix="bench-clients-", dir=args.dir))
    scratch = [work] + ([Path(tempfile.mkdtemp(prefix="bench-clients-", dir="/dev/shm"))]
                        if args.tmpfs and Path("/dev/shm").is_dir() else [])
    print(f"client benchmark: {args.size_mib} MiB, median of {args.repeat}, "
          f"{args.workers} gateway workers, {os.cpu_count()} cores, scratch {work}, "
          f"clients {args.blindpost}")
    gateway = Gateway(work, accounts=2 * args.repeat + 1, workers=args.workers)
    try:
        bench = Bench(work, args.size_mib * MIB, gateway, client=args.blindpost)
        with bench.plain.open("wb") as handle:
            for _ in range(args.size_mib):
                handle.write(os.urandom(MIB))
        settle()
        for number in range(args.repeat):
            bench.loads.append(os.getloadavg()[0])
            print(f"round {number + 1}/{args.repeat}, load {bench.loads[-1]:.1f}",
                  file=sys.stderr)
            bench.round(number, scratch, parts)
        bench.loads.append(os.getloadavg()[0])
        report(bench)
    finally:
        gateway.stop()
        for path in scratch:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
