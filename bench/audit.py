"""Audit log benchmark (not a test): append rate, full verification and proof latency.

Run: ``.venv/bin/python bench/audit.py [--entries 1000000] [--appends 5000]``.

* durable appends per second: one writer, one transaction per event, SQLite WAL with
  synchronous=FULL (the production engine), checkpoints every 1000 entries;
* the time ``verify_database`` (the real verification code) takes over a log of
  ``--entries`` entries, built with a bulk path that writes the same rows the service would;
* inclusion-proof latency at that size, from the stored tree.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.actors import Actor, ActorKind
from gateway.audit import AuditLog, AuditTag, generate_signing_key_file, load_signer, merkle
from gateway.audit.events import encode_leaf
from gateway.audit.note import Checkpoint, NoteSigner
from gateway.audit.siem import JsonlSink
from gateway.audit.verify import verify_database
from gateway.db import make_engine, make_sessionmaker, upgrade
from gateway.db.engine import snapshot

ORIGIN = "bench.example/audit"


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


def bulk_build(path: Path, signer: NoteSigner, count: int, every: int = 1000) -> None:
    """Write ``count`` entries, their nodes and a checkpoint every ``every`` entries."""
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA synchronous=OFF")
    builder = merkle.TreeBuilder()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    entries, nodes, checkpoints = [], [], []
    position = 0
    for index in range(count):
        moment = start + timedelta(milliseconds=index)
        leaf = encode_leaf(index=index, time=moment, tag=AuditTag.DOWNLOAD_COMPLETE,
                           actor="partner-a", subject=f"file:{index}",
                           details={"bytes": 123456, "source": "192.0.2.7"})
        entries.append((index, moment.replace(tzinfo=None).isoformat(sep=" "),
                        AuditTag.DOWNLOAD_COMPLETE.value, leaf.decode()))
        for hashed in builder.append(merkle.leaf_hash(leaf)):
            nodes.append((position, hashed))
            position += 1
        if builder.size % every == 0:
            root = builder.root()
            note = signer.sign(Checkpoint(ORIGIN, builder.size, root).text())
            checkpoints.append((builder.size, root, entries[-1][1], note))
        if len(entries) >= 50_000:
            _flush(connection, entries, nodes, checkpoints)
    _flush(connection, entries, nodes, checkpoints)
    connection.close()


def _flush(connection: sqlite3.Connection, entries: list, nodes: list, checkpoints: list) -> None:  # type: ignore[type-arg]
    with connection:
        connection.executemany("INSERT INTO audit_entries VALUES (?, ?, ?, ?)", entries)
        connection.executemany("INSERT INTO audit_nodes VALUES (?, ?)", nodes)
        connection.executemany("INSERT INTO audit_checkpoints (size, root, created_at, note) "
                               "VALUES (?, ?, ?, ?)", checkpoints)
    entries.clear()
    nodes.clear()
    checkpoints.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--appends", type=int, default=5000)
    parser.add_argument("--proofs", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="blindpost-bench-") as name:
        directory = Path(name)
        generate_signing_key_file(directory / "audit_ed25519")
        signer = load_signer(directory / "audit_ed25519", name=ORIGIN)

        rate = append_rate(directory, signer, args.appends)
        print(f"durable appends: {rate:,.0f}/s over {args.appends} (target >= 2,000/s)")

        big = directory / "big.db"
        started = time.perf_counter()
        bulk_build(big, signer, args.entries)
        print(f"bulk build of {args.entries:,} entries: {time.perf_counter() - started:.1f} s")

        engine = make_engine(f"sqlite:///{big}")
        started = time.perf_counter()
        with snapshot(engine) as session:
            report = verify_database(session, verifier=signer.verifier)
        print(f"full verification: {time.perf_counter() - started:.1f} s "
              f"({report.summary()}) (target <= 30 s)")

        log = AuditLog(signer=signer, clock=lambda: datetime.now(UTC))
        sessions = make_sessionmaker(engine)
        latencies = []
        with sessions.begin() as session:
            size = log.size(session)
            root = log.root(session, size)
            for _ in range(args.proofs):
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


if __name__ == "__main__":
    main()
