"""Benchmark: Blindpost's SFTP server against OpenSSH's sshd + sftp-server (not a test).

With the OpenSSH ``sftp`` client and the same cipher on both servers:
1. upload a 1 GiB file (Blindpost encrypts it on the fly) and download it back;
2. 20 concurrent partner downloads of a 64 MiB file from Blindpost.
Prints MB/s, the Blindpost/OpenSSH ratios, server CPU seconds and peak RSS.

Targets: Blindpost >= 60% of OpenSSH both ways; 20 sessions with no errors and an
aggregate throughput at least the single-session figure.

    python bench/sftp.py [--size-mib 1024] [--workers N] [--profile]

Runs as root (sshd needs it). ``--profile`` samples one Blindpost worker with py-spy
during the upload and the download and prints the hottest functions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from gateway import envelope, totp  # noqa: E402
from gateway.actors import Actor  # noqa: E402
from gateway.app import App  # noqa: E402
from gateway.audit.models import AuditEntry  # noqa: E402
from gateway.config import load_settings  # noqa: E402
from gateway.datadir import initialise  # noqa: E402
from gateway.db.models import Role  # noqa: E402
from tests.unit.sftp_server.harness import askpass_script, write_key_pair  # noqa: E402

CIPHER = "aes128-gcm@openssh.com"
MIB = 1 << 20
CONCURRENT = 20
CONCURRENT_MIB = 64
OPERATOR = Actor.local_operator()
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Usage:
    """CPU seconds and peak RSS of a process tree, sampled from /proc."""

    root_pid: int
    cpu: dict[int, float] = field(default_factory=dict)
    peak_rss_kib: dict[int, int] = field(default_factory=dict)

    def sample(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        for pid in descendants(self.root_pid) | {self.root_pid}:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            self.cpu[pid] = (int(stat[11]) + int(stat[12])) / tick
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_kib[pid] = max(self.peak_rss_kib.get(pid, 0),
                                                 int(line.split()[1]))

    def total_cpu(self) -> float:
        return sum(self.cpu.values())

    def peak_rss_mib(self) -> float:
        return max(self.peak_rss_kib.values(), default=0) / 1024


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class Sampler:
    """Samples a process tree every 0.2 s while a transfer runs."""

    def __init__(self, root_pid: int) -> None:
        self.usage = Usage(root_pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.usage.sample()

    def __enter__(self) -> Usage:
        self.usage.sample()
        self._before = dict(self.usage.cpu)
        self._thread.start()
        return self.usage

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.usage.sample()
        for pid, before in self._before.items():
            self.usage.cpu[pid] = self.usage.cpu.get(pid, before) - before


@dataclass
class Result:
    label: str
    seconds: float
    size: int
    cpu: float
    rss_mib: float
    ok: bool = True

    @property
    def mb_s(self) -> float:
        return self.size / self.seconds / 1e6


def run_sftp(port: int, user: str, key: Path, commands: list[str], workdir: Path,
             known_hosts: Path, code: str | None = None) -> subprocess.Popen[str]:
    batch = workdir / f"batch-{user}-{time.monotonic_ns()}.txt"
    batch.write_text("\n".join(commands) + "\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(workdir), "DISPLAY": ":0"}
    if code is not None:
        env |= {"SSH_ASKPASS": str(askpass_script(workdir, code)),
                "SSH_ASKPASS_REQUIRE": "force"}
    args = ["sftp", "-q", "-o", "BatchMode=no", "-b", str(batch), "-P", str(port),
            "-c", CIPHER, "-i", str(key), "-F", "/dev/null", "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=no",
            f"{user}@127.0.0.1"]
    return subprocess.Popen(args, env=env, cwd=workdir, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def timed(label: str, size: int, root_pid: int,
          start: Callable[[], subprocess.Popen[str]]) -> Result:
    with Sampler(root_pid) as usage:
        began = time.monotonic()
        process = start()
        _, err = process.communicate()
        seconds = time.monotonic() - began
    if process.returncode != 0:
        print(f"  {label}: FAILED: {err.strip()}")
    return Result(label, seconds, size, usage.total_cpu(), usage.peak_rss_mib(),
                  process.returncode == 0)


def _admin(app: App, username: str) -> Actor:
    """An admin's actor, as a proven sign-in would hand it to the services."""
    info = app.accounts.get(OPERATOR, username)
    return Actor.account(username=info.username, account_id=info.id, role=info.role,
                         partner_id=None, source="local")


class Blindpost:
    """A data directory with staff and partner users, and ``blindpost sftp`` running."""

    def __init__(self, work: Path, workers: int, *, name: str = "bp",
                 env: dict[str, str] | None = None, partners: int = CONCURRENT + 2) -> None:
        self.work = work
        self.data_dir = work / name
        initialise(self.data_dir, admin="root-admin", environ={})
        settings = load_settings(data_dir=self.data_dir, environ={})
        app = App(settings)
        app.accounts.add(OPERATOR, username="second-admin", role=Role.ADMIN)
        app.partners.add(OPERATOR, slug="acme")
        identity = envelope.generate_identity(post_quantum=False)
        key = app.keys.propose(_admin(app, "root-admin"), partner="acme",
                               recipient=str(identity.recipient))
        app.keys.approve(_admin(app, "second-admin"), key_id=key.id)
        self.recipient = identity.recipient
        self.secrets: dict[str, str] = {}
        self.last_step: dict[str, int] = {}
        self.keys: dict[str, Path] = {}
        # ``partners`` partner users (the concurrent downloads need that many).
        for user, role in [("clerk", Role.STAFF)] + [(f"p{i}", Role.PARTNER)
                                                     for i in range(partners)]:
            key_path = self.data_dir.parent / f"id_{self.data_dir.name}_{user}"
            public = write_key_pair(key_path, user)
            new = app.accounts.add(OPERATOR, username=user, role=role,
                                   partner="acme" if role is Role.PARTNER else None,
                                   ssh_keys=[public])
            self.secrets[user] = new.totp_uri.split("secret=")[1].split("&")[0]
            self.keys[user] = key_path
        app.close()
        self.port = free_port()
        self.process = subprocess.Popen(
            [str(ROOT / ".venv/bin/blindpost"), "sftp", "--data-dir", str(self.data_dir),
             "--listen", f"127.0.0.1:{self.port}", "--workers", str(workers)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            # All the benchmark's clients come from 127.0.0.1.
            env={**os.environ, "BLINDPOST_SFTP_MAX_CONNECTIONS_PER_SOURCE": "100",
                 **(env or {})})
        assert self.process.stdout is not None
        print("  " + self.process.stdout.readline().strip())

    def code(self, user: str) -> str:
        """A code for a time step this user has not used yet (a reused one is a replay)."""
        while totp.time_step(datetime.now(UTC)) <= self.last_step.get(user, -1):
            time.sleep(0.5)
        now = datetime.now(UTC)
        self.last_step[user] = totp.time_step(now)
        return totp.current_code(self.secrets[user], now=now)

    def workers(self) -> list[int]:
        return [pid for pid in descendants(self.process.pid)
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]

    def sftp(self, user: str, commands: list[str]) -> subprocess.Popen[str]:
        return run_sftp(self.port, user, self.keys[user], commands, self.work,
                        self.work / "known_hosts", code=self.code(user))

    def completed_downloads(self, name: str) -> int:
        """Complete downloads of ``name``, as the audit log recorded them."""
        app = App(load_settings(data_dir=self.data_dir, environ={}))
        try:
            with app.transaction() as session:
                leaves = session.scalars(select(AuditEntry.leaf)).all()
        finally:
            app.close()
        events = [json.loads(leaf) for leaf in leaves]
        return sum(1 for e in events
                   if e["tag"] == "file:download:complete" and e["details"]["name"] == name)

    def stop(self) -> None:
        self.process.terminate()
        self.process.communicate(timeout=60)


class OpenSSH:
    """sshd with its own config, host key and authorized key, on another loopback port."""

    def __init__(self, work: Path) -> None:
        self.work = work / "sshd"
        self.work.mkdir()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(self.work / "host_key")], check=True)
        self.key = self.work / "id_user"
        public = write_key_pair(self.key, "bench")
        (self.work / "authorized_keys").write_text(public.openssh() + "\n")
        self.port = free_port()
        config = self.work / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.work / 'host_key'}\n"
            f"PidFile {self.work / 'sshd.pid'}\nAuthorizedKeysFile {self.work}/authorized_keys\n"
            "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            f"Subsystem sftp {SFTP_SERVER}\n")
        self.process = subprocess.Popen([shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e",
                                         "-f", str(config)], stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def sftp(self, commands: list[str]) -> subprocess.Popen[str]:
        return run_sftp(self.port, "root", self.key, commands, self.work,
                        self.work / "known_hosts")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def profile(pids: list[int], seconds: int, output: Path) -> list[subprocess.Popen[bytes]]:
    """py-spy on every worker (the kernel picks which one gets the connection)."""
    return [subprocess.Popen([str(ROOT / ".venv/bin/py-spy"), "record", "--pid", str(pid),
                              "--duration", str(seconds), "--format", "raw", "--nonblocking",
                              "--output", f"{output}.{pid}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for pid in pids]


def busiest_profile(spies: list[subprocess.Popen[bytes]], output: Path) -> Path | None:
    for spy in spies:
        spy.wait()
    raws = [p for p in output.parent.glob(output.name + ".*") if p.stat().st_size]
    return max(raws, key=lambda p: sum(int(line.rpartition(" ")[2])
                                       for line in p.read_text().splitlines()), default=None)


def hottest(raw: Path, top: int = 12) -> list[tuple[str, float]]:
    """Self time per function from py-spy's collapsed stacks."""
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frame = stack.split(";")[-1]
        leaves[frame.split(" (")[0] + " (" + frame.split("/")[-1]] += int(count)
        total += int(count)
    return [(name, 100 * n / total) for name, n in leaves.most_common(top)]


def report(rows: list[Result]) -> None:
    print(f"  {'transfer':<44} {'MB/s':>8} {'s':>7} {'srv CPU s':>9} {'peak RSS MiB':>12}")
    for row in rows:
        status = "" if row.ok else "  FAILED"
        print(f"  {row.label:<44} {row.mb_s:8.1f} {row.seconds:7.2f} {row.cpu:9.2f} "
              f"{row.rss_mib:12.1f}{status}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--tiny", action="store_true",
                        help="a size that runs in seconds (the test suite runs every bench so)")
    args = parser.parse_args()
    if args.tiny:
        args.size_mib, args.workers = 1, 1
    concurrent_mib = 1 if args.tiny else CONCURRENT_MIB
    size = args.size_mib * MIB
    work = Path(tempfile.mkdtemp(prefix="bench-sftp-"))
    work.chmod(0o755)
    print(f"SFTP benchmark: {args.size_mib} MiB, cipher {CIPHER}, "
          f"{args.workers} Blindpost workers, {os.cpu_count()} cores")
    with (work / "big.bin").open("wb") as handle:
        for _ in range(args.size_mib):
            handle.write(os.urandom(MIB))
    with (work / "conc.bin").open("wb") as handle:
        handle.write(os.urandom(concurrent_mib * MIB))
    blindpost, openssh = Blindpost(work, args.workers), OpenSSH(work)
    rows: list[Result] = []
    try:
        rows += run_pair(blindpost, openssh, size, work, args.profile)
        # --tiny too runs 20 sessions at once on one worker: on a loaded machine they once
        # stalled on SQLite's write lock for 30 s (see gateway/ledger.py, Ledger.catch_up).
        rows += concurrent(blindpost, work, concurrent_mib)
    finally:
        blindpost.stop()
        openssh.stop()
    report(rows)
    verdict(rows)
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(row.ok for row in rows) else 1


def run_pair(bp: Blindpost, ossh: OpenSSH, size: int, work: Path,
             with_profile: bool) -> list[Result]:
    (ossh.work / "in").mkdir()
    pid = bp.process.pid
    spies = profile(bp.workers(), 8, work / "up.raw") if with_profile else []
    up = timed("Blindpost upload (encrypting)", size, pid,
               lambda: bp.sftp("clerk", [f"put {work / 'big.bin'} /acme/big.bin"]))
    spies_down = profile(bp.workers(), 8, work / "down.raw") if with_profile else []
    down = timed("Blindpost download", size, pid,
                 lambda: bp.sftp("p0", [f"get big.bin.age {work / 'back.age'}"]))
    ossh_up = timed("OpenSSH sshd upload", size, ossh.process.pid,
                    lambda: ossh.sftp([f"put {work / 'big.bin'} {ossh.work / 'in/big.bin'}"]))
    ossh_down = timed("OpenSSH sshd download", size, ossh.process.pid,
                      lambda: ossh.sftp([f"get {ossh.work / 'in/big.bin'} {work / 'o.bin'}"]))
    for spy_processes, raw_name, name in ((spies, "up.raw", "upload"),
                                          (spies_down, "down.raw", "download")):
        raw = busiest_profile(spy_processes, work / raw_name) if spy_processes else None
        if raw is not None:
            print(f"  py-spy, busiest worker, first 8 s of the {name}: hottest functions "
                  "(self time)")
            for frame, share in hottest(raw):
                print(f"    {share:5.1f}%  {frame}")
    check_size(down, work / "back.age", minimum=size)
    check_size(ossh_up, ossh.work / "in/big.bin", minimum=size)
    check_size(ossh_down, work / "o.bin", minimum=size)
    return [up, down, ossh_up, ossh_down]


def check_size(result: Result, path: Path, *, minimum: int) -> None:
    """A transfer only counts if the whole file arrived."""
    if not path.exists() or path.stat().st_size < minimum:
        print(f"  {result.label}: incomplete ({path.stat().st_size if path.exists() else 0} "
              f"of {minimum} bytes)")
        result.ok = False


@dataclass
class Side:
    """One Blindpost server of a with/without comparison, the file its clerk uploads, and
    how the comparison names it."""
    label: str
    name: str
    server: Blindpost
    source: Path


def with_and_without(feature: str, what: str, size_mib: int, rounds: int, openssh: OpenSSH,
                     source: Path, sides: tuple[Side, Side]) -> bool:
    """Upload ``source`` to OpenSSH and each side's file to its server in ``rounds``
    rotating orders; print the medians, their ratios to OpenSSH and with / without
    ``feature``; True when every upload arrived whole."""
    size = source.stat().st_size
    suffix = source.suffix
    runs: dict[str, list[Result]] = {"openssh": [], **{side.label: [] for side in sides}}
    order: list[Side | None] = [None, *sides]
    for number in range(rounds):
        for side in order[number % 3:] + order[:number % 3]:
            if side is None:
                target = openssh.work / "in" / f"up{number}{suffix}"
                result = timed("OpenSSH sshd upload", size, openssh.process.pid,
                               lambda: openssh.sftp([f"put {source} {target}"]))  # noqa: B023
                check_size(result, target, minimum=size)
                target.unlink(missing_ok=True)
                runs["openssh"].append(result)
                continue
            # The one-time code is taken before the clock starts: waiting for a fresh time
            # step (a reused code is a replay) is not upload time.
            server, code = side.server, side.server.code("clerk")
            runs[side.label].append(timed(
                f"Blindpost upload, {side.label}", size, server.process.pid,
                lambda: run_sftp(server.port, "clerk", server.keys["clerk"],  # noqa: B023
                                 [f"put {side.source} /acme/up{number}{suffix}"],  # noqa: B023
                                 server.work, server.work / "known_hosts", code=code)))  # noqa: B023
    median = {label: statistics.median(r.mb_s for r in results)
              for label, results in runs.items()}
    on, off = sides
    print(f"SFTP upload of a {size_mib} MiB {what}, median of {rounds} (alternating order):")
    for label, name in (("openssh", "OpenSSH sshd + sftp-server"), (on.label, on.name),
                        (off.label, off.name)):
        speeds = [r.mb_s for r in runs[label]]
        print(f"  {name:<38} {median[label]:7.1f} MB/s  "
              f"(runs {min(speeds):.1f}-{max(speeds):.1f})")
    print(f"  upload ratio Blindpost/OpenSSH with the {feature}:    "
          f"{median[on.label] / median['openssh']:5.0%}")
    print(f"  upload ratio Blindpost/OpenSSH without the {feature}: "
          f"{median[off.label] / median['openssh']:5.0%}")
    print(f"  with / without the {feature}: {median[on.label] / median[off.label]:5.2f}x")
    return all(r.ok for results in runs.values() for r in results)


def concurrent(bp: Blindpost, work: Path, mib: int = CONCURRENT_MIB,
               count: int = CONCURRENT) -> list[Result]:
    """One 64 MiB download, then ``count`` (20) at once, to /dev/null: this measures the
    server, not the client machine's disk (which all 20 clients share here)."""
    size = mib * MIB
    # A link to /dev/null, never /dev/null itself: an sftp client run as root can unlink
    # what a failed download wrote to (bench/scale.py found /dev/null a regular file).
    discard = work / "null"
    if not discard.is_symlink():
        discard.symlink_to(os.devnull)
    bp.sftp("clerk", [f"put {work / 'conc.bin'} /acme/conc.bin"]).communicate()
    single = timed(f"Blindpost 1 download of {mib} MiB", size, bp.process.pid,
                   lambda: bp.sftp("p1", [f"get conc.bin.age {discard}"]))
    with Sampler(bp.process.pid) as usage:
        began = time.monotonic()
        processes = [bp.sftp(f"p{i}", [f"get conc.bin.age {discard}"])
                     for i in range(2, count + 2)]
        errors = [p.communicate()[1] for p in processes]
        seconds = time.monotonic() - began
    failures = [err for p, err in zip(processes, errors, strict=True) if p.returncode != 0]
    for err in failures:
        print(f"  concurrent download FAILED: {err.strip()}")
    complete = bp.completed_downloads("conc.bin.age")
    if complete != count + 1:
        print(f"  only {complete} of {count + 1} downloads were complete (audit log)")
    many = Result(f"Blindpost {count} concurrent downloads (aggregate)", seconds,
                  count * size, usage.total_cpu(), usage.peak_rss_mib(),
                  not failures and complete == count + 1)
    return [single, many]


def verdict(rows: list[Result]) -> None:
    up, down, ossh_up, ossh_down, single, conc = rows
    print(f"  ratio upload   Blindpost/OpenSSH: {up.mb_s / ossh_up.mb_s:5.0%} (target >= 60%)")
    print(f"  ratio download Blindpost/OpenSSH: {down.mb_s / ossh_down.mb_s:5.0%} "
          "(target >= 60%)")
    print(f"  concurrent aggregate / single download: {conc.mb_s / single.mb_s:5.2f}x "
          f"(target >= 1.0x, errors: {'none' if conc.ok else 'YES'})")


if __name__ == "__main__":
    sys.exit(main())
