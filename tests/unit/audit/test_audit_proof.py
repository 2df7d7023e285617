"""tlog-proof text: layout, round trip and rejection of every altered part."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from gateway.audit import NoteSigner, VerificationError, merkle, verify_tlog_proof
from gateway.audit.note import Checkpoint
from gateway.audit.proof import PROOF_HEADER, TlogProof
from tests.unit.audit.audit_support import ORIGIN, make_signer

LEAVES = [b'{"n":%d}' % number for number in range(11)]


def proof_for(signer: NoteSigner, index: int) -> str:
    tree = merkle.MemoryTree(LEAVES)
    note = signer.sign(Checkpoint(ORIGIN, tree.size, merkle.root_hash(tree.size, tree)).text())
    path = merkle.inclusion_proof(index, tree.size, tree)
    return TlogProof(index, tuple(path), note, LEAVES[index]).text()


def test_layout_follows_the_spec(signer: NoteSigner) -> None:
    text = proof_for(signer, 6)
    lines = text.split("\n")
    assert lines[0] == PROOF_HEADER
    assert lines[1] == "extra " + base64.b64encode(LEAVES[6]).decode()
    assert lines[2] == "index 6"
    assert lines[3:7] == [base64.b64encode(hashed).decode() for hashed in
                          merkle.inclusion_proof(6, 11, merkle.MemoryTree(LEAVES))]
    assert lines[7] == "" and lines[8] == ORIGIN


@pytest.mark.parametrize("index", range(11))
def test_every_proof_verifies(signer: NoteSigner, index: int) -> None:
    checkpoint, leaf = verify_tlog_proof(proof_for(signer, index), signer.verifier)
    assert (checkpoint.size, leaf) == (11, LEAVES[index])


def test_parse_round_trip_without_extra(signer: NoteSigner) -> None:
    parsed = TlogProof.parse(proof_for(signer, 3))
    bare = TlogProof(parsed.index, parsed.path, parsed.checkpoint_note)
    assert TlogProof.parse(bare.text()) == bare
    with pytest.raises(VerificationError, match="no entry"):
        verify_tlog_proof(bare.text(), signer.verifier)
    verify_tlog_proof(bare.text(), signer.verifier, leaf=LEAVES[3])


@pytest.mark.parametrize("change", [
    lambda text: text.replace("index 4", "index 5"),
    lambda text: text.replace("extra " + base64.b64encode(LEAVES[4]).decode(),
                              "extra " + base64.b64encode(LEAVES[5]).decode()),
    lambda text: text.replace(PROOF_HEADER, "c2sp.org/tlog-proof@v2"),
    lambda text: text.replace("index 4\n", "index 4\n" + "A" * 43 + "=\n"),
    lambda text: text.replace("index 4", "index 04"),
    lambda text: text.replace("\n11\n", "\n12\n"),
])
def test_altered_proofs_are_rejected(signer: NoteSigner, change) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(VerificationError):
        verify_tlog_proof(change(proof_for(signer, 4)), signer.verifier)


def test_proof_from_another_key_is_rejected(signer: NoteSigner, tmp_path: Path) -> None:
    other = make_signer(tmp_path / "other")
    with pytest.raises(VerificationError, match="trusted key"):
        verify_tlog_proof(proof_for(other, 2), signer.verifier)
