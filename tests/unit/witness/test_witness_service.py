"""The witness's add-checkpoint rules, status by status, driven with the independent
implementation's requests; its state across restarts and concurrent submissions."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.cosignature import Cosigner
from gateway.audit.note import NoteVerifier
from gateway.errors import ConfigError
from gateway.witness.service import Witness, WitnessRefusalError
from gateway.witness.state import WitnessState, origin_hash
from gateway.witness.trust import load_config
from tests.unit.witness import independent

ORIGIN = "registry.example/blindpost"


class Log:
    """A log as the independent implementation builds it: leaves and a signing key."""

    def __init__(self, leaves: int = 0, origin: str = ORIGIN) -> None:
        self.origin = origin
        self.key = Ed25519PrivateKey.generate()
        self.public = self.key.public_key().public_bytes(serialization.Encoding.Raw,
                                                         serialization.PublicFormat.Raw)
        self.leaves = [f"entry {n}".encode() for n in range(leaves)]

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.origin, self.public)

    def note(self, size: int | None = None, *, leaves: list[bytes] | None = None) -> str:
        chosen = (leaves if leaves is not None else self.leaves)[:size]
        text = independent.checkpoint_text(self.origin, len(chosen), independent.mth(chosen))
        return independent.sign_note(text, self.origin, self.key, self.public)

    def request(self, old: int, size: int | None = None) -> bytes:
        new = len(self.leaves) if size is None else size
        proof = independent.consistency(old, self.leaves[:new]) if 0 < old <= new else []
        return independent.request(old, proof, self.note(new))


@pytest.fixture
def log() -> Log:
    return Log(20)


def _witness(tmp_path: Path, log: Log, name: str = "witness.example/w1") -> Witness:
    cosigner = Cosigner(name, Ed25519PrivateKey.from_private_bytes(bytes(32)))
    return Witness(cosigner=cosigner, logs={log.origin: [log.verifier]},
                   state=WitnessState(tmp_path / "state"), clock=lambda: 1_800_000_000.0)


def _refusal(witness: Witness, body: bytes) -> WitnessRefusalError:
    with pytest.raises(WitnessRefusalError) as caught:
        witness.add_checkpoint(body)
    return caught.value


def test_cosigns_a_growing_log(tmp_path: Path, log: Log) -> None:
    witness = _witness(tmp_path, log)
    lines = witness.add_checkpoint(log.request(0, 5))
    public = bytes.fromhex("3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29")
    assert independent.check_cosignature(log.note(5) + "".join(lines), "witness.example/w1",
                                         public) == 1_800_000_000
    witness.add_checkpoint(log.request(5, 12))
    witness.add_checkpoint(log.request(12, 12))  # The same checkpoint again.
    stored = witness.latest(origin_hash(ORIGIN))
    assert stored is not None and stored.startswith(log.note(12).split("\n\n")[0])
    assert stored.count("\u2014 ") == 2  # The log's signature and the witness's.


def test_refusals_carry_the_spec_statuses(tmp_path: Path, log: Log) -> None:
    witness = _witness(tmp_path, log)
    witness.add_checkpoint(log.request(0, 8))
    conflict = _refusal(witness, log.request(4, 12))
    assert (conflict.status, conflict.body, conflict.content_type) == (
        409, b"8\n", "text/x.tlog.size")
    assert _refusal(witness, log.request(0, 12)).body == b"8\n"
    assert _refusal(witness, log.request(13, 12)).status == 400
    assert _refusal(witness, b"old 8\nnonsense").status == 400
    stranger = Log(20, origin="elsewhere.example/log")
    assert _refusal(witness, stranger.request(0, 3)).status == 404
    impostor = Log(20)  # Same origin, a key the witness does not trust.
    assert _refusal(witness, impostor.request(8, 12)).status == 403
    tampered = log.request(8, 12).replace(b"\n12\n", b"\n13\n")
    assert _refusal(witness, tampered).status == 403
    # A proof that does not lead from the cosigned root, and a fork of the same size.
    forked = [b"forged", *log.leaves[1:]]
    fork_proof = independent.consistency(8, forked[:12])
    assert _refusal(witness, independent.request(8, fork_proof,
                                                 log.note(12, leaves=forked))).status == 422
    assert _refusal(witness, independent.request(8, [], log.note(8, leaves=forked))).status == 422
    assert (tmp_path / "state" / "evidence").is_dir()
    witness.add_checkpoint(log.request(8, 12))  # The real history still goes through.


def test_size_zero_rules(tmp_path: Path, log: Log) -> None:
    witness = _witness(tmp_path, log)
    empty = independent.sign_note(independent.checkpoint_text(ORIGIN, 0, bytes(32)),
                                  ORIGIN, log.key, log.public)
    assert _refusal(witness, independent.request(0, [], empty)).status == 422
    assert _refusal(witness, independent.request(0, [bytes(32)], log.note(3))).status == 422
    witness.add_checkpoint(log.request(0, 0))
    witness.add_checkpoint(log.request(0, 3))


def test_state_survives_a_restart_and_never_goes_back(tmp_path: Path, log: Log) -> None:
    _witness(tmp_path, log).add_checkpoint(log.request(0, 10))
    restarted = _witness(tmp_path, log)
    assert _refusal(restarted, log.request(0, 5)).body == b"10\n"
    restarted.add_checkpoint(log.request(10, 15))
    assert _refusal(_witness(tmp_path, log), log.request(10, 16)).body == b"15\n"
    assert [p.name for p in (tmp_path / "state").iterdir() if p.suffix == ".tmp"] == []


def test_concurrent_submissions_one_wins_without_rollback(tmp_path: Path, log: Log) -> None:
    witness = _witness(tmp_path, log)
    witness.add_checkpoint(log.request(0, 5))
    bodies = [log.request(5, size) for size in (9, 20)] * 4
    statuses: list[int] = []
    barrier = threading.Barrier(len(bodies))

    def submit(body: bytes) -> None:
        barrier.wait()
        try:
            witness.add_checkpoint(body)
            statuses.append(200)
        except WitnessRefusalError as refusal:
            statuses.append(refusal.status)

    threads = [threading.Thread(target=submit, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [409] * (len(bodies) - 1)
    latest = _refusal(witness, log.request(0, 1)).body
    assert latest in (b"9\n", b"20\n")
    if latest == b"9\n":
        witness.add_checkpoint(log.request(9, 20))
    assert _refusal(witness, log.request(5, 9)).body == b"20\n"


def test_config_file(tmp_path: Path, log: Log) -> None:
    config = tmp_path / "witness.toml"
    config.write_text(f'name = "witness.example/w1"\nkey_file = "w.key"\n'
                      f'[[log]]\nvkey = "{log.verifier.key_string()}"\n')
    loaded = load_config(config)
    assert loaded.logs == {ORIGIN: (log.verifier,)}
    assert loaded.key_file == tmp_path / "w.key"
    config.write_text('name = "witness.example/w1"\nkey_file = "w.key"\n'
                      '[[log]]\nvkey = "nope"\n')
    with pytest.raises(ConfigError, match=r"\[\[log\]\] number 1: verifier key"):
        load_config(config)
    config.write_text('name = "w"\nkey_file = "k"\ncolour = "blue"\n')
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(config)
