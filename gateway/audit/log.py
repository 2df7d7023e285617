"""The audit log service: record events, write checkpoints, serve proofs.

Every call runs inside the caller's session, so an event commits or rolls back with the
change it describes. Indices are assigned under one sequencer: on SQLite every
transaction already holds the write lock (``BEGIN IMMEDIATE``); on PostgreSQL a
transaction-scoped advisory lock is taken before the next index is read.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING

from sqlalchemy import Table, event, func, insert, select
from sqlalchemy.orm import Session

from gateway.actors import Actor
from gateway.audit import merkle
from gateway.audit.checkpoint_file import keep_latest_checkpoint
from gateway.audit.errors import AuditError
from gateway.audit.events import AuditEvent, decode_leaf, encode_leaf
from gateway.audit.models import AuditCheckpoint, AuditEntry, AuditNode
from gateway.audit.note import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    load_signer,
    unverified_text,
)
from gateway.audit.proof import TlogProof
from gateway.audit.siem import EventSink, JsonlSink, SyslogSink
from gateway.audit.tags import AuditTag
from gateway.state_keys import StateKeys

if TYPE_CHECKING:
    from gateway.config import Settings

Clock = Callable[[], datetime]

# Any constant works as long as nothing else in the database uses it; this one spells
# "BLNDAUDT" in ASCII so it is recognisable in pg_locks.
SEQUENCER_LOCK_ID = 0x424C4E4441554454
SYSTEM_ACTOR = Actor.system("audit")
PENDING_KEY = "blindpost.audit.pending"

def _like_literal(text: str) -> str:
    """``text`` as the leaf's canonical JSON spells it inside a string, for LIKE."""
    spelled = json.dumps(text, ensure_ascii=False)[1:-1]
    return spelled.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


entries: Table = AuditEntry.__table__  # type: ignore[assignment]  # Declarative tables are Tables.
nodes: Table = AuditNode.__table__  # type: ignore[assignment]
checkpoints: Table = AuditCheckpoint.__table__  # type: ignore[assignment]


# Built once: statement construction costs more than executing them on an append.
_LATEST = select(checkpoints.c.size, checkpoints.c.created_at).order_by(
    checkpoints.c.id.desc()).limit(1).subquery()
_STATE_QUERY = select(select(func.max(entries.c.idx)).scalar_subquery().label("last"),
                      select(_LATEST.c.size).scalar_subquery().label("size"),
                      select(_LATEST.c.created_at).scalar_subquery().label("created_at"))
_INSERT_ENTRY = insert(entries)
_INSERT_NODE = insert(nodes)


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint as stored: its body and the signed note handed to witnesses."""

    checkpoint: Checkpoint
    note: str
    created_at: datetime


class SessionNodes:
    """Reads stored tree nodes through a session (a :class:`merkle.NodeReader`)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def read_nodes(self, coords: Sequence[merkle.Coord]) -> list[bytes]:
        """Return the stored hashes of ``coords``; raise :class:`AuditError` if one is missing."""
        positions = [merkle.node_position(level, index) for level, index in coords]
        rows = self._session.execute(
            select(nodes.c.pos, nodes.c.hash).where(nodes.c.pos.in_(set(positions))))
        found = {int(pos): bytes(hashed) for pos, hashed in rows}
        missing = [coord for coord, pos in zip(coords, positions, strict=True)
                   if pos not in found]
        if missing:
            raise AuditError(f"audit tree node {missing[0]} is missing; "
                             "run `blindpost audit verify`")
        return [found[pos] for pos in positions]


class AuditLog:
    """The tamper-evident audit log of one installation.

    Checkpoints are signed when an append finds N entries or T seconds since the last
    one; a long-running service should also call :meth:`checkpoint_if_due` on a timer
    (so a quiet log is covered too) and :meth:`checkpoint` at shutdown.
    """

    def __init__(self, *, signer: NoteSigner, clock: Clock, checkpoint_every: int = 1000,
                 checkpoint_seconds: int = 300, sinks: Sequence[EventSink] = (),
                 entry_keys: StateKeys | None = None,
                 checkpoint_file: Path | None = None) -> None:
        self._signer = signer
        self._clock = clock
        self._every = checkpoint_every
        self._interval = timedelta(seconds=checkpoint_seconds)
        self._sinks = tuple(sinks)
        # The right edge of the tree as this log last committed it (see _tree).
        self._committed_edge: merkle.TreeBuilder | None = None
        # With state keys, each entry gets a MAC as it is appended, so an entry not yet
        # covered by a signed checkpoint cannot be forged or rewritten without keys/.
        self.entry_keys = entry_keys
        # The latest checkpoint this process signed, kept beside the database, so that a
        # shorter, emptied or rolled-back log fails verification without a witness.
        self.checkpoint_file = checkpoint_file

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock,
                      entry_keys: StateKeys | None = None) -> AuditLog:
        """Build the log of an installation: its key file, origin, schedule and copies."""
        sinks: list[EventSink] = [JsonlSink(settings.audit_jsonl_path)]
        if settings.audit_syslog:
            sinks.append(SyslogSink())
        return cls(signer=load_signer(settings.audit_key_path, name=settings.audit_origin),
                   clock=clock, checkpoint_every=settings.audit_checkpoint_every,
                   checkpoint_seconds=settings.audit_checkpoint_seconds, sinks=sinks,
                   entry_keys=entry_keys, checkpoint_file=settings.audit_checkpoint_path)

    @property
    def origin(self) -> str:
        """The log's origin line, also the signing key's name."""
        return self._signer.name

    @property
    def verifier(self) -> NoteVerifier:
        """The verifier of this log's checkpoints."""
        return self._signer.verifier

    def record(self, session: Session, *, tag: AuditTag, actor: Actor, subject: str,
               details: Mapping[str, object] | None = None) -> int:
        """Append an event in the caller's transaction and return its index.

        The actor's name is the event's actor; where it acted from (source address,
        client version, operating-system user) joins ``details``, which otherwise hold
        ids, sizes, hashes and names only: never file contents or health data. A
        checkpoint is written in the same transaction when one is due.
        """
        # No flush may run between reading the size and inserting at it: the rows it
        # would write record events of their own (gateway.integrity), at that index.
        with session.no_autoflush:
            self.lock(session)
            state = self._state(session)
            merged = {**actor.audit_details(), **(details or {})}
            index = self._append(session, state.size, AuditTag(tag), actor.name, subject,
                                 merged)
            if self._due(state, index + 1):
                self._write_checkpoint(session, index + 1)
            return index

    def checkpoint(self, session: Session) -> SignedCheckpoint:
        """Return a checkpoint of the whole log, signing a new one if the log grew."""
        with session.no_autoflush:
            self.lock(session)
            state = self._state(session)
            latest = self.latest_checkpoint(session)
            if latest is not None and not _grown_since(latest.checkpoint.size, state.size):
                return latest
            return self._write_checkpoint(session, state.size)

    def checkpoint_if_due(self, session: Session) -> SignedCheckpoint | None:
        """Sign a checkpoint if N entries or T seconds have passed; for a periodic timer."""
        with session.no_autoflush:
            self.lock(session)
            state = self._state(session)
            if not self._due(state, state.size):
                return None
            return self._write_checkpoint(session, state.size)

    def size(self, session: Session) -> int:
        """Return the number of entries in the log."""
        last = session.execute(select(func.max(entries.c.idx))).scalar()
        return 0 if last is None else int(last) + 1

    def latest_checkpoint(self, session: Session) -> SignedCheckpoint | None:
        """Return the most recent stored checkpoint, if any."""
        row = session.execute(select(checkpoints.c.note, checkpoints.c.created_at)
                              .order_by(checkpoints.c.id.desc()).limit(1)).first()
        if row is None:
            return None
        return SignedCheckpoint(Checkpoint.parse(unverified_text(row.note)), row.note,
                                row.created_at)

    def root(self, session: Session, size: int) -> bytes:
        """Return the root hash of the first ``size`` entries, from stored subtrees."""
        self._check_size(session, size)
        return merkle.root_hash(size, SessionNodes(session))

    def inclusion_proof(self, session: Session, index: int, size: int) -> list[bytes]:
        """Return the audit path of entry ``index`` in the tree of ``size`` entries."""
        self._check_size(session, size)
        if not 0 <= index < size:
            raise AuditError(f"entry {index} is not in a tree of {size} entries")
        return merkle.inclusion_proof(index, size, SessionNodes(session))

    def consistency_proof(self, session: Session, size1: int, size2: int) -> list[bytes]:
        """Return the consistency proof from the tree of ``size1`` to that of ``size2``."""
        self._check_size(session, size2)
        if not 0 < size1 <= size2:
            raise AuditError(f"no consistency proof from size {size1} to size {size2}")
        return merkle.consistency_proof(size1, size2, SessionNodes(session))

    def prove(self, session: Session, index: int) -> str:
        """Return a self-contained tlog-proof of entry ``index`` (the entry as extra data).

        The proof uses the latest checkpoint, signing a new one if it does not cover
        the entry yet.
        """
        # An index past the log is refused before the query: a huge one would overflow
        # the driver's integer instead of finding nothing.
        if not 0 <= index < self.size(session):
            raise AuditError(f"there is no audit entry {index}")
        leaf = session.execute(select(entries.c.leaf).where(entries.c.idx == index)).scalar()
        if leaf is None:
            raise AuditError(f"there is no audit entry {index}")
        signed = self.latest_checkpoint(session)
        if signed is None or signed.checkpoint.size <= index:
            # Not checkpoint(): the entry recording the latest checkpoint does not call for
            # a new one there (see _grown_since), yet its proof needs one that covers it.
            self.lock(session)
            signed = self._write_checkpoint(session, self._state(session).size)
        path = self.inclusion_proof(session, index, signed.checkpoint.size)
        return TlogProof(index, tuple(path), signed.note, leaf.encode()).text()

    def events(self, session: Session, *, since: datetime | None = None,
               until: datetime | None = None, tag: AuditTag | None = None,
               tags: Sequence[AuditTag] = (), start: int = 0, before: int | None = None,
               newest_first: bool = False, contains: Sequence[str] = (),
               batch: int = 1000) -> Iterator[AuditEvent]:
        """Yield entries in index order (or newest first), optionally in a time window, of
        some tags, below index ``before`` (a keyset page), or whose leaf contains each of
        ``contains`` (case-insensitive; a coarse filter the caller refines on the fields).

        Each condition is on an indexed column or narrows the scan in the database, so a
        page of a million-entry log reads about a page of rows, never the whole table.
        """
        order = entries.c.idx.desc() if newest_first else entries.c.idx
        query = select(entries.c.leaf).where(entries.c.idx >= start).order_by(order)
        if before is not None:
            query = query.where(entries.c.idx < before)
        for text in contains:
            query = query.where(entries.c.leaf.ilike(f"%{_like_literal(text)}%", escape="\\"))
        if since is not None:
            query = query.where(entries.c.recorded_at >= since)
        if until is not None:
            query = query.where(entries.c.recorded_at < until)
        if tag is not None:
            query = query.where(entries.c.tag == AuditTag(tag).value)
        if tags:
            query = query.where(entries.c.tag.in_([AuditTag(t).value for t in tags]))
        for (leaf,) in session.execute(query.execution_options(yield_per=batch)):
            yield decode_leaf(leaf.encode())

    def export(self, session: Session, out: IO[bytes]) -> int:
        """Write every entry's leaf as one JSON line, in index order; return the count."""
        count = 0
        query = select(entries.c.leaf).order_by(entries.c.idx)
        for (leaf,) in session.execute(query.execution_options(yield_per=5000)):
            out.write(leaf.encode() + b"\n")
            count += 1
        return count

    def lock(self, session: Session) -> None:
        """Serialise this transaction with every other writer of the log, until it ends.

        The sequencer lock: a transaction-scoped advisory lock on PostgreSQL; SQLite's
        ``BEGIN IMMEDIATE`` already is one.
        """
        if session.get_bind().dialect.name == "postgresql":
            session.execute(select(func.pg_advisory_xact_lock(SEQUENCER_LOCK_ID)))

    def _state(self, session: Session) -> _LogState:
        """Read the log size and the latest checkpoint in one round trip."""
        row = session.connection().execute(_STATE_QUERY).one()
        size = 0 if row.last is None else int(row.last) + 1
        return _LogState(size, row.size, row.created_at)

    def _tree(self, session: Session, size: int) -> merkle.TreeBuilder:
        """The right edge of the tree of ``size`` leaves, without reading it when possible.

        The edge left by this transaction's previous append, or by the last transaction
        this log committed, is reused when it is still the tip; committed nodes never
        change, so that is safe across processes. Otherwise it is read from the store.
        """
        pending: _Pending | None = session.info.get(PENDING_KEY)
        for candidate in (pending.edge if pending else None, self._committed_edge):
            if candidate is not None and candidate.size == size:
                return candidate.copy()
        return merkle.TreeBuilder.resume(size, SessionNodes(session))

    def _append(self, session: Session, index: int, tag: AuditTag, actor: str, subject: str,
                details: Mapping[str, object] | None) -> int:
        now = self._clock()
        leaf = encode_leaf(index=index, time=now, tag=tag, actor=actor, subject=subject,
                           details=details)
        tree = self._tree(session, index)
        first = merkle.stored_node_count(index)
        completed = tree.append(merkle.leaf_hash(leaf))
        mac = entry_mac(self.entry_keys, index, leaf) if self.entry_keys else None
        session.connection().execute(_INSERT_ENTRY, [{"idx": index, "recorded_at": now,
                                                      "tag": tag.value, "leaf": leaf.decode(),
                                                      "mac": mac}])
        session.connection().execute(_INSERT_NODE, [{"pos": first + offset, "hash": hashed}
                                        for offset, hashed in enumerate(completed)])
        pending = self._pending(session)
        if pending.first is None:
            pending.first = index
        pending.leaves.append(leaf)
        pending.edge = tree
        return index

    def _due(self, state: _LogState, size: int) -> bool:
        if state.checkpoint_size is None or state.checkpoint_time is None:
            return size > 0
        if not _grown_since(state.checkpoint_size, size):
            return False
        waited: timedelta = self._clock() - state.checkpoint_time
        return size - state.checkpoint_size - 1 >= self._every or waited >= self._interval

    def _write_checkpoint(self, session: Session, size: int) -> SignedCheckpoint:
        root = self._tree(session, size).root()
        body = Checkpoint(self.origin, size, root)
        note = self._signer.sign(body.text())
        now = self._clock()
        session.execute(insert(checkpoints), [{"size": size, "root": root,
                                               "created_at": now, "note": note}])
        self._append(session, size, AuditTag.AUDIT_CHECKPOINT, SYSTEM_ACTOR.name,
                     f"checkpoint:{size}", {"size": size, "root": base64.b64encode(root).decode()})
        self._pending(session).checkpoint = (size, note)
        return SignedCheckpoint(body, note, now)

    def _check_size(self, session: Session, size: int) -> None:
        if not 0 <= size <= self.size(session):
            raise AuditError(f"the log has no tree of size {size}")

    def _pending(self, session: Session) -> _Pending:
        """What this session's transaction recorded, handed over after commit."""
        pending: _Pending | None = session.info.get(PENDING_KEY)
        if pending is None or pending.log is not self:
            pending = session.info[PENDING_KEY] = _Pending(self)
        return pending

    def _committed(self, pending: _Pending) -> None:
        if pending.edge is not None:
            self._committed_edge = pending.edge
        if pending.checkpoint is not None and self.checkpoint_file is not None:
            keep_latest_checkpoint(self.checkpoint_file, *pending.checkpoint)
        if pending.leaves:
            for sink in self._sinks:
                sink.emit(pending.leaves)


@dataclass
class _Pending:
    """Leaves and tree edge of one transaction, kept in ``session.info`` until it ends."""

    log: AuditLog
    # The index of the transaction's first entry: from there on the log is uncommitted.
    first: int | None = None
    leaves: list[bytes] = field(default_factory=list)
    edge: merkle.TreeBuilder | None = None
    checkpoint: tuple[int, str] | None = None


def first_appended(session: Session) -> int | None:
    """The index of the first entry ``session``'s open transaction appended, if it
    appended any: the entries before it are committed, it and those after are not."""
    pending: _Pending | None = session.info.get(PENDING_KEY)
    return pending.first if pending is not None else None


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    # One listener for every session (registering one per session costs more than an
    # append); sessions that recorded nothing carry no pending state.
    pending: _Pending | None = session.info.pop(PENDING_KEY, None)
    if pending is not None:
        pending.log._committed(pending)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(PENDING_KEY, None)


def entry_mac(keys: StateKeys, index: int, leaf: bytes) -> str:
    """The MAC of entry ``index``: it binds the leaf to its position in the log."""
    return keys.mac("audit", index.to_bytes(8, "big") + leaf)


def _grown_since(checkpoint_size: int, size: int) -> bool:
    # Each checkpoint is followed by its own audit:checkpoint entry; that entry alone
    # does not call for another checkpoint, or an idle log would grow forever.
    return size > checkpoint_size + 1


@dataclass(frozen=True)
class _LogState:
    size: int
    checkpoint_size: int | None
    checkpoint_time: datetime | None
