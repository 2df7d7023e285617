"""Full verification of the audit log, from the database or from an export file.

Verification recomputes the whole tree from the leaves, never trusting stored hashes,
and reports every finding with the entry index or checkpoint it concerns:

* entries: gaps in the index, a leaf whose own index, tag or time disagrees with its
  row, a leaf whose hash differs from the tree stored when it was appended;
* checkpoints: a signature that does not verify with the log's key, a stored root or
  size that disagrees with the signed note, a size smaller than an earlier checkpoint
  (rolled back) or larger than the log (entries removed), and a root that differs from
  the recomputed tree. A mismatch is located between the last checkpoint that still
  matches and the one that does not.

Outside checkpoints (held by witnesses) are checked the same way; they are what makes a
rewrite by someone holding the signing key detectable.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.audit import merkle
from gateway.audit.errors import AuditError, VerificationError
from gateway.audit.events import format_time
from gateway.audit.log import checkpoints, entries, nodes
from gateway.audit.note import Checkpoint, NoteVerifier, open_checkpoint
from gateway.audit.tags import AuditTag
from gateway.state_keys import StateKeys

MAX_FINDINGS = 100
_BATCH = 10_000
_TAGS = frozenset(tag.value for tag in AuditTag)

# Called with each entry's index, time column, decoded leaf and leaf bytes, in index
# order, as verification reads it: one pass serves a reader and the verification.
EntryReader = Callable[[int, datetime, dict[str, Any], bytes], None]


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A signed checkpoint whose root matched the recomputed tree."""

    label: str
    size: int
    root: bytes
    outside: bool


@dataclass(frozen=True)
class VerifyReport:
    """What a successful verification covered.

    ``anchor`` is the largest checkpoint (stored or outside) the recomputed tree matched,
    ``witnessed`` the largest outside one: entries past ``anchor.size`` are checked only
    against the stored tree, not yet against a signature.
    """

    size: int
    root: bytes
    checkpoints: int
    outside: int
    # The size of the checkpoint kept in the data directory, if one was checked.
    kept: int | None = None
    anchor: VerifiedCheckpoint | None = None
    witnessed: VerifiedCheckpoint | None = None

    def summary(self) -> str:
        """One line for the operator."""
        kept = "" if self.kept is None else (
            f"; the log holds the {self.kept} entries of the data directory's checkpoint")
        return (f"audit log OK: {self.size} entries, {self.checkpoints} stored checkpoints "
                f"and {self.outside} outside checkpoints verified{kept}")


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

    def __init__(self, expectations: Sequence[_Expectation], findings: _Findings) -> None:
        self.builder = merkle.TreeBuilder()
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

    def add(self, leaf: bytes) -> list[bytes]:
        completed = self.builder.append(merkle.leaf_hash(leaf))
        self._check_roots()
        return completed

    def _check_roots(self) -> None:
        while self._pending and self._pending[0].size == self.builder.size:
            expected = self._pending.pop(0)
            if self.builder.root() == expected.root:
                self._matched(expected)
                continue
            good = self._good_outside if expected.outside else self._good_any
            self._findings.add(
                f"{expected.label}: its root does not match the recomputed tree of "
                f"{expected.size} entries; entries in [{good}, {expected.size}) "
                "were changed, removed, inserted or reordered")

    def _matched(self, expected: _Expectation) -> None:
        self._good_any = max(self._good_any, expected.size)
        if expected.outside:
            self._good_outside = max(self._good_outside, expected.size)
        # Expectations arrive in size order, so a later match is at least as large.
        verified = VerifiedCheckpoint(expected.label, expected.size, expected.root,
                                      expected.outside and not expected.kept)
        if self._anchor_rank is None or expected.size > self.anchor_size or (
                expected.rank > self._anchor_rank):
            self.anchor, self._anchor_rank = verified, expected.rank
        if verified.outside:
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
    if index != position:
        findings.add(f"entry {position}: its leaf declares index {index} "
                     "(an entry was inserted, removed or moved)")
    if tag not in _TAGS:
        findings.add(f"entry {position}: unknown tag {tag!r}")
    return document


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


def _stored_checkpoints(session: Session, verifier: NoteVerifier,
                        findings: _Findings) -> list[_Expectation]:
    """Check each stored checkpoint's signature and columns, and that sizes only grow."""
    expectations: list[_Expectation] = []
    largest: tuple[int, int] | None = None
    query = select(checkpoints.c.id, checkpoints.c.size, checkpoints.c.root,
                   checkpoints.c.note).order_by(checkpoints.c.id)
    for row in session.execute(query):
        label = f"stored checkpoint #{row.id} (size {row.size})"
        try:
            body = open_checkpoint(row.note, verifier)
        except VerificationError as exc:
            findings.add(f"{label}: not a valid checkpoint of {verifier.name}: {exc.summary}")
            continue
        _compare_columns(label, row.size, row.root, body, findings)
        if largest is not None and body.size < largest[1]:
            findings.add(f"{label}: its size is smaller than that of the earlier checkpoint "
                         f"#{largest[0]} (size {largest[1]}): a rolled-back checkpoint")
        largest = (row.id, body.size) if largest is None or body.size > largest[1] else largest
        expectations.append(_Expectation(body.size, body.root, label))
    return expectations


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

    def __init__(self, rows: Iterator[Any], findings: _Findings) -> None:
        self._rows = rows
        self._findings = findings
        self._next_pos = 0
        self._in_step = True
        self._mismatches = 0

    def compare(self, index: int, completed: Sequence[bytes]) -> None:
        for level, hashed in enumerate(completed):
            row = next(self._rows, None) if self._in_step else None
            if self._in_step and (row is None or row.pos != self._next_pos):
                self._in_step = False
                self._findings.add(f"entry {index}: the stored tree lacks node position "
                                   f"{self._next_pos}; stored nodes were removed")
            elif row is not None and bytes(row.hash) != hashed:
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
        if self._in_step and next(self._rows, None) is not None:
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

    def report(self, covered: int, findings: _Findings) -> None:
        """Only entries beyond the last matching checkpoint need their MAC: the signed
        checkpoint protects the rest."""
        for start, end in self.runs:
            first = max(start, covered)
            if first < end:
                findings.add(f"entries {first} to {end - 1} are not covered by a checkpoint "
                             "and their MAC does not verify: they were written or changed "
                             "without the state key")


class _RowChecker:
    """Checks entry rows in index order and feeds them to the recomputed tree."""

    def __init__(self, recomputer: _Recomputer, node_stream: _NodeStream,
                 findings: _Findings, entry_keys: StateKeys | None,
                 reader: EntryReader | None = None) -> None:
        self._recomputer = recomputer
        self._nodes = node_stream
        self._findings = findings
        self._reader = reader
        self._expected_idx = 0
        self._keys = entry_keys
        self.unauthenticated = _UnauthenticatedEntries()

    def check(self, row: Any) -> None:
        if row.idx != self._expected_idx:
            self._findings.add(f"entries {self._expected_idx} to {row.idx - 1} are missing; "
                               "they were deleted")
        self._expected_idx = row.idx + 1
        leaf = row.leaf.encode()
        # Parsed from the text column: JSON from bytes would be decoded again.
        document = _check_leaf(row.idx, row.leaf, self._findings)
        if document is not None and (document.get("tag") != row.tag or
                                     document.get("time") != format_time(row.recorded_at)):
            self._findings.add(f"entry {row.idx}: its tag or time column differs from its leaf")
        if self._keys is not None and not (
                row.mac and self._keys.check_mac("audit", row.idx.to_bytes(8, "big") + leaf,
                                                 row.mac)):
            self.unauthenticated.add(row.idx)
        position = self._recomputer.size
        self._nodes.compare(position, self._recomputer.add(leaf))
        if document is not None and self._reader is not None:
            self._reader(row.idx, row.recorded_at, document, leaf)


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
    findings = _Findings()
    stored = _stored_checkpoints(session, verifier, findings)
    external = parse_outside(outside, verifier, findings)
    local = [replace(expectation, kept=True) for expectation in parse_outside(
        [("kept in the data directory", kept)] if kept else [], verifier, findings)]
    external_count = len(external)
    external += local
    recomputer = _Recomputer([*stored, *external], findings)
    node_query = select(nodes.c.pos, nodes.c.hash).order_by(nodes.c.pos)
    node_stream = _NodeStream(iter(session.execute(
        node_query.execution_options(yield_per=_BATCH))), findings)
    rows = _RowChecker(recomputer, node_stream, findings, entry_keys, reader)
    entry_query = select(entries.c.idx, entries.c.recorded_at, entries.c.tag,
                         entries.c.leaf, entries.c.mac).order_by(entries.c.idx)
    for row in session.execute(entry_query.execution_options(yield_per=_BATCH)):
        rows.check(row)
    recomputer.finish()
    node_stream.finish()
    rows.unauthenticated.report(recomputer.covered, findings)
    if recomputer.size and not stored:
        findings.add(f"the log holds {recomputer.size} entries but no stored checkpoint: "
                     "the checkpoints were removed")
    findings.raise_if_any(recomputer.size)
    return VerifyReport(recomputer.size, recomputer.builder.root(), len(stored), external_count,
                        kept=local[0].size if local else None, anchor=recomputer.anchor,
                        witnessed=recomputer.witnessed)


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
    for line in lines:
        leaf = line.rstrip(b"\n")
        if not leaf:
            findings.add(f"entry {recomputer.size}: empty line in the export")
            continue
        _check_leaf(recomputer.size, leaf, findings)
        recomputer.add(leaf)
    recomputer.finish()
    findings.raise_if_any(recomputer.size)
    return VerifyReport(recomputer.size, recomputer.builder.root(), 0, len(outside),
                        anchor=recomputer.anchor, witnessed=recomputer.witnessed)
