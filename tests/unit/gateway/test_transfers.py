"""Uploads, downloads and inboxes through the services (the SFTP adapter sits on these)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import lzma
import os
from datetime import timedelta

import pytest

from gateway import envelope
from gateway.app import App
from gateway.db.models import Role
from gateway.envelope.armor import ArmorWriter
from gateway.errors import NotFoundError, PolicyError, UsageError
from gateway.transfers import check_file_name
from tests.conftest import FakeClock
from tests.unit.gateway.factories import OPERATOR, account, actor, audit_events, partner_with_key


@pytest.fixture
def setup(app: App) -> envelope.Identity:
    identity = partner_with_key(app, "uni")
    account(app, "clerk", Role.STAFF)
    account(app, "lee", Role.PARTNER, partner="uni")
    return identity


def _upload(app: App, name: str, data: bytes, *, partner: str = "uni",
            chunk: int = 10_000) -> None:
    upload = app.transfers.begin_upload(actor(app, "clerk"), partner=partner, name=name)
    for start in range(0, len(data), chunk):
        upload.write(data[start:start + chunk])
    upload.commit()


def _download(app: App, name: str, username: str = "lee") -> bytes:
    download = app.transfers.open_download(actor(app, username), name)
    data = b"".join(download.read_at(off, 32768) for off in range(0, download.size, 32768))
    download.close()
    return data


def _store_files(app: App) -> list[bytes]:
    return [p.read_bytes() for p in (app.settings.store_dir / "objects").rglob("*") if p.is_file()]


def test_plaintext_upload_is_stored_encrypted(app: App, setup: envelope.Identity) -> None:
    plaintext = os.urandom(200_000) + b"PATIENT-ID-12345"
    _upload(app, "extract.csv", plaintext)
    stored = _store_files(app)
    assert len(stored) == 1
    assert b"PATIENT-ID-12345" not in stored[0]
    assert stored[0].startswith(b"age-encryption.org/v1\n-> mlkem768x25519 ")
    assert [f.name for f in app.transfers.inbox(actor(app, "lee"))] == ["extract.csv.age"]
    assert envelope.decrypt_bytes(_download(app, "extract.csv.age"), [setup]) == plaintext
    complete = audit_events(app, "file:upload:complete")[-1]["details"]
    assert complete["size"] == len(stored[0])
    assert len(complete["sha256"]) == 64
    assert list((app.settings.store_dir / "partial").iterdir()) == []


def test_pre_encrypted_upload_is_stored_as_is(app: App, setup: envelope.Identity) -> None:
    ciphertext = envelope.encrypt_bytes(b"already sealed", [setup.recipient])
    _upload(app, "sealed.csv.age", ciphertext, chunk=7)
    assert _store_files(app) == [ciphertext]
    assert _download(app, "sealed.csv.age") == ciphertext


def test_age_name_with_non_age_content_is_refused(app: App, setup: envelope.Identity) -> None:
    with pytest.raises(UsageError, match="must be an age-encrypted file"):
        _upload(app, "fake.age", b"name,dob\nalice,2001-01-01\n")
    assert _store_files(app) == []
    assert list((app.settings.store_dir / "partial").iterdir()) == []
    assert audit_events(app, "file:upload:aborted")


def test_truncated_age_header_is_refused(app: App, setup: envelope.Identity) -> None:
    ciphertext = envelope.encrypt_bytes(b"x", [setup.recipient])
    with pytest.raises(UsageError):
        _upload(app, "cut.age", ciphertext[:40])
    assert _store_files(app) == []


def test_partner_without_key_refuses_uploads(app: App, setup: envelope.Identity) -> None:
    app.partners.add(OPERATOR, slug="nokeys")
    with pytest.raises(PolicyError, match="no approved encryption key"):
        app.transfers.begin_upload(actor(app, "clerk"), partner="nokeys", name="a.csv")


def test_abort_leaves_nothing(app: App, setup: envelope.Identity) -> None:
    upload = app.transfers.begin_upload(actor(app, "clerk"), partner="uni", name="a.csv")
    upload.write(b"x" * 100_000)
    upload.abort(reason="client disconnected")
    assert _store_files(app) == []
    assert list((app.settings.store_dir / "partial").iterdir()) == []
    assert app.transfers.inbox(actor(app, "lee")) == []
    assert audit_events(app, "file:upload:aborted")[-1]["details"]["received"] == 100_000


def test_size_limit(app: App, setup: envelope.Identity) -> None:
    app.settings = dataclasses.replace(app.settings, max_upload_mib=1)
    with pytest.raises(PolicyError, match="maximum upload size"):
        _upload(app, "big.csv", b"x" * ((1 << 20) + 1), chunk=1 << 18)
    assert _store_files(app) == []


def test_reupload_supersedes_and_deletes_old_ciphertext(app: App,
                                                       setup: envelope.Identity) -> None:
    _upload(app, "a.csv", b"first")
    _upload(app, "a.csv", b"second")
    assert len(_store_files(app)) == 1
    assert envelope.decrypt_bytes(_download(app, "a.csv.age"), [setup]) == b"second"
    assert audit_events(app, "file:supersede")


def test_download_is_counted_and_limited(app: App) -> None:
    partner_with_key(app, "lim", max_downloads=1)
    account(app, "clerk", Role.STAFF)
    account(app, "ann", Role.PARTNER, partner="lim")
    _upload(app, "once.csv", b"one time", partner="lim")
    _download(app, "once.csv.age", "ann")
    assert audit_events(app, "file:download:complete")[-1]["details"]["bytes"] > 0
    assert app.transfers.inbox(actor(app, "ann")) == []
    with pytest.raises(NotFoundError):
        app.transfers.open_download(actor(app, "ann"), "once.csv.age")


def test_partial_read_is_not_a_download(app: App, setup: envelope.Identity) -> None:
    _upload(app, "a.csv", os.urandom(100_000))
    download = app.transfers.open_download(actor(app, "lee"), "a.csv.age")
    download.read_at(0, 1000)
    assert download.close() is False
    assert audit_events(app, "file:download:complete") == []


def test_expired_files_are_hidden(app: App, clock: FakeClock, setup: envelope.Identity) -> None:
    _upload(app, "a.csv", b"data")
    clock.advance(days=7, seconds=1)
    assert app.transfers.inbox(actor(app, "lee")) == []


def test_partners_see_only_their_inbox(app: App, setup: envelope.Identity) -> None:
    partner_with_key(app, "other")
    account(app, "mia", Role.PARTNER, partner="other")
    _upload(app, "for-uni.csv", b"data")
    assert app.transfers.inbox(actor(app, "mia")) == []
    with pytest.raises(NotFoundError):
        app.transfers.open_download(actor(app, "mia"), "for-uni.csv.age")
    with pytest.raises(PolicyError):
        app.transfers.inbox(actor(app, "mia"), "uni")


def test_staff_cannot_read_contents(app: App, setup: envelope.Identity) -> None:
    _upload(app, "a.csv", b"data")
    assert [f.name for f in app.transfers.inbox(actor(app, "clerk"), "uni")] == ["a.csv.age"]
    with pytest.raises(PolicyError):
        app.transfers.open_download(actor(app, "clerk"), "a.csv.age")


def test_withdraw_deletes_ciphertext(app: App, setup: envelope.Identity) -> None:
    _upload(app, "a.csv", b"data")
    app.transfers.withdraw(actor(app, "lee"), "a.csv.age")
    assert _store_files(app) == []
    assert app.transfers.inbox(actor(app, "lee")) == []
    assert audit_events(app, "file:withdraw")


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "a/b", "a\\b", "nul\x00byte",
                                  "tab\tname", "x" * 252, "report\u202evsc.exe",
                                  "zero\u200bwidth", "lone\udc80surrogate"])
def test_bad_file_names(name: str) -> None:
    with pytest.raises(UsageError):
        check_file_name(name)


def test_armored_pre_encrypted_upload(app: App, setup: envelope.Identity) -> None:
    sink = io.BytesIO()
    with envelope.Encryptor(sink, [setup.recipient], armor=True) as enc:
        enc.write(b"armored body")
    _upload(app, "armored.age", sink.getvalue(), chunk=100)
    assert _store_files(app) == [sink.getvalue()]


def test_partner_disabled_during_upload(app: App, setup: envelope.Identity) -> None:
    upload = app.transfers.begin_upload(actor(app, "clerk"), partner="uni", name="a.csv")
    upload.write(b"data")
    app.partners.disable(OPERATOR, slug="uni")
    with pytest.raises(PolicyError, match="disabled"):
        upload.commit()
    assert _store_files(app) == []
    assert audit_events(app, "file:upload:aborted")[-1]["details"]["reason"].endswith("disabled")


def test_lowered_global_ceiling_caps_existing_partners(app: App, clock: FakeClock,
                                                       setup: envelope.Identity) -> None:
    app.settings = dataclasses.replace(app.settings, default_retention="2d",
                                       max_retention="2d")
    _upload(app, "a.csv", b"data")
    entry = app.transfers.inbox(actor(app, "lee"))[0]
    assert entry.expires_at - entry.created_at == timedelta(days=2)


def test_limit_holds_for_parallel_downloads(app: App) -> None:
    """With a limit of one, a second open while the first read runs is refused."""
    partner_with_key(app, "lim", max_downloads=1)
    account(app, "clerk", Role.STAFF)
    account(app, "ann", Role.PARTNER, partner="lim")
    _upload(app, "once.csv", b"one time", partner="lim")
    first = app.transfers.open_download(actor(app, "ann"), "once.csv.age")
    with pytest.raises(NotFoundError):
        app.transfers.open_download(actor(app, "ann"), "once.csv.age")
    first.read_at(0, first.size)
    assert first.close() is True
    assert len(audit_events(app, "file:download:complete")) == 1


def test_incomplete_read_gives_the_download_back(app: App) -> None:
    partner_with_key(app, "lim", max_downloads=1)
    account(app, "clerk", Role.STAFF)
    account(app, "ann", Role.PARTNER, partner="lim")
    _upload(app, "once.csv", os.urandom(100_000), partner="lim")
    interrupted = app.transfers.open_download(actor(app, "ann"), "once.csv.age")
    interrupted.read_at(0, 1000)
    assert interrupted.close() is False
    assert [f.downloads for f in app.transfers.inbox(actor(app, "ann"))] == [0]
    aborted = audit_events(app, "file:download:incomplete")[-1]
    assert aborted["actor"] == "ann" and aborted["subject"] == f"file:{interrupted.entry.id}"
    assert (aborted["details"]["bytes"], aborted["details"]["size"]) == (1000, interrupted.size)
    assert aborted["details"]["partner"] == "lim"
    retry = app.transfers.open_download(actor(app, "ann"), "once.csv.age")
    retry.read_at(0, retry.size)
    assert retry.close() is True
    assert app.transfers.inbox(actor(app, "ann")) == []


def _limited(app: App, data: bytes = b"one time") -> None:
    partner_with_key(app, "lim", max_downloads=1)
    account(app, "clerk", Role.STAFF)
    account(app, "ann", Role.PARTNER, partner="lim")
    _upload(app, "once.csv", data, partner="lim")


def _read(app: App, *ranges: tuple[int, int | None]) -> bool:
    """Open ann's file, read each ``(start, stop)`` range (None: to the end), close."""
    download = app.transfers.open_download(actor(app, "ann"), "once.csv.age")
    for start, stop in ranges:
        end = download.size if stop is None else stop
        for offset in range(start, end, 4096):
            download.read_at(offset, min(4096, end - offset))
    return download.close()


def test_a_file_split_across_handles_is_one_download(app: App) -> None:
    """The attack: all but the last byte on one handle, the last byte on another."""
    _limited(app)
    size = app.transfers.inbox(actor(app, "ann"))[0].size
    assert _read(app, (0, size - 1)) is False
    assert _read(app, (size - 1, None)) is True
    assert app.transfers.inbox(actor(app, "ann")) == []
    with pytest.raises(NotFoundError):
        app.transfers.open_download(actor(app, "ann"), "once.csv.age")
    incomplete, complete = (audit_events(app, f"file:download:{kind}")
                            for kind in ("incomplete", "complete"))
    assert [e["details"]["bytes"] for e in incomplete] == [size - 1]
    assert [e["details"]["bytes"] for e in complete] == [1]


def test_skipping_a_byte_nobody_needs_still_counts(app: App) -> None:
    """Byte 0 of every age file is known; leaving it out must not make reads free."""
    _limited(app)
    assert _read(app, (1, None)) is False
    assert _read(app, (1, None)) is True
    with pytest.raises(NotFoundError):
        app.transfers.open_download(actor(app, "ann"), "once.csv.age")


def test_an_interrupted_download_resumes_with_the_missing_ranges(app: App) -> None:
    _limited(app, os.urandom(100_000))
    assert _read(app, (0, 40_000)) is False
    assert [f.downloads for f in app.transfers.inbox(actor(app, "ann"))] == [0]
    assert _read(app, (40_000, None)) is True
    assert app.transfers.inbox(actor(app, "ann")) == []


def test_rereading_on_one_handle_counts_once(app: App) -> None:
    partner_with_key(app, "lim", max_downloads=2)
    account(app, "clerk", Role.STAFF)
    account(app, "ann", Role.PARTNER, partner="lim")
    _upload(app, "once.csv", os.urandom(50_000), partner="lim")
    assert _read(app, (0, None), (0, None), (100, 200)) is True
    assert [f.downloads for f in app.transfers.inbox(actor(app, "ann"))] == [1]
    assert _read(app, (0, 10)) is False
    assert [f.downloads for f in app.transfers.inbox(actor(app, "ann"))] == [1]


def test_scattered_reads_cannot_hide_a_download(app: App) -> None:
    """Every other byte, twice: too scattered to track exactly, so most gaps count as
    served; the second pass is a download."""
    _limited(app, os.urandom(20_000))
    for expected in (False, True):
        download = app.transfers.open_download(actor(app, "ann"), "once.csv.age")
        for offset in range(0, download.size, 2):
            download.read_at(offset, 1)
        assert download.close() is expected


def test_served_ranges_are_per_account(app: App) -> None:
    _limited(app)
    account(app, "bo", Role.PARTNER, partner="lim")
    size = app.transfers.inbox(actor(app, "ann"))[0].size
    assert _read(app, (0, size - 1)) is False
    other = app.transfers.open_download(actor(app, "bo"), "once.csv.age")
    other.read_at(size - 1, 1)
    assert other.close() is False


def _age_file(identity: envelope.Identity, plaintext: bytes) -> bytes:
    sink = io.BytesIO()
    with envelope.Encryptor(sink, [identity.recipient]) as encryptor:
        encryptor.write(plaintext)
    return sink.getvalue()


def _real_header(identity: envelope.Identity) -> bytes:
    """A well-formed header from a real encryption; what follows it is up to the test."""
    data = _age_file(identity, b"")
    return data[:data.index(b"\n", data.index(b"\n--- ") + 1) + 1]


CSV = b"".join(b"%d,1986-04-%02d,P%07d,F,42.5\n" % (i, i % 28 + 1, i * 7919) for i in range(9000))
_NOISE = os.urandom(60_000)


@pytest.mark.parametrize(("payload", "reason"), [
    (CSV, "without a control byte"),
    (gzip.compress(CSV), "not uniformly distributed"),
    (bytes(range(256)) * 300, "not uniformly distributed"),
    (_NOISE + _NOISE[-6000:], "compresses"),
    (lzma.compress(CSV), "starts with the xz signature"),
    (b"PATIENT-ID-12345,positive,1986-04-12,F,42.5\n" * 2, "looks like text"),
    (b"hi\n", "too short to be age ciphertext"),
    (b"", "too short to be age ciphertext"),
])
def test_plaintext_behind_a_real_header_is_refused(app: App, setup: envelope.Identity,
                                                   payload: bytes, reason: str) -> None:
    """A *.age upload whose header parses but whose payload is not ciphertext (issue 15)."""
    with pytest.raises(UsageError, match=f"must be age ciphertext.*{reason}"):
        _upload(app, "extract.csv.age", _real_header(setup) + payload)
    assert _store_files(app) == []
    assert list((app.settings.store_dir / "partial").iterdir()) == []
    assert reason in audit_events(app, "file:upload:aborted")[-1]["details"]["reason"]


def test_plaintext_appended_to_a_real_age_file_is_refused(app: App,
                                                          setup: envelope.Identity) -> None:
    forged = _age_file(setup, os.urandom(3 * 1024 * 1024)) + CSV
    with pytest.raises(UsageError, match="must be age ciphertext"):
        _upload(app, "joined.csv.age", forged, chunk=255 * 1024)
    assert _store_files(app) == []


def test_armored_plaintext_behind_a_real_header_is_refused(app: App,
                                                          setup: envelope.Identity) -> None:
    armored = io.BytesIO()
    writer = ArmorWriter(armored)
    writer.write(_real_header(setup) + CSV)
    writer.close()
    with pytest.raises(UsageError, match="must be age ciphertext"):
        _upload(app, "armored.csv.age", armored.getvalue(), chunk=1000)
    assert _store_files(app) == []


@pytest.mark.parametrize("size", [0, 1, 100, 64 * 1024, 200_000, 3 * 1024 * 1024])
def test_real_age_files_of_any_size_are_stored_as_they_are(app: App, setup: envelope.Identity,
                                                           size: int) -> None:
    for armor in (False, True):
        sink = io.BytesIO()
        with envelope.Encryptor(sink, [setup.recipient], armor=armor) as encryptor:
            encryptor.write(os.urandom(size) if size % 2 else b"A" * size)
        _upload(app, f"f{size}-{armor}.age", sink.getvalue(), chunk=32 * 1024)
        assert sink.getvalue() in _store_files(app)


def test_listing_carries_transfer_id_and_ciphertext_hash(app: App, setup: envelope.Identity
                                                         ) -> None:
    _upload(app, "a.csv", b"rows")
    [entry] = app.transfers.inbox(actor(app, "lee"))
    stored = _store_files(app)[0]
    assert entry.sha256 == hashlib.sha256(stored).hexdigest()
    assert entry.id == audit_events(app, "file:upload:complete")[-1]["subject"][5:]
