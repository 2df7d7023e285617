"""Signed notes, checkpoints, verifier keys and the signing key file."""

from __future__ import annotations

import base64
import hashlib
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.audit import AuditError, NoteSigner, NoteVerifier, VerificationError
from gateway.audit.note import (
    Checkpoint,
    generate_signing_key_file,
    load_signer,
    open_checkpoint,
    open_note,
)
from tests.unit.audit.audit_support import ORIGIN, make_signer


def test_key_id_and_verifier_key_follow_the_signed_note_spec(signer: NoteSigner) -> None:
    public = signer.verifier.public_key
    expected_id = hashlib.sha256(ORIGIN.encode() + b"\n\x01" + public).digest()[:4]
    name, key_hash, encoded = signer.verifier.key_string().split("+", 2)
    assert (name, key_hash) == (ORIGIN, expected_id.hex())
    assert base64.b64decode(encoded) == b"\x01" + public
    assert NoteVerifier.from_key_string(signer.verifier.key_string()) == signer.verifier


def test_signed_note_layout(signer: NoteSigner) -> None:
    note = signer.sign("hello\nworld\n")
    text, _, signature_line = note.partition("\n\n")
    assert text == "hello\nworld"
    assert signature_line.startswith(f"\u2014 {ORIGIN} ") and signature_line.endswith("\n")
    signature = base64.b64decode(signature_line.split(" ")[2])
    assert signature[:4] == signer.verifier.key_id and len(signature) == 68
    assert open_note(note, [signer.verifier]) == "hello\nworld\n"


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FFF), max_size=60))
def test_round_trip_of_any_text(body: str) -> None:
    signer = NoteSigner(ORIGIN, _fresh_key())
    assert open_note(signer.sign(body + "\n"), [signer.verifier]) == body + "\n"


def _fresh_key():  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def test_modified_text_is_rejected(signer: NoteSigner) -> None:
    note = signer.sign("origin\n5\n" + "A" * 44 + "\n")
    with pytest.raises(VerificationError, match="does not verify"):
        open_note(note.replace("\n5\n", "\n6\n"), [signer.verifier])


def test_another_key_with_the_same_name_is_unknown(signer: NoteSigner, tmp_path: Path) -> None:
    impostor = make_signer(tmp_path / "other")
    with pytest.raises(VerificationError, match="no signature from a trusted key"):
        open_note(impostor.sign("text\n"), [signer.verifier])


def test_unknown_cosignatures_are_ignored(signer: NoteSigner, tmp_path: Path) -> None:
    witness = make_signer(tmp_path / "witness", name="witness.example")
    note = signer.sign("text\n")
    cosigned = note + witness.sign("text\n").partition("\n\n")[2]
    assert open_note(cosigned, [signer.verifier]) == "text\n"
    assert open_note(cosigned, [witness.verifier]) == "text\n"


@pytest.mark.parametrize("note", [
    "no signatures\n",
    "text\n\n\u2014 name\n",
    "text\n\n- name AAAA\n",
    "text\n\n\u2014 name !!!!\n",
    "text\n\n\u2014 name AAAA",
    "te\x01xt\n\n\u2014 name AAAA\n",
])
def test_malformed_notes_are_rejected(note: str, signer: NoteSigner) -> None:
    with pytest.raises(VerificationError):
        open_note(note, [signer.verifier])


def test_checkpoint_round_trip(signer: NoteSigner) -> None:
    body = Checkpoint(ORIGIN, 20852163, bytes(range(32)))
    assert body.text() == (f"{ORIGIN}\n20852163\n"
                           f"{base64.b64encode(bytes(range(32))).decode()}\n")
    assert open_checkpoint(signer.sign(body.text()), signer.verifier) == body


@pytest.mark.parametrize("text", [
    "origin\n01\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    "origin\n-1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    "origin\n1\nAAAA\n",
    "origin\n1\n",
    "origin\n\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
])
def test_malformed_checkpoints_are_rejected(text: str) -> None:
    with pytest.raises(VerificationError):
        Checkpoint.parse(text)


def test_checkpoint_of_another_origin_is_rejected(tmp_path: Path) -> None:
    other = make_signer(tmp_path, name="other.example/log")
    note = other.sign(Checkpoint(ORIGIN, 1, bytes(32)).text())
    with pytest.raises(VerificationError, match="origin"):
        open_checkpoint(note, other.verifier)


@pytest.mark.parametrize("key", ["name+abcd+AAAA", "name+00000000+" + "A" * 44,
                                 "a b+00000000+AQ==", "only-name"])
def test_malformed_verifier_keys_are_rejected(key: str) -> None:
    with pytest.raises(AuditError):
        NoteVerifier.from_key_string(key)


def test_key_file_is_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "audit_ed25519"
    generate_signing_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    with pytest.raises(AuditError, match="never overwritten"):
        generate_signing_key_file(path)
    assert path.read_bytes() == before


def test_a_readable_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit_ed25519"
    generate_signing_key_file(path)
    path.chmod(0o644)
    with pytest.raises(AuditError, match="chmod 600"):
        load_signer(path, name=ORIGIN)


def test_missing_or_bad_key_file(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="blindpost init"):
        load_signer(tmp_path / "absent", name=ORIGIN)
    bad = tmp_path / "bad"
    bad.write_bytes(b"not a key")
    bad.chmod(0o600)
    with pytest.raises(AuditError, match="not a PEM"):
        load_signer(bad, name=ORIGIN)


@given(st.binary(min_size=32, max_size=32))
def test_verifier_keys_round_trip_whatever_their_base64(seed: bytes) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    verifier = NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(seed)).verifier
    assert NoteVerifier.from_key_string(verifier.key_string()) == verifier
