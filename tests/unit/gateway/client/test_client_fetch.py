"""fetch's local rules: plain names only, and finishing a download whose last byte
arrived before the program stopped, from the kept plaintext and header, without the
gateway."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway import envelope
from gateway.client.fetch import Fetcher
from gateway.client.fetched import FetchedRecord, RemoteFile
from gateway.client.hashing import Hasher
from gateway.client.names import UnsafeNameError, plain_name
from gateway.client.progress import NoProgress


@pytest.mark.parametrize("name", ["a.csv.age", "résumé 2026.xlsx.age", "x.age.age"])
def test_plain_names(name: str) -> None:
    assert plain_name(name) == name[:-4]


@pytest.mark.parametrize("name", ["a.csv", ".age", "..age", ".hidden.age", "a/b.age",
                                  "..\\b.age", "evil\u202egpj.exe.age", "nul\x00.age"])
def test_names_a_hostile_gateway_might_send_are_refused(name: str) -> None:
    with pytest.raises(UnsafeNameError, match=r"^refusing the file name '.*' from the gateway"):
        plain_name(name)


class NoGateway:
    """Any use of the connection fails the test: this fetch must stay local."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the gateway was asked for {name}")


def _keep(fetcher: Fetcher, entry: RemoteFile, ciphertext: bytes, plaintext: bytes,
          identity: envelope.Identity) -> None:
    """What an interrupted run leaves: the age header and the decrypted plaintext."""
    with envelope.Decryptor(io.BytesIO(ciphertext), [identity]) as decryptor:
        start = decryptor.payload_start
    assert start is not None
    fetcher.partial_path(entry, ".head").write_bytes(ciphertext[:start])
    fetcher.partial_path(entry).write_bytes(plaintext)


def test_a_complete_partial_download_is_finished_locally(tmp_path: Path) -> None:
    identity = envelope.generate_identity(post_quantum=False)
    ciphertext = envelope.encrypt_bytes(b"rows\n" * 1000, [identity.recipient])
    entry = RemoteFile("rows.csv.age", len(ciphertext), hashlib.sha256(ciphertext).hexdigest(),
                       "0b8e-transfer")
    record = FetchedRecord(tmp_path / "state" / "fetched.json", "lee@gw")
    record.mark_begun(entry)
    out = tmp_path / "inbox"
    out.mkdir()
    fetcher = Fetcher(NoGateway(), out_dir=out, identities=[identity],  # type: ignore[arg-type]
                      record=record, progress=NoProgress(), keep_ciphertext=False,
                      overwrite=False)
    _keep(fetcher, entry, ciphertext, b"rows\n" * 1000, identity)
    assert fetcher.complete_locally(entry)
    assert record.begun() == [entry]
    result = fetcher.fetch(entry, now=datetime.now(UTC))
    assert result.ok, result.error
    assert (out / "rows.csv").read_bytes() == b"rows\n" * 1000
    assert [p.name for p in out.iterdir()] == ["rows.csv"]
    assert record.is_fetched(entry)
    assert record.begun() == []


def test_a_partial_that_does_not_hash_right_is_discarded(tmp_path: Path) -> None:
    identity = envelope.generate_identity(post_quantum=False)
    ciphertext = envelope.encrypt_bytes(b"rows\n", [identity.recipient])
    entry = RemoteFile("rows.csv.age", len(ciphertext), "00" * 32, "id-1")
    out = tmp_path / "inbox"
    out.mkdir()
    fetcher = Fetcher(NoGateway(), out_dir=out, identities=[identity],  # type: ignore[arg-type]
                      record=FetchedRecord(tmp_path / "fetched.json", "lee@gw"),
                      progress=NoProgress(), keep_ciphertext=False, overwrite=False)
    _keep(fetcher, entry, ciphertext, b"rows\n", identity)
    result = fetcher.fetch(entry, now=datetime.now(UTC))
    assert not result.ok
    assert "SHA-256 differs" in str(result.error)
    assert list(out.iterdir()) == []


def test_a_partial_file_name_stays_within_name_max(tmp_path: Path) -> None:
    fetcher = Fetcher(NoGateway(), out_dir=tmp_path, identities=[],  # type: ignore[arg-type]
                      record=FetchedRecord(tmp_path / "fetched.json", "lee@gw"),
                      progress=NoProgress(), keep_ciphertext=False, overwrite=False)
    entry = RemoteFile("é" * 125 + ".age", 1, "00" * 32, "7" * 64)
    partial = fetcher.partial_path(entry)
    assert len(partial.name.encode()) <= 255
    assert partial.name.startswith(".éé") and partial.name.endswith("." + "7" * 64 + ".part")
    partial.write_bytes(b"x")


def test_a_kept_plaintext_that_was_changed_is_discarded(tmp_path: Path) -> None:
    identity = envelope.generate_identity(post_quantum=False)
    plaintext = bytes(200_000)
    ciphertext = envelope.encrypt_bytes(plaintext, [identity.recipient])
    entry = RemoteFile("rows.csv.age", len(ciphertext), hashlib.sha256(ciphertext).hexdigest(),
                       "id-2")
    out = tmp_path / "inbox"
    out.mkdir()
    fetcher = Fetcher(NoGateway(), out_dir=out, identities=[identity],  # type: ignore[arg-type]
                      record=FetchedRecord(tmp_path / "fetched.json", "lee@gw"),
                      progress=NoProgress(), keep_ciphertext=True, overwrite=False)
    _keep(fetcher, entry, ciphertext, b"x" + plaintext[1:], identity)
    result = fetcher.fetch(entry, now=datetime.now(UTC))
    assert not result.ok
    assert "SHA-256 differs" in str(result.error)
    assert list(out.iterdir()) == []
    _keep(fetcher, entry, ciphertext, plaintext, identity)
    result = fetcher.fetch(entry, now=datetime.now(UTC))
    assert result.ok, result.error
    assert sorted(p.name for p in out.iterdir()) == ["rows.csv", "rows.csv.age"]
    assert (out / "rows.csv.age").read_bytes() == ciphertext, "sealed again, byte for byte"


@pytest.mark.parametrize("threaded", [True, False])
def test_the_ciphertext_hash_is_the_same_in_a_thread_or_inline(threaded: bool) -> None:
    blocks = [bytes([n]) * 70_000 for n in range(20)]
    hasher = Hasher(hashlib.sha256(b"head"), threaded=threaded)
    for block in blocks:
        hasher.add(memoryview(block))
    assert hasher.finish() == hashlib.sha256(b"head" + b"".join(blocks)).hexdigest()
    hasher.stop()
