"""Signed notes, cosignatures and witness messages against the C2SP specs' own examples
and against the independent implementation in ``independent.py``."""

from __future__ import annotations

import base64
import struct

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.cosignature import (
    CosignatureVerifier,
    Cosigner,
    cosignatures,
    require_quorum,
    with_cosignatures,
)
from gateway.audit.errors import AuditError, VerificationError
from gateway.audit.merkle import MemoryTree, consistency_proof, verify_consistency
from gateway.audit.note import NoteVerifier, open_note
from gateway.witness.protocol import (
    AddCheckpoint,
    MalformedMessageError,
    parse_cosignature_lines,
    parse_size_body,
)
from tests.unit.witness import independent

# c2sp.org/signed-note v1.0.0, "Verifier keys / Example".
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = ("This is an example message.\n\n\u2014 example.com/foo "
             "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1"
             "Yu72IneyaQM=\n")
# c2sp.org/tlog-cosignature v1.0.1: the example cosignature and the time its example
# signed message carries ("time 1679315147").
SPEC_COSIGNATURE = ("jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZ"
                    "qhf5nNo0xUe+mbIUBkBIfZ+qnA==")
SPEC_TIME = 1679315147
# c2sp.org/tlog-witness v1.0.0: the example add-checkpoint request body.
SPEC_REQUEST = """old 20852014
PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=
jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=
5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=
/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=

example.com/behind-the-sofa
20852163
CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=

\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=
\u2014 example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=
"""  # noqa: E501  # The spec's lines, verbatim.
SPEC_RESPONSE = """\u2014 witness.example/w1 CMp+6LWBU0anHGH5aNDTJkH/gj79sG+T6+iP2ThYN5krrDJbR1HDnucjL39QsZTSvVjyQLrdk3DXDqI5G2HgLatVs0pWh6Up69HVOw==
\u2014 witness.example/w1 I7rEps0pvK2UqkS2gSpVUDhrhVtQV9lgF6pRrWAvjJHjyWpW7VcE3SiOlVlbQNt64vWhO+DlkL0+UfzuOBMh9ChdMkP1vi/lCAsmlw==
\u2014 witness.example/w2 AWui8Sk55XjYLOijihBjhqEH6nS1ndDymE0a+6idX7pLcnoB+dhnz0854aLZgrrKbYKA7nC3HNJhm/kWl7oJlqU3rXXvpysAdyP3wQ==
"""  # noqa: E501


def _key() -> tuple[Ed25519PrivateKey, bytes]:
    key = Ed25519PrivateKey.generate()
    return key, key.public_key().public_bytes(serialization.Encoding.Raw,
                                              serialization.PublicFormat.Raw)


def test_signed_note_spec_example_verifies() -> None:
    verifier = NoteVerifier.from_key_string(SPEC_VKEY)
    assert verifier.key_string() == SPEC_VKEY
    assert open_note(SPEC_NOTE, [verifier]) == "This is an example message.\n"
    with pytest.raises(VerificationError):
        open_note(SPEC_NOTE.replace("example.", "exemple."), [verifier])


def test_spec_example_cosignature_layout() -> None:
    blob = base64.b64decode(SPEC_COSIGNATURE)
    assert len(blob) == 4 + 72
    assert struct.unpack(">Q", blob[4:12])[0] == SPEC_TIME


def test_spec_example_request_and_response_parse() -> None:
    request = AddCheckpoint.parse(SPEC_REQUEST.encode())
    assert request.old_size == 20852014
    assert len(request.proof) == 4
    assert request.checkpoint.startswith("example.com/behind-the-sofa\n20852163\n")
    assert request.body() == SPEC_REQUEST.encode()
    assert len(parse_cosignature_lines(SPEC_RESPONSE.encode())) == 3


def test_cosignature_matches_the_independent_implementation() -> None:
    key, public = _key()
    cosigner = Cosigner("witness.example/w1", key)
    text = independent.checkpoint_text("registry.example/log", 5, b"\x07" * 32)
    line = cosigner.cosign(text, timestamp=SPEC_TIME)
    assert cosigner.verifier.key_string() == independent.vkey("witness.example/w1", 4, public)
    assert independent.check_cosignature(text + "\n" + line, "witness.example/w1",
                                         public) == SPEC_TIME
    theirs = independent.cosign(text, "witness.example/w1", key, public, 1700000000)
    found = cosignatures(text + "\n" + theirs, [cosigner.verifier])
    assert [(c.witness, c.timestamp) for c in found] == [("witness.example/w1", 1700000000)]


def test_cosigner_key_is_not_a_note_key() -> None:
    key, public = _key()
    verifier = Cosigner("w.example/1", key).verifier
    assert verifier.key_id != NoteVerifier("w.example/1", public).key_id
    with pytest.raises(AuditError, match="0x04"):
        CosignatureVerifier.from_key_string(NoteVerifier("w.example/1", public).key_string())
    with pytest.raises(AuditError, match="key ID"):
        CosignatureVerifier.from_key_string("x.example/w+00000000+" + verifier.key_string()
                                            .split("+", 2)[2])


def test_quorum_counts_distinct_valid_witnesses() -> None:
    witnesses = [Cosigner(f"w{n}.example/w", _key()[0]) for n in range(3)]
    text = independent.checkpoint_text("registry.example/log", 9, b"\x01" * 32)
    log_key, log_public = _key()
    note = independent.sign_note(text, "registry.example/log", log_key, log_public)
    one = with_cosignatures(note, [witnesses[0].cosign(text, timestamp=5)] * 2)
    verifiers = [w.verifier for w in witnesses]
    with pytest.raises(VerificationError) as caught:
        require_quorum(one, verifiers, 2, label="latest checkpoint")
    assert "1 of the 2" in caught.value.summary
    assert caught.value.problems == ("no valid cosignature from witness w1.example/w",
                                     "no valid cosignature from witness w2.example/w")
    two = with_cosignatures(one, [witnesses[2].cosign(text, timestamp=6)])
    assert len(require_quorum(two, verifiers, 2, label="latest")) == 2
    # A trusted witness's signature over another text poisons the note.
    forged = with_cosignatures(note, [witnesses[1].cosign(text.replace("9", "8"), timestamp=6)])
    with pytest.raises(VerificationError, match="does not verify"):
        cosignatures(forged, verifiers)


@pytest.mark.parametrize(("old", "new"), [(1, 2), (3, 7), (4, 8), (5, 13), (8, 8), (6, 64)])
def test_consistency_proofs_agree_with_rfc6962_definition(old: int, new: int) -> None:
    leaves = [bytes([n]) for n in range(new)]
    tree = MemoryTree(leaves)
    assert consistency_proof(old, new, tree) == independent.consistency(old, leaves)
    verify_consistency(size1=old, size2=new, root1=independent.mth(leaves[:old]),
                       root2=independent.mth(leaves), proof=independent.consistency(old, leaves))


@pytest.mark.parametrize("body", [
    b"", b"old 01\n\nx", b"old 1\nnot base64!\n\nx", b"new 1\n\nx", b"old 1\n",
    b"old 1\n" + base64.b64encode(b"short") + b"\n\nx",
    b"old 0\n" + b"".join(base64.b64encode(bytes(32)) + b"\n" for _ in range(64)) + b"\nx",
    b"old 1\n\n\xff"])
def test_malformed_requests_are_refused(body: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        AddCheckpoint.parse(body)


def test_conflict_body() -> None:
    assert parse_size_body(b"20852014\n") == 20852014
    for bad in (b"12", b"012\n", b"-1\n"):
        with pytest.raises(MalformedMessageError):
            parse_size_body(bad)
