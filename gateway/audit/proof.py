"""C2SP tlog-proof text: an offline-verifiable proof that an entry is in the log.

The ``extra`` line carries the entry itself (its canonical JSON leaf), so a proof is
self-contained: whoever holds it and the log's verifier key can check it alone.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.audit.cosignature import CosignatureVerifier, require_quorum
from gateway.audit.errors import VerificationError
from gateway.audit.merkle import leaf_hash, verify_inclusion
from gateway.audit.note import Checkpoint, NoteVerifier, decode_base64, open_checkpoint

PROOF_HEADER = "c2sp.org/tlog-proof@v1"


@dataclass(frozen=True)
class TlogProof:
    """The parts of a tlog-proof: optional extra data, index, audit path, checkpoint."""

    index: int
    path: tuple[bytes, ...]
    checkpoint_note: str
    extra: bytes | None = None

    def text(self) -> str:
        """Return the proof in the tlog-proof text format."""
        lines = [PROOF_HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode())
        lines.append(f"index {self.index}")
        lines.extend(base64.b64encode(hashed).decode() for hashed in self.path)
        return "\n".join(lines) + "\n\n" + self.checkpoint_note

    @classmethod
    def parse(cls, text: str) -> TlogProof:
        """Parse tlog-proof text; raise :class:`VerificationError` on any deviation."""
        head, sep, note = text.partition("\n\n")
        lines = head.split("\n")
        if not sep or lines[0] != PROOF_HEADER:
            raise VerificationError(f"tlog-proof: expected a {PROOF_HEADER} header")
        extra = None
        if len(lines) > 1 and lines[1].startswith("extra "):
            extra = decode_base64(lines.pop(1).removeprefix("extra "), "tlog-proof extra")
        if len(lines) < 2 or not lines[1].startswith("index "):
            raise VerificationError("tlog-proof: missing index line")
        index_text = lines[1].removeprefix("index ")
        if not index_text.isascii() or not index_text.isdigit() or (
                index_text.startswith("0") and index_text != "0"):
            raise VerificationError(f"tlog-proof: invalid index {index_text!r}")
        path = tuple(decode_base64(line, "tlog-proof hash") for line in lines[2:])
        return cls(int(index_text), path, note, extra)


def verify_tlog_proof(text: str, verifier: NoteVerifier, *,
                      leaf: bytes | None = None,
                      witnesses: Sequence[CosignatureVerifier] = (),
                      quorum: int = 0) -> tuple[Checkpoint, bytes]:
    """Check a tlog-proof against the log's key; return its checkpoint and the leaf.

    The leaf is ``leaf`` when given (the caller holds the entry), else the proof's
    extra data. With ``witnesses``, the checkpoint must carry ``quorum`` valid
    cosignatures from them (the tlog-proof spec's k-of-n policy). Raises
    :class:`VerificationError` if anything fails.
    """
    proof = TlogProof.parse(text)
    checkpoint = open_checkpoint(proof.checkpoint_note, verifier)
    if witnesses:
        require_quorum(proof.checkpoint_note, witnesses, quorum,
                       label=f"the proof's checkpoint ({checkpoint.size} entries)")
    entry = leaf if leaf is not None else proof.extra
    if entry is None:
        raise VerificationError("tlog-proof: no entry given and no extra data to check")
    verify_inclusion(index=proof.index, size=checkpoint.size, hashed_leaf=leaf_hash(entry),
                     proof=proof.path, root=checkpoint.root)
    return checkpoint, entry
