"""Benchmark: `blindpost send/fetch` against OpenSSH `sftp` + `age` by hand (not a test).

Over one `blindpost sftp` gateway on loopback, with a 1 GiB file of random bytes:

- **send**: `blindpost send` (encrypts while it uploads, then checks the recorded hash)
  against `age -e -R LIST -o FILE.age` followed by `sftp put FILE.age`, as a person would
  run them, timed together;
- **fetch**: `blindpost fetch` (downloads, decrypts while it downloads, checks the hash,
  fsyncs, renames) against `sftp get FILE.age` followed by `age -d -o FILE`;
- **-o**: `blindpost encrypt -o` and `decrypt -o` against `age -e -o` / `age -d -o`, on the
  scratch directory and on /dev/shm (tmpfs);
- **fsync**: the same `blindpost decrypt -o` and `fetch` with ``os.fsync`` turned into a
  no-op, so the difference is what durability costs (the manual pairs never fsync).

Every command is timed from outside, start-up and sign-in included; each is repeated
(``--repeat``) and the fastest run kept, since noise on a shared machine only slows runs
down. Each sign-in uses an account of its own, so no one-time code is needed twice.
Targets: send and fetch at least as fast as their manual pairs; ``-o`` at least as fast
as ``age -o`` both ways. Partner keys are X25519, which Debian's age 1.1 reads.

    .venv/bin/python bench/clients.py [--size-mib 1024] [--repeat 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIB = 1 << 20
# The blindpost CLI with fsync made a no-op, to price durability; started
# like the `blindpost` script, so only the syncing differs.
NO_FSYNC = ("import os, sys; os.fsync = lambda fd: None; "
            "from gateway.cli import main; main(sys.argv[1:], prog_name='blindpost')")
BLINDPOST = ROOT / ".venv" / "bin" / "blindpost"
TIME = shutil.which("time", path="/usr/bin")


@dataclass
class Best:
    seconds: float
    rss_kib: int
    cpu: float


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
    def __init__(self, work: Path, size: int, gateway: Gateway) -> None:
        self.work = work
        self.size = size
        self.gw = gateway
        self.plain = work / "big.bin"
        self.best: dict[str, Best] = {}

    def keep(self, name: str, result: Measured) -> Measured:
        seconds, rss, cpu = result
        if name not in self.best or seconds < self.best[name].seconds:
            self.best[name] = Best(seconds, rss, cpu)
        return result

    def client(self, command: str, kind: str, *args: str, home: Path,
               durable: bool = True) -> Measured:
        name, key, code = self.gw.account(kind)
        program = [str(BLINDPOST)] if durable else [sys.executable, "-c", NO_FSYNC]
        return run([*program, command, "--host", "127.0.0.1", "--port",
                    str(self.gw.port), "--user", name, "--key", str(key), "--known-hosts",
                    str(self.gw.known_hosts), "--totp-command", f"echo {code}", *args],
                   env={"PATH": os.environ["PATH"], "HOME": str(home)}, cwd=self.work)

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

    def round(self, number: int, scratch: list[Path]) -> None:
        home = self.work / f"home{number}"
        home.mkdir()
        out = self.work / f"out{number}"
        out.mkdir()
        self.keep("blindpost send", self.client("send", "s", "acme", str(self.plain),
                                                home=home))
        by_hand = self.work / "big.bin.age"
        encrypt = self.keep("age -e -o", run(["age", "-e", "-R", str(self.gw.recipients),
                                              "-o", str(by_hand), str(self.plain)]))
        upload = self.keep("sftp put", self.sftp("s", [f"put {by_hand} /acme/big.bin.age"]))
        self.keep("age -e -o + sftp put", _sum(encrypt, upload))
        self.keep("blindpost fetch", self.client(
            "fetch", "p", "-i", str(self.gw.identity_file), "--out", str(out), home=home))
        if number == 0 and not filecmp.cmp(self.plain, out / "big.bin", shallow=False):
            raise SystemExit("blindpost fetch: the decrypted file differs from the input")
        (out / "big.bin").unlink()
        self.keep("blindpost fetch, no fsync", self.client(
            "fetch", "p", "-i", str(self.gw.identity_file), "--out", str(out), "--all",
            home=home, durable=False))
        got = self.work / "got.age"
        download = self.keep("sftp get", self.sftp("p", [f"get big.bin.age {got}"]))
        decrypt = self.keep("age -d -o", run(["age", "-d", "-i", str(self.gw.identity_file),
                                              "-o", str(self.work / "by-age.bin"), str(got)]))
        self.keep("sftp get + age -d -o", _sum(download, decrypt))
        (self.work / "by-age.bin").unlink()
        shutil.rmtree(out)
        for where in scratch:
            self.outputs(where, got)

    def outputs(self, where: Path, sealed: Path) -> None:
        """encrypt/decrypt -o against age -o, writing new files in ``where``."""
        label = "tmpfs" if str(where).startswith("/dev/shm") else "disk"
        key, recipient = str(self.gw.identity_file), str(self.gw.identity.recipient)
        target = where / "bench-clients.out"
        commands = {
            f"age -e -o ({label})": ["age", "-e", "-r", recipient, "-o", str(target),
                                     str(self.plain)],
            f"blindpost encrypt -o ({label})": [str(BLINDPOST), "encrypt", "-r", recipient,
                                                "-o", str(target), str(self.plain)],
            f"blindpost encrypt -o, no fsync ({label})": [
                sys.executable, "-c", NO_FSYNC, "encrypt", "-r", recipient, "-o",
                str(target), str(self.plain)],
            f"age -d -o ({label})": ["age", "-d", "-i", key, "-o", str(target), str(sealed)],
            f"blindpost decrypt -o ({label})": [str(BLINDPOST), "decrypt", "-i", key, "-o",
                                                str(target), str(sealed)],
            f"blindpost decrypt -o, no fsync ({label})": [
                sys.executable, "-c", NO_FSYNC, "decrypt", "-i", key, "-o", str(target),
                str(sealed)],
        }
        for name, argv in commands.items():
            self.keep(name, run(argv))
            target.unlink()


def _sum(first: Measured, second: Measured) -> Measured:
    """Two commands run one after the other."""
    return first[0] + second[0], max(first[1], second[1]), first[2] + second[2]


def report(bench: Bench) -> None:
    size = bench.size
    print(f"\n{'measurement':44} {'seconds':>8} {'MB/s':>8} {'CPU s':>7} {'peak RSS':>10}")
    for name, best in bench.best.items():
        rss = f"{best.rss_kib / 1024:.0f} MiB" if best.rss_kib else "-"
        print(f"{name:44} {best.seconds:8.2f} {size / best.seconds / 1e6:8.0f} "
              f"{best.cpu:7.2f} {rss:>10}")
    print()

    def ratio(ours: str, theirs: str) -> None:
        if ours in bench.best and theirs in bench.best:
            value = bench.best[theirs].seconds / bench.best[ours].seconds
            verdict = "ok" if value >= 1 else "SLOWER"
            print(f"{ours:36} vs {theirs:30} {value:5.2f}x as fast  {verdict}")

    ratio("blindpost send", "age -e -o + sftp put")
    ratio("blindpost fetch", "sftp get + age -d -o")
    ratio("blindpost fetch, no fsync", "sftp get + age -d -o")
    for label in ("disk", "tmpfs"):
        ratio(f"blindpost encrypt -o ({label})", f"age -e -o ({label})")
        ratio(f"blindpost decrypt -o ({label})", f"age -d -o ({label})")
        for direction in ("encrypt", "decrypt"):
            durable = bench.best.get(f"blindpost {direction} -o ({label})")
            loose = bench.best.get(f"blindpost {direction} -o, no fsync ({label})")
            if durable and loose:
                print(f"durable fsync of {direction} -o ({label}): "
                      f"{durable.seconds - loose.seconds:+.2f} s per {size / MIB:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory parent")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tiny", action="store_true",
                        help="a size that runs in seconds (the test suite runs every bench so)")
    args = parser.parse_args()
    if args.tiny:
        args.size_mib, args.repeat, args.workers = 1, 1, 1
    for tool in ("age", "sftp"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: make test-deps installs it")
    work = Path(tempfile.mkdtemp(prefix="bench-clients-", dir=args.dir))
    scratch = [work] + ([Path(tempfile.mkdtemp(prefix="bench-clients-", dir="/dev/shm"))]
                        if Path("/dev/shm").is_dir() else [])
    print(f"client benchmark: {args.size_mib} MiB, best of {args.repeat}, "
          f"{args.workers} gateway workers, {os.cpu_count()} cores, scratch {work}")
    gateway = Gateway(work, accounts=3 * args.repeat, workers=args.workers)
    try:
        bench = Bench(work, args.size_mib * MIB, gateway)
        with bench.plain.open("wb") as handle:
            for _ in range(args.size_mib):
                handle.write(os.urandom(MIB))
        for number in range(args.repeat):
            print(f"round {number + 1}/{args.repeat}", file=sys.stderr)
            bench.round(number, scratch)
        report(bench)
    finally:
        gateway.stop()
        for path in scratch:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
