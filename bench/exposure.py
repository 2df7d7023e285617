"""Exposure report benchmark (not a test): a year of history, a week and the whole of it.

Run: ``.venv/bin/python bench/exposure.py [--events 1000000] [--files 100000]``
(``--tiny``: a log of a few thousand entries, as the test suite runs it).

Builds a data directory whose audit log holds ``--events`` entries about ``--files``
files over a year (uploads, sign-ins, complete and interrupted downloads, expiry,
download limits, withdrawals, supersedes, checkpoints every 1000 entries), with the
same leaves, tree nodes and signed checkpoints the service writes (a bulk path, as in
``bench/audit.py``), and the files still waiting at the end as real age objects in the
store. Then, each as its own process through the real command line:

* the reference: the log's verification alone (tree, signed checkpoints, entry MACs),
  the same ``verify_database`` call the report makes, without reading the events;
* ``blindpost exposure`` for one week in the middle of the year;
* ``blindpost exposure`` for the whole history (text, then JSON).

Each figure gives the wall time, the CPU time of the process and of its children (the
second process verification hashes leaves in, :mod:`gateway.audit.leaf_worker`) and the
peak memory of each; the load average before and after says how busy the machine was.
``--compare-with CHECKOUT`` measures every run with that checkout's code as well
(``git worktree add ../old COMMIT``), alternating, so old and new meet the same load.

Targets on the project's 2-core machine, for a million entries: verification alone
under 10 s and 200 MiB, one week under 15 s, the whole history (text and JSON) under
30 s and 500 MiB of peak memory (the maximum resident set of the process). CPU time is
reported beside wall time: on a shared machine it is the steadier figure.
"""

from __future__ import annotations

import argparse
import heapq
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway import envelope, state_keys
from gateway.audit import AuditTag, load_signer, verify_database
from gateway.config import load_settings
from gateway.datadir import initialise
from gateway.db import make_engine
from gateway.db.engine import snapshot
from gateway.store import LocalStore

# The log writer both audit benches share (run as a script, bench/ is not on the path).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import LogWriter

START = datetime(2026, 1, 1, tzinfo=UTC)
YEAR = timedelta(days=365)
RETENTION = timedelta(days=7)
PARTNERS = [f"partner-{n:02d}" for n in range(20)]
CHECKPOINT_EVERY = 1000
# Per file: 1 upload, 2 partner sign-ins, 4 complete and 1 interrupted download, 1
# removal and 1 staff sign-in: ten entries, so --events / --files = 10 by default.
DOWNLOADS = 5
# What the bench can measure (--only), in the order it does.
RUNS = ("verify", "serial", "week", "text", "json")
# How a measured process reports its own and its children's usage on stderr.
USAGE = "bench-usage:"


def _fingerprint(partner: int) -> str:
    return f"SHA256:{partner:02d}" + "k" * 41


def _file_events(number: int, uploaded: datetime, spacing: timedelta,
                 ) -> Iterator[tuple[datetime, AuditTag, str, str, dict[str, object]]]:
    """The events of one file, in time order (its removal may be far later)."""
    partner = number % len(PARTNERS)
    slug, name, file_id = PARTNERS[partner], f"extract-{number}.csv.age", f"file-{number:08d}"
    reader, staff = f"{slug}-user{number % 5}", f"staff{number % 10}"
    where = {"source": "192.0.2.7", "client": "SSH-2.0-OpenSSH_9.6"}
    size, sha = 1_000_000 + number, f"{number:064x}"
    yield (uploaded, AuditTag.LOGIN_SUCCESS, staff, f"account:{staff}",
           {**where, "method": "publickey+totp", "key": "SHA256:staffkey"})
    yield (uploaded, AuditTag.UPLOAD_COMPLETE, staff, f"file:{file_id}", {
        **where, "partner": slug, "name": name, "size": size, "sha256": sha,
        "object_id": f"{number:032x}", "expires_at": (uploaded + RETENTION).isoformat(),
        "max_downloads": None, "encrypted_here": True, "recipient_keys": [partner + 1],
        "recipient_kinds": ["mlkem768x25519"], "recipient_fingerprints": [_fingerprint(partner)],
        "seconds": 1.5})
    step = spacing / 2
    for attempt in range(DOWNLOADS):
        moment = uploaded + step * (attempt + 1)
        if attempt in (0, 3):
            yield (moment, AuditTag.LOGIN_SUCCESS, reader, f"account:{reader}",
                   {**where, "method": "publickey+totp", "key": "SHA256:readerkey"})
        complete = attempt != 2
        yield (moment, AuditTag.DOWNLOAD_COMPLETE if complete else AuditTag.DOWNLOAD_INCOMPLETE,
               reader, f"file:{file_id}", {**where, "partner": slug, "name": name,
                                           "bytes": size if complete else size // 3,
                                           "size": size, "seconds": 2.0})
    yield _removal(number, uploaded, spacing, slug, name, file_id, reader, staff, size, sha)


def _removal(number: int, uploaded: datetime, spacing: timedelta, slug: str, name: str,
             file_id: str, reader: str, staff: str, size: int, sha: str,
             ) -> tuple[datetime, AuditTag, str, str, dict[str, object]]:
    kind = number % 10
    if kind == 7:
        return (uploaded + spacing * 4, AuditTag.FILE_WITHDRAW, reader, f"file:{file_id}",
                {"partner": slug, "name": name, "source": "192.0.2.7"})
    if kind == 8:
        return (uploaded + spacing * 5, AuditTag.FILE_SUPERSEDE, staff, f"file:{file_id}",
                {"partner": slug, "name": name, "superseded_by": "file-next",
                 "source": "192.0.2.7"})
    reason = "download limit reached" if kind == 9 else "expired"
    moment = uploaded + (spacing * 6 if kind == 9 else RETENTION)
    return (moment, AuditTag.FILE_PURGE, "system:purger", f"file:{file_id}",
            {"partner": slug, "name": name, "reason": reason, "size": size, "sha256": sha,
             "source": "local"})


def _setup_events(writer: LogWriter) -> None:
    """Accounts, partners and approved keys, at the start of the year."""
    for admin in ("alice", "bob"):
        writer.add(START, AuditTag.ACCOUNT_CREATE, "local:root", f"account:{admin}",
                   {"role": "admin", "partner": None, "source": "local"})
    for number, slug in enumerate(PARTNERS):
        writer.add(START, AuditTag.PARTNER_CREATE, "local:root", f"partner:{slug}",
                   {"retention": "7d", "retention_seconds": 604800, "max_downloads": None})
        for tag, actor in ((AuditTag.KEY_PROPOSE, "alice"), (AuditTag.KEY_APPROVE, "bob")):
            writer.add(START, tag, actor, f"key:{number + 1}", {
                "key_id": number + 1, "partner": slug, "kind": "mlkem768x25519",
                "fingerprint": _fingerprint(number), "source": "local"})
        for user in range(5):
            writer.add(START, AuditTag.ACCOUNT_CREATE, "local:root",
                       f"account:{slug}-user{user}", {"role": "partner", "partner": slug})
    for staff in range(10):
        writer.add(START, AuditTag.ACCOUNT_CREATE, "local:root", f"account:staff{staff}",
                   {"role": "staff", "partner": None})


def build_log(writer: LogWriter, files: int, events: int) -> tuple[int, list[int]]:
    """Write the year; return how many files it holds and those still waiting at its end."""
    _setup_events(writer)
    spacing = YEAR / files
    pending: list[tuple[datetime, int, tuple[datetime, AuditTag, str, str,
                                              dict[str, object]]]] = []
    order = 0
    removed: set[int] = set()
    for number in range(files):
        uploaded = START + spacing * number
        while pending and pending[0][0] <= uploaded:
            _moment, _order, item = heapq.heappop(pending)
            writer.add(*item)
            if item[1] in (AuditTag.FILE_PURGE, AuditTag.FILE_WITHDRAW,
                           AuditTag.FILE_SUPERSEDE):
                removed.add(int(item[3].removeprefix("file:file-")))
        for item in _file_events(number, uploaded, spacing):
            order += 1
            heapq.heappush(pending, (item[0], order, item))
        if writer.size >= events:
            files = number + 1
            break
    end = START + YEAR
    while pending and pending[0][0] <= end:
        item = heapq.heappop(pending)[2]
        writer.add(*item)
        if item[1] in (AuditTag.FILE_PURGE, AuditTag.FILE_WITHDRAW, AuditTag.FILE_SUPERSEDE):
            removed.add(int(item[3].removeprefix("file:file-")))
    return files, [number for number in range(files) if number not in removed]


def store_waiting(data_dir: Path, waiting: list[int]) -> None:
    """A real age object for each waiting file, under the id its upload event records."""
    store = LocalStore(data_dir / "store")
    ciphertext = envelope.encrypt_bytes(b"x" * 4096,
                                        [envelope.generate_identity().recipient])
    for number in waiting:
        path = store.object_path(f"{number:032x}")
        path.parent.mkdir(mode=0o700, exist_ok=True)
        path.write_bytes(ciphertext)


def follow_log(data_dir: Path) -> None:
    """Bring the current-state snapshot up to the log's head, as the running service
    keeps it: a command then reads only the entries after it, not the whole log again
    (that replay is a full verification of its own, paid once per node)."""
    from gateway.app import App

    app = App(load_settings(data_dir=data_dir, environ={}))
    try:
        app.ledger.catch_up()
    finally:
        app.close()


def build(data_dir: Path, files: int, events: int) -> None:
    """A data directory holding the year of history."""
    initialise(data_dir, admin=None, environ={})
    settings = load_settings(data_dir=data_dir, environ={})
    writer = LogWriter(data_dir / "blindpost.db",
                       load_signer(settings.audit_key_path, name=settings.audit_origin),
                       state_keys.load(settings.keys_dir), every=CHECKPOINT_EVERY,
                       checkpoint_entries=True)
    started = time.perf_counter()
    files, waiting = build_log(writer, files, events)
    size = writer.size
    writer.close()
    store_waiting(data_dir, waiting)
    follow_log(data_dir)
    print(f"built {size:,} entries about {files:,} files ({len(waiting):,} still "
          f"stored) in {time.perf_counter() - started:.0f} s", flush=True)


def verify_alone(data_dir: Path, *, serial: bool = False) -> None:
    """The reference, in its own process: what the report's verification does, alone
    (``serial``: without the second process, as on a busy machine)."""
    if serial:
        from gateway.audit import verify

        verify.PARALLEL = False
    settings = load_settings(data_dir=data_dir, environ={})
    signer = load_signer(settings.audit_key_path, name=settings.audit_origin)
    engine = make_engine(settings.effective_database_url)
    with snapshot(engine) as session:
        verify_database(session, verifier=signer.verifier,
                        entry_keys=state_keys.load(settings.keys_dir))
    engine.dispose()


def report_usage() -> None:
    """Write this process's CPU time, its children's (the leaf worker of verification)
    and its own peak memory on stderr, for :func:`measured`."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                         resource.RUSAGE_CHILDREN))
    print(f"{USAGE} {own.ru_utime + own.ru_stime} {children.ru_utime + children.ru_stime} "
          f"{_peak_kib(os.getpid())}", file=sys.stderr)


def _peak_kib(pid: int) -> int:
    """The peak resident memory (KiB) of process ``pid`` since it started its program
    (0 if it is gone). Not ``ru_maxrss``: Linux counts in a child's the memory of the
    parent it was forked from, until it runs its own program."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines()
                 if line.startswith("VmHWM:")), 0)


def _sample_descendants(pid: int, peaks: dict[int, int]) -> None:
    """Record the peak memory of every process below ``pid`` (Linux /proc)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return
    for child in map(int, children):
        peaks[child] = max(peaks.get(child, 0), _peak_kib(child))
        _sample_descendants(child, peaks)


@dataclass(frozen=True)
class Measure:
    """One run: wall time, CPU time of the main process and of its children (the leaf
    worker), and the peak memory (MiB) of each."""

    wall: float
    cpu: float
    cpu_children: float
    peak: float
    peak_children: float

    def text(self) -> str:
        return (f"{self.wall:.1f} s wall, {self.cpu + self.cpu_children:.1f} s CPU "
                f"({self.cpu:.1f} s + {self.cpu_children:.1f} s in the worker), peak memory "
                f"{self.peak + self.peak_children:.0f} MiB ({self.peak:.0f} + "
                f"{self.peak_children:.0f} MiB)")


def run(args: list[str], output: Path | None, code: Path | None = None) -> Measure:
    """Run a command (``--verify-only DIR``, or blindpost's) in a process of its own, with
    the checkout ``code`` on the path if given; return what it took."""
    if output is not None:
        output.unlink(missing_ok=True)
    return measured([sys.executable, __file__, *(args if args[0].startswith("--verify")
                                                 else ["--cli", *args])], code)


def measured(command: list[str], code: Path | None = None) -> Measure:
    """Run ``command``, a process that ends with :func:`report_usage`, with the checkout
    ``code`` on the path if given. On a busy machine the CPU times are the better guide
    to the wall time the same command takes on an idle one. The peak memory of its
    children is sampled every 50 ms while it runs."""
    environ = dict(os.environ)
    if code is not None:
        environ["PYTHONPATH"] = str(code)
    peaks: dict[int, int] = {}
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors,
                                   env=environ)
        while (ended := os.wait4(process.pid, os.WNOHANG))[0] == 0:
            _sample_descendants(process.pid, peaks)
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(ended[1])
        errors.seek(0)
        text = errors.read().decode()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command[2:])} failed: {text}")
    line = next(line for line in text.splitlines() if line.startswith(USAGE))
    cpu, children, peak = map(float, line.split()[1:])
    return Measure(elapsed, cpu, children, peak / 1024, max(peaks.values(), default=0) / 1024)


def settle(below: float, longest: float = 180.0) -> None:
    """Wait until the 1-minute load average is under ``below`` (0: not at all), for at
    most ``longest`` seconds."""
    deadline = time.monotonic() + longest
    while below and os.getloadavg()[0] >= below and time.monotonic() < deadline:
        time.sleep(2)


def load() -> str:
    return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="Build into DIR and keep it; a later run with the same DIR "
                             "measures again without building.")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tiny", action="store_true",
                        help="A log of a few thousand entries, one round (the test suite's run).")
    parser.add_argument("--compare-with", type=Path, metavar="CHECKOUT",
                        help="Also measure each run with the code of CHECKOUT (a git "
                             "worktree of an earlier commit), alternating with this one.")
    parser.add_argument("--only", metavar="RUNS", default=",".join(RUNS),
                        help="Comma-separated runs to measure, of " + ", ".join(RUNS) +
                             " (a full comparison takes minutes: split it on a shared "
                             "machine).")
    parser.add_argument("--settle", type=float, metavar="LOAD", default=0.0,
                        help="Before each measured run, wait (up to 3 minutes) until the "
                             "1-minute load average is below LOAD: verification starts its "
                             "second process only below 1.5 on two cores, so a figure for "
                             "a quiet machine needs the load of earlier runs to decay.")
    parser.add_argument("--verify-only", type=Path, metavar="DATA_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--verify-serial", type=Path, metavar="DATA_DIR",
                        help=argparse.SUPPRESS)
    parser.add_argument("--cli", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.verify_only or args.verify_serial or args.cli:
        try:
            if args.verify_only or args.verify_serial:
                verify_alone(args.verify_only or args.verify_serial,
                             serial=args.verify_serial is not None)
            else:
                from gateway.cli.program import main as blindpost

                code = blindpost.main(args.cli, prog_name="blindpost", standalone_mode=False)
                if isinstance(code, int) and code:
                    raise SystemExit(code)
        finally:
            report_usage()
        return
    if args.tiny:
        args.events, args.files, args.rounds = 3000, 300, 1
    directory = args.keep or Path(tempfile.mkdtemp(prefix="blindpost-bench-exposure-"))
    try:
        data_dir = directory / "var"
        if not data_dir.exists():
            build(data_dir, args.files, args.events)
        common = ["--data-dir", str(data_dir)]
        week = ["--from", "2026-07-01", "--to", "2026-07-07"]
        whole = ["--from", "2025-12-31", "--to", "2027-01-01"]
        every = {
            "verify": ("reference: verification alone",
                       (["--verify-only", str(data_dir)], None)),
            "serial": ("verification alone, without the second process",
                       (["--verify-serial", str(data_dir)], None)),
            "week": ("exposure, one week (text)",
                     (["exposure", *week, *common, "-o", str(directory / "week.txt")],
                      directory / "week.txt")),
            "text": ("exposure, whole history (text)",
                     (["exposure", *whole, *common, "-o", str(directory / "all.txt")],
                      directory / "all.txt")),
            "json": ("exposure, whole history (json)",
                     (["exposure", *whole, *common, "--format", "json", "-o",
                       str(directory / "all.json")], directory / "all.json")),
        }
        chosen = args.only.split(",")
        if unknown := set(chosen) - set(every):
            parser.error(f"--only: unknown runs {sorted(unknown)}; choose from {RUNS}")
        runs = dict(every[name] for name in RUNS if name in chosen)
        # Rounds alternate the runs (and the code compared) and the best of each counts,
        # so that a burst of load from elsewhere on the machine does not land on one only.
        codes: list[tuple[str, Path | None]] = [("", None)]
        if args.compare_with:
            codes.append((f" [code at {args.compare_with}]", args.compare_with.resolve()))
        results: dict[str, list[Measure]] = {label + name: [] for label in runs
                                             for name, _ in codes}
        print(f"before: {load()}", flush=True)
        for _round in range(args.rounds):
            for label, (command, output) in runs.items():
                for name, code in codes:
                    settle(args.settle)
                    print(f"{label}{name}: starts at {load()}", flush=True)
                    results[label + name].append(run(command, output, code))
        print(f"after: {load()}", flush=True)
        for label, measured in results.items():
            if not measured:
                continue  # --rounds 0: build only.
            best = min(measured, key=lambda item: item.wall)
            print(f"{label}: {best.text()}; least CPU of {len(measured)}: "
                  f"{min(item.cpu + item.cpu_children for item in measured):.1f} s",
                  flush=True)
        if (directory / "all.txt").exists():
            lines = sum(1 for _ in (directory / "all.txt").open())
            print(f"whole-history text report: {lines:,} lines, "
                  f"{(directory / 'all.txt').stat().st_size / 1e6:.0f} MB")
        print("targets at a million entries: verification under 10 s and 200 MiB, a week "
              "under 15 s, the whole history under 30 s and 500 MiB")
    finally:
        if args.keep is None:
            shutil.rmtree(directory)


if __name__ == "__main__":
    main()
