"""Verification of the audit log, from the database or from an export file.

Verification recomputes the tree from the leaves, never trusting stored hashes, and
reports every finding with the entry index or checkpoint it concerns:

* entries: gaps in the index, a leaf whose own index, tag or time disagrees with its
  row, a leaf whose hash differs from the tree stored when it was appended, an entry
  beyond the last matching checkpoint whose MAC does not verify;
* checkpoints: a signature that does not verify with the log's key, a stored root or
  size that disagrees with the signed note, a size smaller than an earlier checkpoint
  (rolled back) or larger than the log (entries removed), and a root that differs from
  the recomputed tree. A mismatch is located between the last checkpoint that still
  matches and the one that does not.

Outside checkpoints (held by witnesses) are checked the same way; they are what makes a
rewrite by someone holding the signing key detectable.

Three entry points:

``verify_database(session, *, verifier, outside=(), entry_keys=None, kept=None, reader=None)``
    The whole log. Returns a :class:`VerifyReport` or raises
    :class:`~gateway.audit.errors.VerificationError` listing every finding.

``verify_from(session, *, trusted, verifier, outside=(), entry_keys=None, kept=None, reader=None)``
    Incremental: only what was appended since ``trusted``, the :class:`VerifiedState`
    of an earlier verification (``report.state``; a :class:`VerifiedCheckpoint` or a
    ``(size, root)`` pair also do). The stored subtrees of the first ``trusted.size``
    entries must fold to ``trusted.root`` (the old side of a consistency proof: the
    new tree extends the verified one), then the new entries are verified exactly as a
    full verification verifies them, and checkpoints that cover no new entry are held
    to the trusted root by a consistency proof. Time is proportional to what is new;
    a follower calls it in a loop, each time with the last report's ``state``, and
    ``reader`` is handed each new entry. What it cannot see: a change to entries the
    trusted state already covers (stored tree left intact); a full verification
    (``verify_database``) still finds that, so run one now and then.

``verify_export(lines, *, verifier, outside)``
    An export, offline, against outside checkpoints. This path needs only the standard
    library and ``cryptography``: the module imports nothing of the database layer
    until a database is verified.

``reader`` (:data:`EntryReader`) is called with each entry's index, time, tag column
and leaf bytes, in index order, as they are verified; the verdict comes only at the
end, so a caller builds from what it was handed and discards it if verification raises.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from gateway.audit import merkle
from gateway.audit.errors import AuditError, StaleStateError, VerificationError
from gateway.audit.events import format_time
from gateway.audit.leaves import (
    column_datetime,
    column_time_text,
    leaf_fields,
    usual_leaf_hashes,
)
from gateway.audit.note import Checkpoint, NoteVerifier, open_checkpoint
from gateway.audit.tags import AuditTag

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from gateway.audit.leaf_worker import LeafWorker
    from gateway.audit.reading import EntryRow, LogTables
    from gateway.state_keys import StateKeys

MAX_FINDINGS = 100
_TAGS = frozenset(tag.value for tag in AuditTag)
# Never equal to a leaf's time: what a time column that holds no time compares as.
_NO_TIME = object()

# Called with each entry's index, time column, tag column and leaf bytes, in index
# order, as verification reads it: one pass serves a reader and the verification. The
# leaf is not decoded for the reader: most readers want a few tags, and decoding is
# the dearest step of the pass.
EntryReader = Callable[[int, datetime, str, bytes], None]


@runtime_checkable
class UsualRowsReader(Protocol):
    """An :data:`EntryReader` that also takes whole batches of entries in the log's usual
    form, as verification finds them: one call per batch instead of one per entry, no
    datetime and no leaf bytes made for entries it skips (the exposure report reads a
    million entries so).

    ``usual_rows`` gets rows ``(idx, time text, tag, leaf text, mac)``, consecutive,
    each leaf matching :mod:`gateway.audit.leaves`' pattern and declaring its own index,
    its tag column and the time of its time column, which is in the column's form
    (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC). Other entries go to ``__call__`` one by one.
    """

    def __call__(self, index: int, time: datetime, tag: str, leaf: bytes) -> None: ...

    def usual_rows(self, rows: Sequence[EntryRow]) -> None: ...


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A signed checkpoint whose root matched the recomputed tree."""

    label: str
    size: int
    root: bytes
    outside: bool


@dataclass(frozen=True)
class VerifiedState:
    """Where a successful verification ended: what :func:`verify_from` continues from.

    ``checkpoint_id`` is the largest stored checkpoint id seen; stored checkpoints
    with larger ids are new to the next verification and checked in full.
    """

    size: int
    root: bytes
    checkpoint_id: int = 0


@dataclass(frozen=True)
class VerifyReport:
    """What a successful verification covered.

    ``anchor`` is the largest checkpoint (stored or outside) the recomputed tree matched,
    ``witnessed`` the largest outside one: entries past ``anchor.size`` are checked only
    against the stored tree and their MACs, not yet against a signature. ``start`` is
    where an incremental verification began (0 for a full one).
    """

    size: int
    root: bytes
    checkpoints: int
    outside: int
    # The size of the checkpoint kept in the data directory, if one was checked.
    kept: int | None = None
    anchor: VerifiedCheckpoint | None = None
    witnessed: VerifiedCheckpoint | None = None
    start: int = 0
    checkpoint_id: int = 0

    @property
    def state(self) -> VerifiedState:
        """What a later :func:`verify_from` may trust."""
        return VerifiedState(self.size, self.root, self.checkpoint_id)

    def summary(self) -> str:
        """One line for the operator."""
        kept = "" if self.kept is None else (
            f"; the log holds the {self.kept} entries of the data directory's checkpoint")
        since = "" if not self.start else (
            f" ({self.size - self.start} new since the last verification, of {self.start})")
        return (f"audit log OK: {self.size} entries{since}, {self.checkpoints} stored "
                f"checkpoints and {self.outside} outside checkpoints verified{kept}")


@dataclass(frozen=True)
class _Expectation:
    size: int
    root: bytes
    label: str
    outside: bool = False
    # The checkpoint kept in the data directory: signed by this log, held by no witness.
    kept: bool = False

    @property
    def rank(self) -> int:
        """Which to name, of checkpoints of one size: a witness's, then a stored one."""
        return 0 if self.kept else 2 if self.outside else 1


@dataclass
class _Findings:
    items: list[str] = field(default_factory=list)
    dropped: int = 0

    def add(self, message: str) -> None:
        if len(self.items) < MAX_FINDINGS:
            self.items.append(message)
        else:
            self.dropped += 1

    def raise_if_any(self, size: int) -> None:
        if not self.items:
            return
        problems = list(self.items)
        if self.dropped:
            problems.append(f"... and {self.dropped} more findings")
        count = len(self.items) + self.dropped
        raise VerificationError(f"audit log verification FAILED: {count} finding(s) in a "
                                f"log of {size} entries", problems)


class _Recomputer:
    """Rebuilds the tree leaf by leaf and checks each expected root as its size passes."""

    def __init__(self, expectations: Sequence[_Expectation], findings: _Findings, *,
                 builder: merkle.TreeBuilder | None = None) -> None:
        self.builder = builder or merkle.TreeBuilder()
        self._pending = sorted(expectations, key=lambda item: item.size)
        self._findings = findings
        # Largest sizes whose roots matched: any checkpoint, and witnessed ones only.
        # A rewrite re-signed with the log's own key matches the stored checkpoints, so
        # only witnessed ones may bound where a witnessed mismatch lies.
        self._good_any = 0
        self._good_outside = 0
        self.anchor: VerifiedCheckpoint | None = None
        self._anchor_rank: int | None = None
        self.witnessed: VerifiedCheckpoint | None = None
        self._check_roots()

    @property
    def size(self) -> int:
        return self.builder.size

    @property
    def covered(self) -> int:
        """How many entries a checkpoint that matched covers."""
        return self._good_any

    @property
    def largest_expected(self) -> int:
        """The largest size still to be checked (the entries a MAC must protect begin
        there, when every checkpoint matches)."""
        return max((item.size for item in self._pending), default=self._good_any)

    def add(self, hashed_leaf: bytes) -> list[bytes]:
        completed = self.builder.append(hashed_leaf)
        if self._pending and self._pending[0].size == self.builder.size:
            self._check_roots()
        return completed

    def due_within(self, count: int) -> list[_Expectation]:
        """The expectations the next ``count`` leaves reach, smallest first."""
        end = self.builder.size + count
        due = []
        for expected in self._pending:
            if expected.size > end:
                break
            due.append(expected)
        return due

    def accept(self, builder: merkle.TreeBuilder, reached: Sequence[_Expectation]) -> None:
        """Take ``builder`` (this tree, extended), whose roots matched ``reached``."""
        self.builder = builder
        del self._pending[:len(reached)]
        for expected in reached:
            self.matched(expected)

    def _check_roots(self) -> None:
        while self._pending and self._pending[0].size == self.builder.size:
            expected = self._pending.pop(0)
            if self.builder.root() == expected.root:
                self.matched(expected)
                continue
            good = self._good_outside if expected.outside else self._good_any
            self._findings.add(
                f"{expected.label}: its root does not match the recomputed tree of "
                f"{expected.size} entries; entries in [{good}, {expected.size}) "
                "were changed, removed, inserted or reordered")

    def matched(self, expected: _Expectation) -> None:
        """Record a checkpoint whose root is known to match (here or by a proof)."""
        self._good_any = max(self._good_any, expected.size)
        if expected.outside:
            self._good_outside = max(self._good_outside, expected.size)
        verified = VerifiedCheckpoint(expected.label, expected.size, expected.root,
                                      expected.outside and not expected.kept)
        if self._anchor_rank is None or expected.size > self.anchor_size or (
                expected.size == self.anchor_size and expected.rank > self._anchor_rank):
            self.anchor, self._anchor_rank = verified, expected.rank
        if verified.outside and (self.witnessed is None or
                                 expected.size >= self.witnessed.size):
            self.witnessed = verified

    @property
    def anchor_size(self) -> int:
        return self.anchor.size if self.anchor else 0

    def finish(self) -> None:
        for expected in self._pending:
            self._findings.add(
                f"{expected.label}: it covers {expected.size} entries but the log holds "
                f"only {self.builder.size}; entries from {self.builder.size} on were removed "
                "(the log was rolled back)")


def _leaf_document(leaf: str | bytes) -> dict[str, Any]:
    """Return a leaf's JSON object, or raise :class:`ValueError`."""
    document = json.loads(leaf)
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    return document


def _check_leaf(position: int, leaf: str | bytes,
                findings: _Findings) -> dict[str, Any] | None:
    """Check a leaf declares ``position``; return its JSON object for the column checks."""
    try:
        document = _leaf_document(leaf)
    except ValueError:
        findings.add(f"entry {position}: its leaf is not a JSON audit event")
        return None
    index, tag = document.get("index"), document.get("tag")
    _check_declared(position, index, tag, findings)
    return document


def _check_declared(position: int, index: object, tag: object, findings: _Findings) -> None:
    if index != position:
        findings.add(f"entry {position}: its leaf declares index {index} "
                     "(an entry was inserted, removed or moved)")
    if tag not in _TAGS:
        findings.add(f"entry {position}: unknown tag {tag!r}")


def _check_leaf_text(position: int, leaf: str,
                     findings: _Findings) -> tuple[Any, Any, bool] | None:
    """Check a leaf (text) declares ``position``; return the tag and time it declares and
    whether it is in the usual form, or None when it is not an audit event. The usual
    form (see :mod:`gateway.audit.leaves`) is read without decoding."""
    fields = leaf_fields(leaf)
    if fields is None:
        document = _check_leaf(position, leaf, findings)
        return None if document is None else (document.get("tag"), document.get("time"),
                                              False)
    index, tag, time = fields
    if index != str(position) or tag not in _TAGS:
        _check_declared(position, _declared_index(index, position), tag, findings)
    return tag, time, True


def _declared_index(index: str, position: int) -> int | str:
    """The index a leaf declares, as a finding names it: compared as text (Python refuses
    to read an integer of over 4,300 digits), shortened when a forger made it enormous."""
    if index == str(position):
        return position
    return index if len(index) <= 20 else f"{index[:6]}… ({len(index)} digits)"


def parse_outside(notes: Sequence[tuple[str, str]], verifier: NoteVerifier,
                  findings: _Findings) -> list[_Expectation]:
    """Open outside checkpoints ``(label, note)``; a bad one is a finding."""
    expectations: list[_Expectation] = []
    for label, note in notes:
        try:
            body = open_checkpoint(note, verifier)
        except VerificationError as exc:
            findings.add(f"outside checkpoint {label}: {exc.summary}")
            continue
        expectations.append(_Expectation(body.size, body.root,
                                         f"outside checkpoint {label} (size {body.size})",
                                         outside=True))
    return expectations


@dataclass
class _Stored:
    """The stored checkpoints a verification checks, and what it saw of the table."""

    expectations: list[_Expectation] = field(default_factory=list)
    rows: int = 0
    last_id: int = 0


def _stored_checkpoints(tables: LogTables, verifier: NoteVerifier, findings: _Findings, *,
                        trusted: VerifiedState | None = None) -> _Stored:
    """Check each stored checkpoint's signature and columns, and that sizes only grow.

    With ``trusted``, a checkpoint an earlier verification saw (id and size both within
    what it covered) is only held to the growing sizes; its signature was checked then.
    """
    stored = _Stored()
    largest: tuple[int, int] | None = None
    for row_id, size, root, note in tables.stored_checkpoints():
        stored.rows += 1
        stored.last_id = max(stored.last_id, row_id)
        label = f"stored checkpoint #{row_id} (size {size})"
        if trusted is not None and row_id <= trusted.checkpoint_id and size <= trusted.size:
            largest = (row_id, size) if largest is None or size > largest[1] else largest
            continue
        try:
            body = open_checkpoint(note, verifier)
        except VerificationError as exc:
            findings.add(f"{label}: not a valid checkpoint of {verifier.name}: {exc.summary}")
            continue
        _compare_columns(label, size, root, body, findings)
        if largest is not None and body.size < largest[1]:
            findings.add(f"{label}: its size is smaller than that of the earlier checkpoint "
                         f"#{largest[0]} (size {largest[1]}): a rolled-back checkpoint")
        largest = (row_id, body.size) if largest is None or body.size > largest[1] else largest
        stored.expectations.append(_Expectation(body.size, body.root, label))
    return stored


def _compare_columns(label: str, size: int, root: bytes, body: Checkpoint,
                     findings: _Findings) -> None:
    if size != body.size or bytes(root) != body.root:
        findings.add(f"{label}: its size or root columns differ from its signed note "
                     f"(note says size {body.size})")


class _NodeStream:
    """Compares recomputed subtree hashes with the stored ones, in completion order.

    One changed or removed entry shifts every later leaf, so only the first few
    mismatches are listed one by one; the rest are counted.
    """

    listed = 10

    def __init__(self, batches: Iterator[list[tuple[int, bytes]]], findings: _Findings,
                 start: int = 0) -> None:
        # Stored nodes ``(pos, hash)`` arrive in batches; ``_buffer[_at:]`` is unread.
        self._batches = batches
        self._buffer: list[tuple[int, bytes]] = []
        self._at = 0
        self._findings = findings
        self._next_pos = start
        self._in_step = True
        self._mismatches = 0

    def _take(self, count: int) -> list[tuple[int, bytes]]:
        taken = self._buffer[self._at:self._at + count]
        self._at += len(taken)
        while len(taken) < count:
            self._buffer, self._at = next(self._batches, []), 0
            if not self._buffer:
                break
            more = self._buffer[:count - len(taken)]
            self._at = len(more)
            taken += more
        return taken

    def _next_row(self) -> tuple[int, bytes] | None:
        taken = self._take(1)
        return taken[0] if taken else None

    def matches(self, computed: Sequence[bytes]) -> bool:
        """Whether the next stored nodes are exactly ``computed``; if so they are taken,
        else left for :meth:`compare` to name what differs."""
        if not self._in_step or not computed:
            return not computed
        taken = self._take(len(computed))
        if (len(taken) == len(computed) and taken[0][0] == self._next_pos and
                taken[-1][0] == self._next_pos + len(computed) - 1 and
                list(map(itemgetter(1), taken)) == computed):
            self._next_pos += len(computed)
            return True
        self._buffer, self._at = taken + self._buffer[self._at:], 0
        return False

    def compare(self, index: int, completed: Sequence[bytes]) -> None:
        for level, hashed in enumerate(completed):
            row = self._next_row() if self._in_step else None
            if self._in_step and (row is None or row[0] != self._next_pos):
                self._in_step = False
                self._findings.add(f"entry {index}: the stored tree lacks node position "
                                   f"{self._next_pos}; stored nodes were removed")
            elif row is not None and row[1] != hashed:
                self._mismatch(index, level)
            self._next_pos += 1

    def _mismatch(self, index: int, level: int) -> None:
        self._mismatches += 1
        if self._mismatches <= self.listed:
            self._findings.add(_node_mismatch(index, level))

    def finish(self) -> None:
        if self._mismatches > self.listed:
            self._findings.add(f"... and {self._mismatches - self.listed} more stored tree "
                               "hashes that differ from the recomputed ones")
        if self._in_step and self._next_row() is not None:
            self._findings.add(f"the stored tree has nodes beyond position {self._next_pos - 1}"
                               ", for entries that do not exist: entries were removed")


def _node_mismatch(index: int, level: int) -> str:
    if level == 0:
        return (f"entry {index}: its leaf hash differs from the one stored when it was "
                "appended; the entry was changed, moved or removed")
    first = (index >> level) << level
    return (f"entry {index}: the stored hash of entries [{first}, {index}] differs from "
            "the recomputed one; the stored tree was changed")


class _UnauthenticatedEntries:
    """Runs of entries whose MAC is missing or wrong, kept as ranges (a log from before
    entry MACs is one long run, which must not cost memory per entry)."""

    def __init__(self) -> None:
        self.runs: list[list[int]] = []

    def add(self, index: int) -> None:
        if self.runs and self.runs[-1][1] == index:
            self.runs[-1][1] = index + 1
        else:
            self.runs.append([index, index + 1])

    def then(self, later: _UnauthenticatedEntries) -> None:
        """Append the runs of ``later``, which all lie after these."""
        for start, end in later.runs:
            if self.runs and self.runs[-1][1] == start:
                self.runs[-1][1] = end
            else:
                self.runs.append([start, end])

    def report(self, covered: int, findings: _Findings) -> None:
        """Only entries beyond the last matching checkpoint need their MAC: the signed
        checkpoint protects the rest."""
        for start, end in self.runs:
            first = max(start, covered)
            if first < end:
                findings.add(f"entries {first} to {end - 1} are not covered by a checkpoint "
                             "and their MAC does not verify: they were written or changed "
                             "without the state key")


class _EntryMacs:
    """Checks entry MACs with keys derived once (see :meth:`StateKeys.check_mac`)."""

    def __init__(self, keys: StateKeys) -> None:
        self._keys = keys
        self.unauthenticated = _UnauthenticatedEntries()

    def valid(self, index: int, leaf: bytes, mac: object) -> bool:
        return bool(isinstance(mac, str) and mac and self._keys.check_mac(
            "audit", index.to_bytes(8, "big") + leaf, mac))

    def check(self, index: int, leaf: bytes, mac: object) -> None:
        if not self.valid(index, leaf, mac):
            self.unauthenticated.add(index)


class _RowChecker:
    """Checks entry rows in index order and feeds them to the recomputed tree.

    MACs are checked from ``mac_from`` on: every checkpoint is expected to match, and
    the entries they cover need none. When one does not, the entries between the last
    that matched and ``mac_from`` are read again for their MACs (:meth:`late_macs`).
    """

    def __init__(self, recomputer: _Recomputer, node_stream: _NodeStream,
                 findings: _Findings, entry_keys: StateKeys | None,
                 reader: EntryReader | None = None, *, start: int = 0) -> None:
        self._recomputer = recomputer
        self._nodes = node_stream
        self._findings = findings
        self._reader = reader
        self._usual_rows = reader.usual_rows if isinstance(reader, UsualRowsReader) else None
        self._expected_idx = start
        self._keys = entry_keys
        self.mac_from = max(start, recomputer.largest_expected)
        self.macs = _EntryMacs(entry_keys) if entry_keys is not None else None

    def check_batch(self, rows: Sequence[EntryRow]) -> None:
        """Check a batch of rows: at once when all is as the log writes it, else entry
        by entry, naming each finding in the order a reader of the log meets it."""
        self.finish_batch(rows, local_leaf_hashes(rows))

    def finish_batch(self, rows: Sequence[EntryRow], hashes: list[bytes] | None) -> None:
        """Check a batch of rows whose leaf hashes :func:`local_leaf_hashes` (or the
        worker process) returned: None, or anything else not as the log writes it, and
        the batch is checked entry by entry."""
        if hashes is None or not self._usual_batch(rows, hashes):
            self._check_rows(rows)

    def _usual_batch(self, rows: Sequence[EntryRow], hashes: list[bytes]) -> bool:
        """Check a batch of usual rows (consecutive, each leaf in the usual form and
        agreeing with its columns: ``hashes`` are their leaf hashes) where every MAC,
        stored node and checkpoint matches; return False, having changed nothing, at
        the first thing that is not so."""
        if not rows or rows[0][0] != self._expected_idx or len(hashes) != len(rows):
            return False
        if self.macs is not None and not self._macs_valid(rows):
            return False
        recomputer = self._recomputer
        reached = recomputer.due_within(len(hashes))
        builder = recomputer.builder.copy()
        completed, roots = builder.extend(hashes, roots_at=[item.size for item in reached])
        if any(root != expected.root for root, expected in zip(roots, reached, strict=True)):
            return False
        if not self._nodes.matches(completed):
            return False
        recomputer.accept(builder, reached)
        self._expected_idx += len(rows)
        if self._usual_rows is not None:
            self._usual_rows(rows)
        elif self._reader is not None:
            for idx, when, tag, text, _mac in rows:
                _hand(self._reader, idx, when, tag, text.encode())
        return True

    def _macs_valid(self, rows: Sequence[EntryRow]) -> bool:
        """Whether every row from ``mac_from`` on carries a valid MAC."""
        assert self.macs is not None
        macs, skip = self.macs, max(0, self.mac_from - rows[0][0])
        return all(macs.valid(idx, text.encode(), mac)
                   for idx, _when, _tag, text, mac in rows[skip:])

    def _check_rows(self, rows: Sequence[EntryRow]) -> None:
        findings, recomputer, nodes, reader = (self._findings, self._recomputer,
                                               self._nodes, self._reader)
        macs, mac_from = self.macs, self.mac_from
        leaf_hash = merkle.leaf_hash
        for idx, when, tag, text, mac in rows:
            if idx != self._expected_idx:
                findings.add(f"entries {self._expected_idx} to {idx - 1} are missing; "
                             "they were deleted")
            self._expected_idx = idx + 1
            leaf = text.encode() if isinstance(text, str) else bytes(text)
            declared = _check_leaf_text(idx, text if isinstance(text, str) else
                                        leaf.decode(errors="replace"), findings)
            if declared is not None and (declared[0] != tag or not _same_time(
                    declared[1], when, usual=declared[2])):
                findings.add(f"entry {idx}: its tag or time column differs from its leaf")
            if macs is not None and idx >= mac_from:
                macs.check(idx, leaf, mac)
            position = recomputer.size
            nodes.compare(position, recomputer.add(leaf_hash(leaf)))
            if reader is not None:
                _hand(reader, idx, when, tag, leaf)

    def late_macs(self, rows: Iterable[Sequence[EntryRow]]) -> None:
        """Check the MACs of entries before ``mac_from`` (``rows`` holds them)."""
        if self.macs is None:
            return
        early = _EntryMacs(self.macs._keys)
        for batch in rows:
            for idx, _when, _tag, text, mac in batch:
                early.check(idx, text.encode() if isinstance(text, str) else bytes(text), mac)
        early.unauthenticated.then(self.macs.unauthenticated)
        self.macs.unauthenticated = early.unauthenticated

    def report_macs(self, covered: int) -> None:
        if self.macs is not None:
            self.macs.unauthenticated.report(covered, self._findings)


def local_leaf_hashes(rows: Sequence[EntryRow]) -> list[bytes] | None:
    """The leaf hashes of consecutive rows all in the usual form, or None (see
    :func:`gateway.audit.leaves.usual_leaf_hashes`), computed in this process."""
    if not rows or rows[-1][0] != rows[0][0] + len(rows) - 1:
        return None
    return usual_leaf_hashes(rows[0][0], map(itemgetter(1), rows), map(itemgetter(2), rows),
                             map(itemgetter(3), rows), _TAGS)


def _same_time(leaf_time: object, column: object, *, usual: bool) -> bool:
    """Whether a leaf's time is its time column's (as the leaf renders times).

    ``usual``: the leaf's time is in the form :func:`format_time` writes (the leaf
    pattern checked it), so equal text means equal times without parsing the column.
    """
    if usual and column_time_text(str(leaf_time)) == column:
        return True
    try:
        expected: object = format_time(column_datetime(column))
    except (TypeError, ValueError):
        expected = _NO_TIME
    return leaf_time == expected


def _hand(reader: EntryReader, idx: int, when: object, tag: object, leaf: bytes) -> None:
    try:
        moment = column_datetime(when)
    except (TypeError, ValueError):
        return  # No time to hand: verification reports the column.
    reader(idx, moment, tag if isinstance(tag, str) else str(tag), leaf)


def verify_database(session: Session, *, verifier: NoteVerifier,
                    outside: Sequence[tuple[str, str]] = (),
                    entry_keys: StateKeys | None = None,
                    kept: str | None = None,
                    reader: EntryReader | None = None) -> VerifyReport:
    """Verify the whole log in the database; raise :class:`VerificationError` on any finding.

    ``outside`` holds ``(label, signed checkpoint note)`` pairs from witnesses; ``kept``
    is the checkpoint kept in the data directory, held to the same rules. With
    ``entry_keys``, every entry beyond the last matching checkpoint must carry a valid MAC.
    ``reader`` is handed every entry as it is read (see :data:`EntryReader`); the
    verdict comes only at the end, so a caller builds from what it was handed and
    discards it if this raises.
    """
    # The database layer is imported here, not with the module: offline verification of
    # an export runs where SQLAlchemy is not installed.
    from gateway.audit.reading import LogTables

    tables = LogTables(session)
    findings = _Findings()
    stored = _stored_checkpoints(tables, verifier, findings)
    external, local = _outside_and_kept(outside, kept, verifier, findings)
    recomputer = _Recomputer([*stored.expectations, *external, *local], findings)
    return _verify_entries(tables, recomputer, findings, _Run(
        stored=stored, outside=len(external),
        kept=local[0].size if local else None, entry_keys=entry_keys, reader=reader))


def verify_from(session: Session, *, trusted: VerifiedState | VerifiedCheckpoint |
                tuple[int, bytes], verifier: NoteVerifier,
                outside: Sequence[tuple[str, str]] = (),
                entry_keys: StateKeys | None = None, kept: str | None = None,
                reader: EntryReader | None = None) -> VerifyReport:
    """Verify what was appended since ``trusted`` (see the module's documentation).

    Raises :class:`~gateway.audit.errors.StaleStateError` when the stored tree no longer
    extends the trusted one, :class:`VerificationError` on any finding among the new
    entries and checkpoints; ``reader`` gets the entries from ``trusted.size`` on.
    """
    from gateway.audit.reading import LogTables

    start = _trusted_state(trusted)
    tables = LogTables(session)
    findings = _Findings()
    builder = _resume(tables, start)
    stored = _stored_checkpoints(tables, verifier, findings, trusted=start)
    external, local = _outside_and_kept(outside, kept, verifier, findings)
    expectations = [*stored.expectations, *external, *local]
    recomputer = _Recomputer([item for item in expectations if item.size > start.size],
                             findings, builder=builder)
    _prove_covered([item for item in expectations if item.size <= start.size], start,
                   tables, recomputer, findings)
    return _verify_entries(tables, recomputer, findings, _Run(
        stored=stored, outside=len(external), kept=local[0].size if local else None,
        entry_keys=entry_keys, reader=reader, start=start.size))


def _trusted_state(trusted: VerifiedState | VerifiedCheckpoint | tuple[int, bytes],
                   ) -> VerifiedState:
    if isinstance(trusted, VerifiedState):
        return trusted
    if isinstance(trusted, VerifiedCheckpoint):
        return VerifiedState(trusted.size, trusted.root)
    size, root = trusted
    return VerifiedState(size, root)


def _resume(tables: LogTables, start: VerifiedState) -> merkle.TreeBuilder:
    """The tree of the first ``start.size`` entries from stored subtrees, which must fold
    to the trusted root; raise :class:`StaleStateError` if they do not."""
    try:
        builder = merkle.TreeBuilder.resume(start.size, tables.node_reader)
    except AuditError:
        builder = None
    if builder is None or builder.root() != start.root:
        raise StaleStateError(
            "audit log verification FAILED: the log no longer extends the verified state",
            [f"the stored tree of the first {start.size} entries does not match the "
             "verified root: entries or stored hashes before it were changed or removed "
             "since the last verification (or the database was restored); a full "
             "verification names them"])
    return builder


def _prove_covered(expectations: Sequence[_Expectation], start: VerifiedState,
                   tables: LogTables, recomputer: _Recomputer, findings: _Findings) -> None:
    """Hold checkpoints within the trusted tree to its root by a consistency proof."""
    for expected in sorted(expectations, key=lambda item: item.size):
        try:
            if expected.size == 0:
                consistent = expected.root == merkle.EMPTY_ROOT
            else:
                proof = merkle.consistency_proof(expected.size, start.size, tables.node_reader)
                merkle.verify_consistency(size1=expected.size, size2=start.size,
                                          root1=expected.root, root2=start.root, proof=proof)
                consistent = True
        except (AuditError, ValueError):
            consistent = False
        if consistent:
            recomputer.matched(expected)
        else:
            findings.add(f"{expected.label}: it is not consistent with the verified tree of "
                         f"{start.size} entries; entries in [0, {expected.size}) were "
                         "changed, removed, inserted or reordered")


def _outside_and_kept(outside: Sequence[tuple[str, str]], kept: str | None,
                      verifier: NoteVerifier, findings: _Findings,
                      ) -> tuple[list[_Expectation], list[_Expectation]]:
    external = parse_outside(outside, verifier, findings)
    local = [replace(expectation, kept=True) for expectation in parse_outside(
        [("kept in the data directory", kept)] if kept else [], verifier, findings)]
    return external, local


@dataclass(frozen=True)
class _Run:
    stored: _Stored
    outside: int
    kept: int | None
    entry_keys: StateKeys | None
    reader: EntryReader | None
    start: int = 0


# Whether verification may hash leaves in a second process (tests turn it off to
# compare, or on for logs of a few entries by making batches small).
PARALLEL = True
_REMOTE = object()


class _LeafPipeline:
    """Hands batches to a :class:`~gateway.audit.leaf_worker.LeafWorker` while this
    process reads the next ones, and to :func:`local_leaf_hashes` when the worker already
    has enough to do; the batches are finished (:meth:`_RowChecker.finish_batch`) in
    index order either way. The worker starts with the second batch, so a log that fits
    in one batch (incremental verification, small logs) costs no process start."""

    # Batches given to the worker at a time: one it works on and one ready for it.
    depth = 2
    # Batches read but not yet finished, before hashing here what the worker has not
    # answered yet (a bound on memory).
    most_pending = 3

    def __init__(self, rows: _RowChecker) -> None:
        self._rows = rows
        self._pending: deque[tuple[Sequence[EntryRow], object]] = deque()
        self._worker: LeafWorker | None = None
        self._batches = 0
        # Answers still to come for batches hashed here instead (the oldest answers).
        self._dropped = 0

    def __enter__(self) -> _LeafPipeline:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        try:
            if kind is None:
                self._settle(0, wait=True)
        finally:
            if self._worker is not None:
                self._worker.close()

    def add(self, batch: Sequence[EntryRow]) -> None:
        self._batches += 1
        if self._batches == 2 and PARALLEL:
            from gateway.audit import leaf_worker

            if leaf_worker.available():
                self._worker = leaf_worker.LeafWorker()
        # What the worker has answered first: a slot it frees takes this batch.
        self._settle(self.most_pending)
        self._pending.append((batch, self._dispatch(batch)))
        self._settle(self.most_pending)

    def _dispatch(self, batch: Sequence[EntryRow]) -> object:
        """Send ``batch`` to the worker if it has room, else hash it here."""
        worker = self._worker
        if worker is not None and worker.outstanding < self.depth:
            from gateway.audit.leaf_worker import WorkerGoneError, encode_request

            request = encode_request(batch)
            if request is not None and worker.has_room(request, len(batch)):
                try:
                    worker.send(request)
                    return _REMOTE
                except WorkerGoneError:
                    self._worker_gone()
        return local_leaf_hashes(batch)

    def _settle(self, keep: int, *, wait: bool = False) -> None:
        """Finish batches in order while their hashes are at hand. While more than
        ``keep`` are pending, the oldest is waited for (``wait``) or, if the worker has
        not answered yet, hashed here: on a busy machine the worker may get little of
        a core, and this process does not stand idle for it (its answer is dropped)."""
        from gateway.audit.leaf_worker import WorkerGoneError

        while self._pending:
            batch, hashes = self._pending[0]
            if hashes is _REMOTE:
                try:
                    if self._worker is None:
                        hashes = local_leaf_hashes(batch)
                    elif self._answered(block=wait and len(self._pending) > keep):
                        hashes = self._worker.receive()
                    elif len(self._pending) > keep:
                        hashes = local_leaf_hashes(batch)
                        self._dropped += 1
                    else:
                        return
                except WorkerGoneError:
                    self._worker_gone()
                    continue
            self._pending.popleft()
            self._rows.finish_batch(batch, hashes)  # type: ignore[arg-type]

    def _answered(self, *, block: bool) -> bool:
        """Whether the worker's answer for the oldest pending batch is at hand (waiting
        for it if ``block``), after the answers for batches hashed here are dropped."""
        worker = self._worker
        assert worker is not None
        while self._dropped and (block or worker.ready()):
            worker.receive()
            self._dropped -= 1
        return not self._dropped and (block or worker.ready())

    def _worker_gone(self) -> None:
        """The worker ended: what it held is hashed here (verification goes on)."""
        assert self._worker is not None
        self._worker.close()
        self._worker, self._dropped = None, 0


def _verify_entries(tables: LogTables, recomputer: _Recomputer, findings: _Findings,
                    run: _Run) -> VerifyReport:
    """Read the entries from ``run.start`` on, check them, and conclude."""
    start = run.start
    stored_nodes = tables.nodes(merkle.stored_node_count(start))
    try:
        node_stream = _NodeStream(stored_nodes, findings, merkle.stored_node_count(start))
        rows = _RowChecker(recomputer, node_stream, findings, run.entry_keys, run.reader,
                           start=start)
        with _LeafPipeline(rows) as pipeline:
            for batch in tables.entries(start, macs_from=rows.mac_from):
                pipeline.add(batch)
        recomputer.finish()
        node_stream.finish()
    finally:
        # Its cursor is closed now, while the session's connection is still open.
        stored_nodes.close()
    if recomputer.covered < rows.mac_from:
        rows.late_macs(tables.entries(max(start, recomputer.covered), rows.mac_from))
    rows.report_macs(recomputer.covered)
    if recomputer.size and not run.stored.rows:
        findings.add(f"the log holds {recomputer.size} entries but no stored checkpoint: "
                     "the checkpoints were removed")
    findings.raise_if_any(recomputer.size)
    return VerifyReport(recomputer.size, recomputer.builder.root(),
                        len(run.stored.expectations), run.outside, kept=run.kept,
                        anchor=recomputer.anchor, witnessed=recomputer.witnessed,
                        start=start, checkpoint_id=run.stored.last_id)


def verify_export(lines: Iterable[bytes], *, verifier: NoteVerifier,
                  outside: Sequence[tuple[str, str]]) -> VerifyReport:
    """Verify an export (one leaf per line) against outside checkpoints, offline.

    Raises :class:`AuditError` without a checkpoint: an export alone proves nothing.
    """
    if not outside:
        raise AuditError("verifying an export needs at least one signed checkpoint "
                         "(--checkpoint FILE) from a witness or the log")
    findings = _Findings()
    recomputer = _Recomputer(parse_outside(outside, verifier, findings), findings)
    leaf_hash = merkle.leaf_hash
    for line in lines:
        leaf = line.rstrip(b"\n")
        if not leaf:
            findings.add(f"entry {recomputer.size}: empty line in the export")
            continue
        try:
            _check_leaf_text(recomputer.size, leaf.decode(), findings)
        except UnicodeDecodeError:
            findings.add(f"entry {recomputer.size}: its leaf is not a JSON audit event")
        recomputer.add(leaf_hash(leaf))
    recomputer.finish()
    findings.raise_if_any(recomputer.size)
    return VerifyReport(recomputer.size, recomputer.builder.root(), 0, len(outside),
                        anchor=recomputer.anchor, witnessed=recomputer.witnessed)
