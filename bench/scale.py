"""Benchmark: many concurrent SFTP sessions over two nodes on PostgreSQL and S3 (not a test).

Scale-out: two ``blindpost sftp`` nodes (one worker process each by default) sharing a
PostgreSQL database and an S3 endpoint (a moto server: MinIO does not run here), with the
sessions spread evenly over the nodes. Reference, in the same run (unless
``--no-reference``): one node with as many worker processes in total, on SQLite and the
local store. For each, one wave per count in ``--sessions`` (default 20, 100 and 200
sessions), one after the other: half of the clients upload a 16 MiB file each, half
download a 16 MiB file, all at once, with the OpenSSH ``sftp`` client and real TOTP codes.

Prints aggregate throughput, p99 time to sign in (client start to the audit log's
``auth:login:success``), peak memory per node (the sum of its processes' RSS, sampled),
and errors (failed clients, or transfers missing from the audit log). Targets: no errors;
memory flat with the session count (the largest wave's peak close to the smallest's).

    python bench/scale.py [--sessions 20,100,200] [--size-mib 16] [--workers 1]
                          [--transfers both|uploads|downloads] [--no-reference]
                          [--setting NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from bench.sftp import descendants  # noqa: E402
from gateway import envelope, totp  # noqa: E402
from gateway.actors import Actor  # noqa: E402
from gateway.app import App  # noqa: E402
from gateway.audit.models import AuditEntry  # noqa: E402
from gateway.config import load_settings  # noqa: E402
from gateway.datadir import initialise  # noqa: E402
from gateway.db.models import Role  # noqa: E402
from tests.postgres import create_database, postgres_server  # noqa: E402
from tests.s3 import create_bucket, moto_server, s3_settings  # noqa: E402
from tests.unit.gateway.factories import actor  # noqa: E402
from tests.unit.sftp_server.harness import askpass_script, write_key_pair  # noqa: E402

MIB = 1 << 20
# What each wave's sessions do (--transfers).
TRANSFERS = {"both": ("up", "down"), "uploads": ("up",), "downloads": ("down",)}
OPERATOR = Actor.local_operator()


class MemorySampler:
    """Peak of the summed RSS of each node's process tree, sampled every 0.2 s."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak_mib = [0.0] * len(pids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for index, pid in enumerate(self.pids):
                total = 0
                for member in descendants(pid) | {pid}:
                    try:
                        status = Path(f"/proc/{member}/status").read_text()
                    except OSError:
                        continue
                    total += next((int(line.split()[1]) for line in status.splitlines()
                                   if line.startswith("VmRSS:")), 0)
                self.peak_mib[index] = max(self.peak_mib[index], total / 1024)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Wave:
    label: str
    sessions: int
    seconds: float
    bytes_moved: int
    sign_in: list[float]
    peak_mib: list[float]
    errors: list[str] = field(default_factory=list)

    @property
    def mb_s(self) -> float:
        return self.bytes_moved / self.seconds / 1e6

    @property
    def p99(self) -> float:
        if len(self.sign_in) < 2:
            return max(self.sign_in, default=0.0)
        return statistics.quantiles(self.sign_in, n=100)[98]


def _relay(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        if not line.startswith("INFO"):
            sys.stderr.write(line)


class Cluster:
    """Data directories, users, and running ``blindpost sftp`` nodes for one scenario."""

    def __init__(self, work: Path, env: dict[str, str], *, nodes: int, workers: int,
                 users: int, size: int) -> None:
        self.work = work
        self.env = env
        self.size = size
        data = work / "node0"
        initialise(data, admin="root-admin", environ=env)
        for index in range(1, nodes):  # Other nodes: the same keys and configuration.
            shutil.copytree(data, work / f"node{index}")
        self.settings = load_settings(data_dir=data, environ=env)
        self.secrets: dict[str, str] = {}
        self._populate(users)
        self.processes: list[subprocess.Popen[str]] = []
        self.ports: list[int] = []
        for index in range(nodes):
            self._start(work / f"node{index}", workers)

    def _populate(self, users: int) -> None:
        app = App(self.settings)
        try:
            app.accounts.add(OPERATOR, username="second-admin", role=Role.ADMIN)
            app.partners.add(OPERATOR, slug="acme")
            identity = envelope.generate_identity(post_quantum=True)
            key = app.keys.propose(actor(app, "root-admin"), partner="acme",
                                   recipient=str(identity.recipient))
            app.keys.approve(actor(app, "second-admin"), key_id=key.id)
            for n in range(users):
                for name, role in ((f"clerk{n}", Role.STAFF), (f"p{n}", Role.PARTNER)):
                    public = write_key_pair(self.work / f"id_{name}", name)
                    new = app.accounts.add(OPERATOR, username=name, role=role,
                                           partner="acme" if role is Role.PARTNER else None,
                                           ssh_keys=[public])
                    self.secrets[name] = new.totp_uri.split("secret=")[1].split("&")[0]
            staff = actor(app, "clerk0")
            upload = app.transfers.begin_upload(staff, partner="acme", name="shared.bin")
            for _ in range(self.size // MIB):
                upload.write(os.urandom(MIB))
            upload.commit()
        finally:
            app.close()

    def _start(self, data_dir: Path, workers: int) -> None:
        process = subprocess.Popen(
            [str(ROOT / ".venv/bin/blindpost"), "sftp", "--data-dir", str(data_dir),
             "--listen", "127.0.0.1:0", "--workers", str(workers)],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if not match:
            raise RuntimeError(f"node did not start: {line}{process.stdout.read()}")
        # The node's log goes to this benchmark's stderr (warnings and errors only).
        threading.Thread(target=_relay, args=(process,), daemon=True).start()
        self.processes.append(process)
        self.ports.append(int(match.group(1)))

    def client(self, user: str, port: int, commands: list[str]) -> subprocess.Popen[str]:
        code = totp.current_code(self.secrets[user], now=datetime.now(UTC))
        batch = self.work / f"batch-{user}.txt"
        batch.write_text("\n".join(commands) + "\n")
        env = {"PATH": os.environ["PATH"], "HOME": str(self.work), "DISPLAY": ":0",
               "SSH_ASKPASS": str(askpass_script(self.work, code)),
               "SSH_ASKPASS_REQUIRE": "force"}
        return subprocess.Popen(
            ["sftp", "-q", "-o", "BatchMode=no", "-b", str(batch), "-P", str(port),
             "-i", str(self.work / f"id_{user}"), "-F", "/dev/null",
             "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
             "-o", f"UserKnownHostsFile={self.work / 'known_hosts'}", f"{user}@127.0.0.1"],
            env=env, cwd=self.work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)

    def discard(self, n: int) -> Path:
        """Where download ``n`` writes: a link to /dev/null, never /dev/null itself. After a
        wave whose downloads failed, run as root, /dev/null was found a regular file (an
        ``sftp`` client can unlink what it downloads to): unlinked, the link goes alone."""
        link = self.work / f"null-{n}"
        if not link.is_symlink():
            link.symlink_to(os.devnull)
        return link

    def events(self, tag: str) -> list[dict[str, object]]:
        app = App(self.settings)
        try:
            with app.transaction() as session:
                leaves = session.scalars(select(AuditEntry.leaf).where(
                    AuditEntry.tag == tag)).all()
        finally:
            app.close()
        return [json.loads(leaf) for leaf in leaves]

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=60)


def run_wave(cluster: Cluster, label: str, users: range, source: Path,
             kinds: tuple[str, ...] = ("up", "down")) -> Wave:
    """Each user of ``users`` runs one session of each kind (an upload, a download),
    spread round-robin over the nodes."""
    launched: dict[str, float] = {}
    clients: list[tuple[str, subprocess.Popen[str]]] = []
    ports = cluster.ports
    with MemorySampler([p.pid for p in cluster.processes]) as memory:
        began = time.monotonic()
        for offset, n in enumerate(users):
            for kind, user, commands in (
                    ("up", f"clerk{n}", [f"put {source} /acme/up-{n}.bin"]),
                    ("down", f"p{n}", [f"get shared.bin.age {cluster.discard(n)}"])):
                if kind not in kinds:
                    continue
                # Each node gets as many uploads as downloads.
                port = ports[(offset + (kind == "down")) % len(ports)]
                launched[user] = time.time()
                clients.append((user, cluster.client(user, port, commands)))
        failures = []
        for user, process in clients:
            _, err = process.communicate(timeout=1800)
            if process.returncode != 0:
                failures.append(f"{user}: {err.strip()[:200]}")
        seconds = time.monotonic() - began
    names = (({f"clerk{n}" for n in users} if "up" in kinds else set())
             | ({f"p{n}" for n in users} if "down" in kinds else set()))
    sign_in = [datetime.strptime(str(e["time"]), "%Y-%m-%dT%H:%M:%S.%fZ")
               .replace(tzinfo=UTC).timestamp() - launched[str(e["actor"])]
               for e in cluster.events("auth:login:success") if e["actor"] in names]
    uploads = {str(e["actor"]) for e in cluster.events("file:upload:complete")} & names
    downloads = {str(e["actor"]) for e in cluster.events("file:download:complete")} & names
    missing = [f"{n}: no complete transfer in the audit log"
               for n in sorted(names - uploads - downloads)]
    return Wave(label, len(clients), seconds, len(clients) * cluster.size, sign_in,
                memory.peak_mib, failures + missing)


def scenario(label: str, env: dict[str, str], args: argparse.Namespace, work: Path,
             *, nodes: int, workers: int, source: Path) -> list[Wave]:
    """One wave per session count, each with users of its own (half staff, half partners,
    unless ``--transfers`` keeps one kind only)."""
    kinds = TRANSFERS[args.transfers]
    halves = [sessions // len(kinds) for sessions in args.sessions]
    cluster = Cluster(work, env, nodes=nodes, workers=workers, users=sum(halves),
                      size=args.size_mib * MIB)
    waves, first = [], 0
    try:
        for sessions, half in zip(args.sessions, halves, strict=True):
            waves.append(run_wave(cluster, f"{label}, {sessions} sessions",
                                  range(first, first + half), source, kinds))
            first += half
        return waves
    finally:
        cluster.stop()


def common_env(args: argparse.Namespace) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("BLINDPOST_")},
            # Every client comes from 127.0.0.1, and one node takes every session of the
            # reference run; the limits leave room for the last wave's closing sessions.
            "BLINDPOST_SFTP_MAX_CONNECTIONS_PER_SOURCE": str(2 * max(args.sessions)),
            "BLINDPOST_SFTP_MAX_CONNECTIONS": str(max(200, 2 * max(args.sessions))),
            **{f"BLINDPOST_{name.upper()}": value for name, value in args.setting}}


def report(waves: list[Wave]) -> None:
    print(f"  {'run':<44} {'MB/s':>7} {'wall s':>7} {'p99 sign-in s':>13} "
          f"{'peak RSS MiB per node':>22} {'errors':>6}")
    for wave in waves:
        peaks = " / ".join(f"{peak:.0f}" for peak in wave.peak_mib)
        print(f"  {wave.label:<44} {wave.mb_s:7.1f} {wave.seconds:7.1f} {wave.p99:13.2f} "
              f"{peaks:>22} {len(wave.errors):6d}")
        for error in wave.errors[:5]:
            print(f"    error: {error}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=_counts, default=[20, 100, 200],
                        help="session counts of the waves, comma-separated (default 20,100,200)")
    parser.add_argument("--size-mib", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="worker processes per node")
    parser.add_argument("--transfers", choices=sorted(TRANSFERS), default="both",
                        help="what the sessions do: half upload and half download (default), "
                             "or all upload, or all download")
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="skip the one-node run on SQLite and the local store")
    parser.add_argument("--setting", type=_setting, action="append", default=[],
                        metavar="NAME=VALUE",
                        help="a setting for every node (sftp_receive_budget_mib=64); repeatable")
    parser.add_argument("--tiny", action="store_true",
                        help="a size that runs in seconds (the test suite runs every bench so)")
    args = parser.parse_args()
    if args.tiny:
        args.sessions, args.size_mib = [2, 4], 1
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    source = work / "upload.bin"
    source.write_bytes(os.urandom(args.size_mib * MIB))
    what = {"both": "half uploads, half downloads", "uploads": "all uploads",
            "downloads": "all downloads"}[args.transfers]
    print(f"Scale benchmark: waves of {', '.join(map(str, args.sessions))} sessions "
          f"({what}), file {args.size_mib} MiB, {os.cpu_count()} cores, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
          + "".join(f", {name}={value}" for name, value in args.setting))
    out: list[Wave] = []
    one: list[Wave] = []
    try:
        with ExitStack() as stack:
            pg_base = stack.enter_context(postgres_server())
            s3 = stack.enter_context(moto_server())
            env = {**common_env(args), "BLINDPOST_DATABASE_URL": create_database(pg_base, "scale"),
                   **{f"BLINDPOST_{k.upper()}": str(v)
                      for k, v in s3_settings(s3, create_bucket(s3)).items()}}
            (work / "out").mkdir()
            out = scenario("2 nodes, PostgreSQL + S3", env, args, work / "out",
                           nodes=2, workers=args.workers, source=source)
        if args.reference:
            (work / "single").mkdir()
            one = scenario("1 node, SQLite + local store", common_env(args), args,
                           work / "single", nodes=1, workers=2 * args.workers, source=source)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(out + one)
    if one:
        print(f"  throughput ratio, 2 nodes on PostgreSQL + S3 / 1 node on SQLite + local: "
              f"{out[-1].mb_s / one[-1].mb_s:.2f}")
    for label, waves in (("S3", out), ("local store", one)):
        for wave in waves[1:]:
            print(f"  memory growth per node on {label} from {waves[0].sessions} to "
                  f"{wave.sessions} sessions: " + ", ".join(
                      f"{full - small:+.0f} MiB" for small, full in
                      zip(waves[0].peak_mib, wave.peak_mib, strict=True)))
    return 0 if not any(wave.errors for wave in out + one) else 1


def _counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",")]
    if not counts or any(count < 2 for count in counts):
        raise argparse.ArgumentTypeError("session counts must be at least 2")
    return counts


def _setting(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


if __name__ == "__main__":
    sys.exit(main())
