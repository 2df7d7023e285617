"""A tlog-witness: cosign a log's checkpoint only if it extends what was cosigned before.

:meth:`Witness.add_checkpoint` applies the checks of c2sp.org/tlog-witness v1.0.0 in the
order the spec gives them, each refusal a :class:`WitnessRefusalError` carrying the HTTP
status: 400 malformed (or an old size past the checkpoint), 404 unknown origin, 403 no
valid signature from a trusted key (or a trusted key's signature that fails), 409 the old
size is not the size last cosigned (the body says which), 422 the consistency proof
fails. Two clarifications made after v1.0.0 (C2SP #280) are followed because they close
gaps rather than change the protocol: a checkpoint of the size already cosigned but with
another root is a 422 (a fork, not a retry), and so is a size-zero checkpoint whose root
is not the empty tree's.

A checkpoint from a trusted log that fails a consistency check is evidence of the log
misbehaving; it is kept under ``evidence/`` in the state directory (up to a bound).
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from gateway.audit.cosignature import Cosigner
from gateway.audit.errors import VerificationError
from gateway.audit.merkle import EMPTY_ROOT, verify_consistency
from gateway.audit.note import SIGNATURE_PREFIX, Checkpoint, NoteVerifier, split_note
from gateway.errors import GatewayError
from gateway.witness.protocol import (
    SIZE_CONTENT_TYPE,
    AddCheckpoint,
    MalformedMessageError,
    format_size,
)
from gateway.witness.state import WitnessState, origin_hash

log = logging.getLogger(__name__)
MAX_EVIDENCE_FILES = 1000


class WitnessRefusalError(GatewayError):
    """The witness will not cosign: an HTTP status, a message and the response body."""

    def __init__(self, status: int, message: str, *, body: bytes | None = None,
                 content_type: str = "text/plain; charset=utf-8") -> None:
        super().__init__(message)
        self.status = status
        self.body = body if body is not None else (message + "\n").encode()
        self.content_type = content_type


class Witness:
    """The witness behind the HTTP interface: its key, trusted logs and state."""

    def __init__(self, *, cosigner: Cosigner, logs: Mapping[str, Sequence[NoteVerifier]],
                 state: WitnessState, clock: Callable[[], float] = time.time) -> None:
        self._cosigner = cosigner
        self._logs = {origin: tuple(keys) for origin, keys in logs.items()}
        self._state = state
        self._clock = clock

    @property
    def name(self) -> str:
        return self._cosigner.name

    def add_checkpoint(self, body: bytes) -> list[str]:
        """Check and cosign a request body; return the cosignature lines to send."""
        try:
            request = AddCheckpoint.parse(body)
            text, signatures = split_note(request.checkpoint)
            checkpoint = Checkpoint.parse(text)
        except (MalformedMessageError, VerificationError) as exc:
            raise WitnessRefusalError(400, f"malformed request: {exc}") from exc
        trusted = self._logs.get(checkpoint.origin)
        if trusted is None:
            raise WitnessRefusalError(404, f"unknown log origin {checkpoint.origin[:100]!r}")
        log_lines = _verified_signatures(text, signatures, trusted)
        if request.old_size > checkpoint.size:
            raise WitnessRefusalError(400, f"old size {request.old_size} is larger than the "
                                 f"checkpoint size {checkpoint.size}")

        def decide(current: Checkpoint | None) -> tuple[str, list[str]]:
            self._check_consistency(request, checkpoint, current)
            line = self._cosigner.cosign(text, timestamp=int(self._clock()))
            return text + "\n" + "".join(log_lines) + line, [line]

        try:
            return self._state.update(checkpoint.origin, decide)
        except WitnessRefusalError as refusal:
            log.warning("refused checkpoint of %s: old size %d, size %d: %d %s",
                        checkpoint.origin, request.old_size, checkpoint.size, refusal.status,
                        refusal)
            if refusal.status == 422:
                self._keep_evidence(checkpoint.origin, body)
            raise

    def latest(self, hashed_origin: str) -> str | None:
        """The latest cosigned checkpoint of the log whose origin hashes to ``hashed_origin``."""
        for origin in self._logs:
            if origin_hash(origin) == hashed_origin:
                return self._state.latest(origin)
        return None

    def _check_consistency(self, request: AddCheckpoint, checkpoint: Checkpoint,
                           current: Checkpoint | None) -> None:
        latest = current.size if current is not None else 0
        if request.old_size != latest:
            raise WitnessRefusalError(409, f"the latest cosigned size is {latest}",
                                 body=format_size(latest), content_type=SIZE_CONTENT_TYPE)
        if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT:
            raise WitnessRefusalError(422, "a checkpoint of size 0 must have the empty tree's root")
        if request.old_size == 0:
            if request.proof:
                raise WitnessRefusalError(422, "the proof must be empty when the old size is 0")
            return
        assert current is not None
        try:
            verify_consistency(size1=current.size, size2=checkpoint.size, root1=current.root,
                               root2=checkpoint.root, proof=request.proof)
        except VerificationError as exc:
            raise WitnessRefusalError(422, f"not consistent with the cosigned checkpoint of size "
                                 f"{current.size}: {exc}") from exc

    def _keep_evidence(self, origin: str, body: bytes) -> None:
        directory = self._state.directory / "evidence"
        try:
            directory.mkdir(mode=0o700, exist_ok=True)
            if sum(1 for _ in directory.iterdir()) >= MAX_EVIDENCE_FILES:
                return
            path = directory / f"{origin_hash(origin)}-{time.time_ns()}.txt"
            _write_new(path, body)
        except OSError as exc:
            log.warning("could not keep the refused checkpoint as evidence: %s", exc)


def _verified_signatures(text: str, signatures: Sequence[tuple[str, bytes]],
                         trusted: Sequence[NoteVerifier]) -> list[str]:
    """The signature lines of trusted log keys, all verified; 403 if there is none or one
    fails (the signed-note spec makes such a note invalid)."""
    known = {(key.name, key.key_id): key for key in trusted}
    lines: list[str] = []
    for name, signature in signatures:
        key = known.get((name, signature[:4]))
        if key is None:
            continue
        if not key.verifies(text.encode(), signature[4:]):
            raise WitnessRefusalError(403, f"the signature of {name} does not verify")
        lines.append(_signature_line(name, signature))
    if not lines:
        raise WitnessRefusalError(403, "no signature from a key trusted for this origin")
    return lines


def _signature_line(name: str, signature: bytes) -> str:
    return f"{SIGNATURE_PREFIX}{name} {base64.b64encode(signature).decode()}\n"


def _write_new(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
