"""Audit log benchmark (not a test): append rate, verification and proof latency.

Run: ``.venv/bin/python bench/audit.py [--entries 1000000] [--appends 5000] [--keep DIR]``
(``--tiny`` runs every step at a size of seconds, as the test suite does).

* durable appends per second: one writer, one transaction per event, SQLite WAL with
  synchronous=FULL (the production engine), checkpoints every 1000 entries;
* the time, CPU time and peak memory of ``verify_database`` (the real verification
  code, entry MACs included) over a log of ``--entries`` entries, each in its own
  process (CPU time and peak memory given for it and for its leaf worker), built with a
  bulk path that writes the same rows the service would (``--keep DIR`` keeps the log
  for another run; ``--compare-with CHECKOUT`` measures that checkout's code too);
* incremental verification (``verify_from``) of the ``--new`` entries appended since;
* inclusion-proof latency at that size, from the stored tree;
* the console's audit pages at that size (``newest_page``: newest first, a page deep in
  the log, a tag and actor filter, a search), each as a ratio to the reference measured
  in the same run: one ``ORDER BY idx DESC LIMIT 50`` query of the newest leaves.

Targets on the project's 2-core machine: a million entries verified in under 10 s and
200 MiB; incremental verification proportional to what is new; a console page within
a few times the reference at any depth (a search for a rare word scans what it must:
its time is shown, not held to a ratio).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy

from gateway.actors import Actor, ActorKind
from gateway.audit import AuditLog, AuditTag, generate_signing_key_file, load_signer, merkle
from gateway.audit.events import decode_leaf
from gateway.audit.note import NoteSigner
from gateway.audit.siem import JsonlSink
from gateway.audit.verify import verify_database, verify_from
from gateway.audit_service import EventFilter, newest_page
from gateway.db import make_engine, make_sessionmaker, upgrade
from gateway.db.engine import snapshot
from gateway.state_keys import StateKey, StateKeys

# The measuring helpers of the exposure bench (run as a script, bench/ is not on the path).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import LogWriter
from bench.exposure import Measure, load, measured, report_usage

ORIGIN = "bench.example/audit"
START = datetime(2026, 1, 1, tzinfo=UTC)


def append_rate(directory: Path, signer: NoteSigner, count: int) -> float:
    engine = make_engine(f"sqlite:///{directory / 'appends.db'}")
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    # As in production: the SIEM copy (audit.jsonl) is written after every commit.
    log = AuditLog(signer=signer, clock=lambda: datetime.now(UTC),
                   sinks=[JsonlSink(directory / "audit.jsonl")])
    started = time.perf_counter()
    for number in range(count):
        with sessions.begin() as session:
            log.record(session, tag=AuditTag.DOWNLOAD_COMPLETE,
                       actor=Actor(ActorKind.ACCOUNT, "partner-a"),
                       subject=f"file:{number}", details={"bytes": 123456, "source": "192.0.2.7",
                                                          "client": "OpenSSH_9.6"})
    elapsed = time.perf_counter() - started
    engine.dispose()
    return count / elapsed


def bulk_build(path: Path, signer: NoteSigner, keys: StateKeys, count: int,
               every: int = 1000) -> None:
    """Append ``count`` entries (with their MACs), their nodes and a checkpoint every
    ``every`` entries, to the log at ``path`` (created if new)."""
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    writer = LogWriter(path, signer, keys, every=every)
    for index in range(writer.size, writer.size + count):
        writer.add(START + timedelta(milliseconds=index), AuditTag.DOWNLOAD_COMPLETE,
                   "partner-a", f"file:{index}", {"bytes": 123456, "source": "192.0.2.7"})
    writer.close()


def _materials(directory: Path) -> tuple[NoteSigner, StateKeys]:
    """The log's signing key and state key, created on first use."""
    key_file, state_file = directory / "audit_ed25519", directory / "state_key"
    if not key_file.exists():
        generate_signing_key_file(key_file)
        # A secret, even a bench's: 0600 like keys/state_key.
        with os.fdopen(os.open(state_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600),
                       "wb") as handle:
            handle.write(os.urandom(32))
    return (load_signer(key_file, name=ORIGIN),
            StateKeys(StateKey(state_file.read_bytes())))


def verify_alone(directory: Path) -> None:
    """In its own process: the whole log's verification, as `blindpost audit verify`."""
    try:
        signer, keys = _materials(directory)
        engine = make_engine(f"sqlite:///{directory / 'big.db'}")
        with snapshot(engine) as session:
            report = verify_database(session, verifier=signer.verifier, entry_keys=keys)
        engine.dispose()
        print(report.summary())
    finally:
        report_usage()


def run_alone(directory: Path, code: Path | None = None) -> Measure:
    """What :func:`verify_alone` took in a process of its own (with the checkout ``code``
    on the path if given)."""
    return measured([sys.executable, __file__, "--verify-only", str(directory)], code)


def incremental(directory: Path, signer: NoteSigner, keys: StateKeys, new: int) -> None:
    """Verify the whole log, append ``new`` entries, and verify only those."""
    engine = make_engine(f"sqlite:///{directory / 'big.db'}")
    with snapshot(engine) as session:
        state = verify_database(session, verifier=signer.verifier, entry_keys=keys).state
    bulk_build(directory / "big.db", signer, keys, new)
    started, cpu = time.perf_counter(), time.process_time()
    with snapshot(engine) as session:
        report = verify_from(session, trusted=state, verifier=signer.verifier,
                             entry_keys=keys)
    print(f"incremental verification of {report.size - report.start:,} new entries after "
          f"{report.start:,}: {time.perf_counter() - started:.2f} s "
          f"({time.process_time() - cpu:.2f} s CPU)")
    engine.dispose()


def proofs(directory: Path, signer: NoteSigner, count: int) -> None:
    engine = make_engine(f"sqlite:///{directory / 'big.db'}")
    log = AuditLog(signer=signer, clock=lambda: datetime.now(UTC))
    sessions = make_sessionmaker(engine)
    latencies = []
    with sessions.begin() as session:
        size = log.size(session)
        root = log.root(session, size)
        for _ in range(count):
            index = random.randrange(size)
            started = time.perf_counter()
            proof = log.inclusion_proof(session, index, size)
            latencies.append(time.perf_counter() - started)
            leaf = next(log.events(session, start=index)).leaf
            merkle.verify_inclusion(index=index, size=size, proof=proof, root=root,
                                    hashed_leaf=merkle.leaf_hash(leaf))
    latencies.sort()
    print(f"inclusion proof at {size:,} entries: median "
          f"{statistics.median(latencies) * 1000:.2f} ms, p99 "
          f"{latencies[int(len(latencies) * 0.99)] * 1000:.2f} ms (target <= 5 ms); "
          f"root {root.hex()[:16]}…")
    engine.dispose()


def _best(run: Callable[[], object], repeat: int = 5) -> float:
    """The fastest of ``repeat`` runs of ``run()``, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def console_pages(directory: Path, signer: NoteSigner, size: int = 50) -> None:
    """The audit page's queries on the big log, against a LIMIT query of the same rows."""
    engine = make_engine(f"sqlite:///{directory / 'big.db'}")
    log = AuditLog(signer=signer, clock=lambda: datetime.now(UTC))
    with snapshot(engine) as session:
        total = log.size(session)

        def reference() -> None:
            leaves = session.execute(sqlalchemy.text(
                "SELECT leaf FROM audit_entries ORDER BY idx DESC LIMIT :n"), {"n": size})
            [decode_leaf(leaf.encode()) for (leaf,) in leaves]

        base = _best(reference)
        print(f"reference: newest {size} leaves by LIMIT: {base * 1000:.2f} ms")
        cases = {
            "newest page": (EventFilter(), None),
            "page in the middle of the log": (EventFilter(), total // 2),
            "tag and actor filter": (EventFilter(tag=AuditTag.DOWNLOAD_COMPLETE,
                                                 actor="partner-a"), None),
        }
        for label, (selection, before) in cases.items():
            elapsed = _best(lambda s=selection, b=before: newest_page(
                log, session, s, before=b, size=size))
            print(f"console {label}: {elapsed * 1000:.2f} ms ({elapsed / base:.1f}x the "
                  "reference; target <= 5x)")
        rare = f"file:{total // 3}"
        elapsed = _best(lambda: newest_page(log, session, EventFilter(search=rare),
                                            before=None, size=size), repeat=1)
        print(f"console search for a rare subject ({rare}) over {total:,} entries: "
              f"{elapsed:.2f} s")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--appends", type=int, default=5000)
    parser.add_argument("--proofs", type=int, default=1000)
    parser.add_argument("--new", type=int, default=10_000,
                        help="Entries appended before the incremental verification.")
    parser.add_argument("--tiny", action="store_true",
                        help="Every step at a size of seconds (the test suite's run).")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="Build the log into DIR and keep it; a later run with the same "
                             "DIR measures it again without building.")
    parser.add_argument("--compare-with", type=Path, metavar="CHECKOUT",
                        help="Also measure the full verification with the code of CHECKOUT "
                             "(a git worktree of an earlier commit).")
    parser.add_argument("--verify-only", type=Path, metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.verify_only:
        verify_alone(args.verify_only)
        return
    if args.tiny:
        args.entries, args.appends, args.proofs, args.new = 3000, 30, 20, 100
    directory = args.keep or Path(tempfile.mkdtemp(prefix="blindpost-bench-audit-"))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        signer, keys = _materials(directory)
        rate = append_rate(directory, signer, args.appends)
        print(f"durable appends: {rate:,.0f}/s over {args.appends} (target >= 2,000/s)")
        if not (directory / "big.db").exists():
            started = time.perf_counter()
            bulk_build(directory / "big.db", signer, keys, args.entries)
            print(f"bulk build of {args.entries:,} entries: "
                  f"{time.perf_counter() - started:.1f} s")
        print(f"before the verifications: {load()}", flush=True)
        codes = [("", None)] if args.compare_with is None else [
            ("", None), (f" [code at {args.compare_with}]", args.compare_with.resolve())]
        for name, code in codes:
            print(f"full verification, in its own process{name}: "
                  f"{run_alone(directory, code).text()} (target for a million entries: "
                  "under 10 s and 200 MiB)", flush=True)
        print(f"after the verifications: {load()}", flush=True)
        proofs(directory, signer, args.proofs)
        console_pages(directory, signer)
        # Last: it grows the log (a kept one too) by --new entries.
        incremental(directory, signer, keys, args.new)
    finally:
        if args.keep is None:
            shutil.rmtree(directory)


if __name__ == "__main__":
    main()
