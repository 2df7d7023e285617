"""What the audit-log benchmarks share (a module, not a bench: the suite runs only the
scripts whose names do not start with ``_``).

:class:`LogWriter` appends entries to an audit log the way the service does - the same
leaves, entry MACs, tree nodes and signed checkpoints - but in bulk, through ``sqlite3``
with large transactions, so that a log of a million entries is built in a minute or
two instead of the hour one transaction per event would take.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from gateway.audit import AuditTag, merkle
from gateway.audit.events import encode_leaf
from gateway.audit.log import entry_mac
from gateway.audit.note import Checkpoint, NoteSigner
from gateway.state_keys import StateKeys

# The time column as SQLAlchemy stores it in SQLite.
COLUMN_TIME = "%Y-%m-%d %H:%M:%S.%f"
# Rows written per transaction.
FLUSH_EVERY = 50_000


class _StoredNodes:
    """The stored tree nodes of a SQLite log, as a :class:`merkle.NodeReader`."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def read_nodes(self, coords: Sequence[merkle.Coord]) -> list[bytes]:
        positions = [merkle.node_position(level, index) for level, index in coords]
        found = {pos: bytes(hashed) for pos, hashed in self._db.execute(
            f"SELECT pos, hash FROM audit_nodes WHERE pos IN ({','.join('?' * len(positions))})",
            positions)}
        return [found[pos] for pos in positions]


class LogWriter:
    """Appends entries to the log of the SQLite database at ``path`` (its schema already
    made), after those it holds, with a signed checkpoint every ``every`` entries.

    ``checkpoint_entries``: follow each checkpoint with its own ``audit:checkpoint``
    entry, as the service does (the exposure report reads a log that looks like one).
    """

    def __init__(self, path: Path, signer: NoteSigner, keys: StateKeys, *,
                 every: int = 1000, checkpoint_entries: bool = False) -> None:
        self._db = sqlite3.connect(path)
        self._db.execute("PRAGMA synchronous=OFF")
        self._signer = signer
        self._keys = keys
        self._every = every
        self._checkpoint_entries = checkpoint_entries
        self._entries: list[tuple[int, str, str, str, str]] = []
        self._nodes: list[tuple[int, bytes]] = []
        self._checkpoints: list[tuple[int, bytes, str, str]] = []
        # Go on from what the log holds (`init`'s baseline, an earlier build), as the
        # service would: from the right edge of the stored tree.
        size = self._db.execute("SELECT count(*) FROM audit_entries").fetchone()[0]
        self._builder = merkle.TreeBuilder.resume(size, _StoredNodes(self._db))
        self._position = merkle.stored_node_count(size)

    @property
    def size(self) -> int:
        return self._builder.size

    def add(self, moment: datetime, tag: AuditTag, actor: str, subject: str,
            details: Mapping[str, object]) -> None:
        index = self._builder.size
        leaf = encode_leaf(index=index, time=moment, tag=tag, actor=actor, subject=subject,
                           details=dict(details))
        self._entries.append((index, moment.strftime(COLUMN_TIME), tag.value, leaf.decode(),
                              entry_mac(self._keys, index, leaf)))
        for hashed in self._builder.append(merkle.leaf_hash(leaf)):
            self._nodes.append((self._position, hashed))
            self._position += 1
        if self._builder.size % self._every == 0:
            self._checkpoint(moment)
        if len(self._entries) >= FLUSH_EVERY:
            self.flush()

    def _checkpoint(self, moment: datetime) -> None:
        size, root = self._builder.size, self._builder.root()
        note = self._signer.sign(Checkpoint(self._signer.name, size, root).text())
        self._checkpoints.append((size, root, moment.strftime(COLUMN_TIME), note))
        if self._checkpoint_entries:
            self.add(moment, AuditTag.AUDIT_CHECKPOINT, "system:audit", f"checkpoint:{size}",
                     {"size": size, "root": "bench", "source": "local"})

    def flush(self) -> None:
        with self._db:
            self._db.executemany("INSERT INTO audit_entries (idx, recorded_at, tag, leaf, mac) "
                                 "VALUES (?, ?, ?, ?, ?)", self._entries)
            self._db.executemany("INSERT INTO audit_nodes (pos, hash) VALUES (?, ?)",
                                 self._nodes)
            self._db.executemany("INSERT INTO audit_checkpoints (size, root, created_at, note)"
                                 " VALUES (?, ?, ?, ?)", self._checkpoints)
        self._entries.clear()
        self._nodes.clear()
        self._checkpoints.clear()

    def close(self) -> None:
        self.flush()
        self._db.close()
