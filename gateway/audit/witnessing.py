"""The gateway's side of c2sp.org/tlog-witness: each checkpoint goes to every witness.

After a checkpoint is committed, :meth:`Witnessing.cosign_latest` sends it to each
configured witness that has not cosigned it yet, with a consistency proof from the size
that witness last cosigned (remembered in memory, else read from the stored
cosignatures, else 0). A 409 tells the size the witness really holds; the request is
sent once more from there. Valid cosignatures are stored beside the checkpoint
(``audit_cosignatures``).

This runs on the checkpoint timer and at shutdown, outside any transaction and with a
short timeout per request, so no transfer ever waits for a witness. What it cannot fix
it reports, loudly and once per checkpoint: an error log line, an audit event and (from
the audit log) a metric when a checkpoint has fewer cosignatures than the quorum
(``audit:witness:quorum-missed``), and when a witness refuses a checkpoint because it
contradicts what that witness cosigned before (``audit:witness:refused``): the log was
truncated, rolled back or rewritten.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session

from gateway.actors import Actor
from gateway.audit.cosignature import (
    Cosignature,
    CosignatureVerifier,
    cosignatures,
    with_cosignatures,
)
from gateway.audit.errors import VerificationError
from gateway.audit.log import AuditLog, checkpoints, entries
from gateway.audit.models import AuditCosignature
from gateway.audit.note import Checkpoint, unverified_text
from gateway.audit.tags import AuditTag
from gateway.errors import GatewayError
from gateway.witness.protocol import (
    ADD_CHECKPOINT_PATH,
    AddCheckpoint,
    MalformedMessageError,
    WitnessEndpoint,
    parse_cosignature_lines,
    parse_size_body,
)

log = logging.getLogger(__name__)
ACTOR = Actor.system("witnessing")
MAX_RESPONSE_BYTES = 64 * 1024

cosignature_rows: Table = AuditCosignature.__table__  # type: ignore[assignment]

Sessions = Callable[[], AbstractContextManager[Session]]


@dataclass(frozen=True)
class Answer:
    """What a witness answered: an HTTP status and body, or None if it was not reached."""

    status: int | None
    body: bytes = b""
    problem: str = ""


def post(url: str, body: bytes, timeout: float) -> Answer:
    """POST ``body`` to ``url``; any failure to get an answer is an :class:`Answer` too."""
    # The URL comes from the settings, whose check allows http and https only.
    request = urllib.request.Request(url, data=body, method="POST",  # noqa: S310
                                     headers={"Content-Type": "text/plain; charset=utf-8"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return Answer(int(response.status), response.read(MAX_RESPONSE_BYTES))
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.read(MAX_RESPONSE_BYTES))
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        return Answer(None, problem=f"unreachable ({reason})")


@dataclass(frozen=True)
class StoredCheckpoint:
    """A checkpoint as stored: its row id, body and signed note."""

    id: int
    checkpoint: Checkpoint
    note: str


@dataclass(frozen=True)
class WitnessResult:
    """One witness's part in a round."""

    witness: WitnessEndpoint
    cosignature: Cosignature | None = None
    status: int | None = None
    problem: str = ""
    # The witness refused because the checkpoint contradicts what it cosigned before.
    contradicts: bool = False
    witness_size: int | None = None


@dataclass(frozen=True)
class CosigningRound:
    """The checkpoint a round was about, its cosignatures now, and each witness's answer."""

    checkpoint: StoredCheckpoint
    cosigned: int
    quorum: int
    results: tuple[WitnessResult, ...]

    @property
    def met(self) -> bool:
        return self.cosigned >= self.quorum


class Witnessing:
    """Sends checkpoints to the witnesses of one installation; see the module docstring."""

    def __init__(self, *, witnesses: Sequence[WitnessEndpoint], quorum: int, timeout: float,
                 audit: AuditLog, read: Sessions, transaction: Sessions,
                 clock: Callable[[], datetime],
                 send: Callable[[str, bytes, float], Answer] = post) -> None:
        self.witnesses = tuple(witnesses)
        self.quorum = quorum
        self._timeout = timeout
        self._audit = audit
        self._read = read
        self._transaction = transaction
        self._clock = clock
        self._send = send
        # The size each witness (by vkey) is known to have cosigned last.
        self._sizes: dict[str, int] = {}
        # The newest checkpoint already reported, so a witness that stays down is one
        # alarm per checkpoint, not one per timer tick (stored ids only grow).
        self._reported = 0
        self._round = threading.Lock()

    def cosign_latest(self) -> CosigningRound | None:
        """Ask every witness that has not cosigned the latest checkpoint; report the rest."""
        if not self.witnesses:
            return None
        with self._round:
            with self._read() as session:
                latest = latest_stored(session)
                if latest is None:
                    return None
                done = set(session.scalars(select(cosignature_rows.c.witness).where(
                    cosignature_rows.c.checkpoint_id == latest.id)))
                pending = [w for w in self.witnesses if w.verifier.key_string() not in done]
                starts = {w.verifier.key_string(): self._start(session, w, latest)
                          for w in pending}
            results: tuple[WitnessResult, ...] = ()
            if pending:
                with ThreadPoolExecutor(max_workers=len(pending)) as pool:
                    results = tuple(pool.map(lambda w: self._ask(
                        w, latest, starts[w.verifier.key_string()]), pending))
            self._store(latest, [r for r in results if r.cosignature is not None])
            cosigned = len(done & {w.verifier.key_string() for w in self.witnesses}) + sum(
                1 for r in results if r.cosignature is not None)
            outcome = CosigningRound(latest, cosigned, self.quorum, results)
            self._report(outcome)
            return outcome

    def _start(self, session: Session, witness: WitnessEndpoint,
               latest: StoredCheckpoint) -> int:
        key = witness.verifier.key_string()
        known = self._sizes.get(key)
        if known is None:
            known = session.scalar(select(func.max(cosignature_rows.c.size))
                                   .where(cosignature_rows.c.witness == key)) or 0
        # Larger than the log: the witness will say what it holds (409) and the refusal
        # names both sizes.
        return int(known) if known <= latest.checkpoint.size else 0

    def _ask(self, witness: WitnessEndpoint, latest: StoredCheckpoint,
             old: int) -> WitnessResult:
        size = latest.checkpoint.size
        for _attempt in range(2):
            answer = self._send(witness.url + ADD_CHECKPOINT_PATH,
                                AddCheckpoint(old, self._proof(old, size), latest.note).body(),
                                self._timeout)
            if answer.status != 409:
                return self._answered(witness, latest, old, answer)
            try:
                held = parse_size_body(answer.body)
            except MalformedMessageError as exc:
                return WitnessResult(witness, status=409, problem=str(exc))
            self._sizes[witness.verifier.key_string()] = held
            if held > size:
                return WitnessResult(
                    witness, status=409, contradicts=True, witness_size=held,
                    problem=f"it has cosigned a checkpoint of {held} entries, but this one "
                            f"covers only {size}: the log was truncated or rolled back")
            old = held
        return WitnessResult(witness, status=409, witness_size=old,
                             problem="it answered 409 twice (its state is changing)")

    def _answered(self, witness: WitnessEndpoint, latest: StoredCheckpoint, old: int,
                  answer: Answer) -> WitnessResult:
        if answer.status is None:
            return WitnessResult(witness, problem=answer.problem)
        if answer.status == 422:
            return WitnessResult(
                witness, status=422, contradicts=True, witness_size=old,
                problem=f"it refused the checkpoint of {latest.checkpoint.size} entries as "
                        f"inconsistent with the one of {old} entries it cosigned: the log "
                        "was rewritten or forked")
        if answer.status != 200:
            text = answer.body[:200].decode("utf-8", errors="replace").strip()
            return WitnessResult(witness, status=answer.status, problem=f"HTTP "
                                 f"{answer.status}: {text}")
        try:
            lines = parse_cosignature_lines(answer.body)
            found = cosignatures(with_cosignatures(latest.note, lines), [witness.verifier])
        except (MalformedMessageError, VerificationError) as exc:
            return WitnessResult(witness, status=200, problem=f"invalid answer: {exc}")
        if not found:
            return WitnessResult(witness, status=200,
                                 problem="no cosignature from its key in its answer")
        self._sizes[witness.verifier.key_string()] = latest.checkpoint.size
        return WitnessResult(witness, cosignature=found[0], status=200)

    def _proof(self, old: int, size: int) -> tuple[bytes, ...]:
        if old in (0, size):
            return ()
        with self._read() as session:
            return tuple(self._audit.consistency_proof(session, old, size))

    def _store(self, latest: StoredCheckpoint, results: Sequence[WitnessResult]) -> None:
        if not results:
            return
        now = self._clock()
        rows = [{"checkpoint_id": latest.id, "size": latest.checkpoint.size,
                 "witness": r.witness.verifier.key_string(),
                 "timestamp": r.cosignature.timestamp, "line": r.cosignature.line,
                 "received_at": now} for r in results if r.cosignature is not None]
        with self._transaction() as session:
            session.execute(insert(cosignature_rows), rows)

    def _report(self, outcome: CosigningRound) -> None:
        size = outcome.checkpoint.checkpoint.size
        for result in outcome.results:
            if result.problem and not result.contradicts:
                log.warning("witness %s did not cosign the audit checkpoint of %d entries: %s",
                            result.witness.name, size, result.problem)
        if outcome.checkpoint.id <= self._reported:
            return
        subject = f"checkpoint:{outcome.checkpoint.id}"
        refusals = [r for r in outcome.results if r.contradicts]
        for result in refusals:
            log.error("AUDIT LOG REWRITE: witness %s refused the checkpoint of %d entries: %s",
                      result.witness.name, size, result.problem)
            self._record(AuditTag.AUDIT_WITNESS_REFUSED, f"{subject}:{result.witness.name}", {
                "witness": result.witness.name, "status": result.status, "size": size,
                "witness_size": result.witness_size, "reason": result.problem})
        if not outcome.met:
            missing = [r.witness.name for r in outcome.results if r.cosignature is None]
            log.error("audit checkpoint of %d entries has %d of the %d witness cosignatures "
                      "required; not cosigned by: %s", size, outcome.cosigned, outcome.quorum,
                      ", ".join(missing))
            self._record(AuditTag.AUDIT_WITNESS_QUORUM_MISSED, subject, {
                "size": size, "cosigned": outcome.cosigned, "quorum": outcome.quorum,
                "missing": missing})
        if refusals or not outcome.met:
            self._reported = outcome.checkpoint.id

    def _record(self, tag: AuditTag, subject: str, details: dict[str, object]) -> None:
        """Audit an alarm, unless another process (each service asks the witnesses on its
        own timer) already recorded it for this checkpoint."""
        try:
            with self._transaction() as session:
                recorded = session.scalar(select(entries.c.idx).where(
                    entries.c.tag == tag.value,
                    entries.c.leaf.contains(f'"subject":"{subject}"', autoescape=True)).limit(1))
                if recorded is None:
                    self._audit.record(session, tag=tag, actor=ACTOR, subject=subject,
                                       details=details)
        except GatewayError as exc:
            log.error("could not audit %s: %s", tag, exc.diagnostics())


def latest_stored(session: Session) -> StoredCheckpoint | None:
    """The newest stored checkpoint with its row id."""
    row = session.execute(select(checkpoints.c.id, checkpoints.c.note)
                          .order_by(checkpoints.c.id.desc()).limit(1)).first()
    if row is None:
        return None
    return StoredCheckpoint(int(row.id), Checkpoint.parse(unverified_text(row.note)), row.note)


def cosigned_note(session: Session, note: str) -> str:
    """A stored checkpoint ``note`` with the cosignatures stored for it appended."""
    lines = session.scalars(select(cosignature_rows.c.line)
                            .join(checkpoints, checkpoints.c.id == cosignature_rows.c.checkpoint_id)
                            .where(checkpoints.c.note == note)
                            .order_by(cosignature_rows.c.id)).all()
    return with_cosignatures(note, lines)


def cosigned_notes(session: Session) -> list[tuple[int, str]]:
    """Every checkpoint that carries cosignatures, as ``(size, cosigned note)``."""
    rows = session.execute(select(checkpoints.c.id, checkpoints.c.size, checkpoints.c.note)
                           .where(checkpoints.c.id.in_(
                               select(cosignature_rows.c.checkpoint_id).distinct()))
                           .order_by(checkpoints.c.id)).all()
    return [(int(row.size), cosigned_note(session, row.note)) for row in rows]


def count_cosignatures(session: Session, checkpoint_id: int, witnesses: Sequence[str]) -> int:
    """How many of the ``witnesses`` (vkeys) have a cosignature stored for a checkpoint."""
    return len(set(session.scalars(select(cosignature_rows.c.witness).where(
        cosignature_rows.c.checkpoint_id == checkpoint_id,
        cosignature_rows.c.witness.in_(witnesses)))))


def witnessed_checkpoints(session: Session, witnesses: Sequence[CosignatureVerifier]
                          ) -> list[tuple[str, str]]:
    """For each witness, the largest stored checkpoint it cosigned, as outside checkpoints.

    Verification holds the log to each of them (``label``, cosigned note), so a history
    rewritten after a witness cosigned it fails naming that witness and the size. A
    stored cosignature that does not verify is left out here; the quorum check reports it.
    """
    found: list[tuple[str, str]] = []
    for witness in witnesses:
        rows = session.execute(
            select(checkpoints.c.size, checkpoints.c.note)
            .join(cosignature_rows, cosignature_rows.c.checkpoint_id == checkpoints.c.id)
            .where(cosignature_rows.c.witness == witness.key_string())
            .order_by(checkpoints.c.size.desc(), checkpoints.c.id.desc()).limit(1)).all()
        found.extend((f"checkpoint cosigned by witness {witness.name}",
                      cosigned_note(session, row.note)) for row in rows)
    return found


def fetch_witness_checkpoint(url: str, origin: str, timeout: float) -> str | None:
    """The latest checkpoint a witness cosigned for ``origin`` (its monitoring endpoint),
    or None if it cannot be had."""
    address = f"{url}/{hashlib.sha256(origin.encode()).hexdigest()}/checkpoint"
    try:
        # The URL comes from the settings, whose check allows http and https only.
        with urllib.request.urlopen(address, timeout=timeout) as response:  # noqa: S310
            return bytes(response.read(MAX_RESPONSE_BYTES)).decode("utf-8")
    except (urllib.error.URLError, OSError, http.client.HTTPException, UnicodeDecodeError):
        return None
