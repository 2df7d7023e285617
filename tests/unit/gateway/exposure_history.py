"""A scripted history for the exposure report tests, with everything the report must show.

All on a fake clock, on 2 November 2026 (UTC); the report window is 10:00 to 12:00:

    09:00  admins, partners uni (retention 2h) and lab, keys 1 (uni) and 2 (lab),
           accounts clerk (staff), lee (uni), bo (lab)
    09:30  old.csv for uni (100 bytes)                     expires 11:30, in the window
    09:40  gone.csv for uni; 09:45 lee downloads it; 09:50 lee withdraws it   (before)
    10:10  report.csv for uni (200 bytes)
    10:15  lee signs in
    10:20  lee downloads report.csv.age; 10:25 reads 10 bytes and stops
    10:30  report.csv again (300 bytes): supersedes the first
    10:40  key 3 for uni proposed and approved; 10:45 key 1 revoked (not the last)
    10:50  after-rotation.csv for uni (400 bytes): encrypted to key 3 alone
    11:00  lab.csv for lab (500 bytes); 11:10 clerk withdraws it
    11:30  the purger removes old.csv (expired)
    12:30  late.csv for uni                                                   (after)

File ids are 00000000-0000-4000-8000-00000000000N in upload order. The recipients are
fixed classical keys, so sizes and fingerprints are known: an age file to one X25519
recipient is 200 bytes longer than its plaintext (168 of header, a 16-byte nonce and one
16-byte tag).
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway import totp
from gateway.app import App
from gateway.config import load_settings
from gateway.datadir import initialise
from gateway.db.models import Role
from tests.conftest import FakeClock
from tests.unit.gateway.factories import OPERATOR, account, actor

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
WINDOW = (datetime(2026, 11, 2, 10, 0, tzinfo=UTC), datetime(2026, 11, 2, 12, 0, tzinfo=UTC))
RECIPIENTS = {
    1: ("age1spq5xktd2v9r5m3c0v3efk9fjvyffpf54z4m34wc57434ceg9avqfv56rj",
        "SHA256:kCfMJ+PutxvF3iDcZTwS3wc+7iGkfD0F7aeBikFpUk0"),
    2: ("age1qwxn4lqfm428gfpayr2u4lrdy0h0d0rqqvku6y425dma6456ygtspplmmy",
        "SHA256:8oh98QuLWmSGuLj3qyqUMeKYGKweuw2kVd6LSLybjgU"),
    3: ("age1n78j3u08gq4t7kw2lg5wg0thfrd3sgxp7n72kfeqtsaaw8rh0c7s4u3385",
        "SHA256:SJVSkrwzfMz/ZoG4Zs4ybtMR48HXsjmXGDf+oXfI1RI"),
}


def file_id(number: int) -> str:
    return f"00000000-0000-4000-8000-{number:012d}"


@dataclass
class History:
    app: App
    clock: FakeClock
    sha256: dict[str, str]

    def at(self, hour: int, minute: int) -> None:
        self.clock.now = START.replace(hour=hour, minute=minute)


def history_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> History:
    """An installation without the init-time admin (its clock is the real one)."""
    data_dir = tmp_path / "var"
    initialise(data_dir, admin=None, environ={})
    # One checkpoint (at the first entry) and no other: the report names it exactly.
    settings = load_settings(data_dir=data_dir, environ={},
                             overrides={"audit_checkpoint_seconds": 10**8})
    clock = FakeClock(START)
    numbers = itertools.count(1)
    monkeypatch.setattr("gateway.transfers.uuid", type("FixedIds", (), {
        "uuid4": staticmethod(lambda: uuid.UUID(file_id(next(numbers))))}))
    return History(App(settings, clock=clock), clock, {})


def _key(history: History, partner: str, number: int) -> None:
    app = history.app
    key = app.keys.propose(actor(app, "root-admin"), partner=partner,
                           recipient=RECIPIENTS[number][0])
    assert key.id == number
    app.keys.approve(actor(app, "second-admin"), key_id=key.id)


# A CSV of records 20 bytes long (the first one longer to make up the size): a file of
# SIZE bytes holds (SIZE - len(HEADER)) // 20 records (issue 24).
CSV_HEADER = b"hcn,birth_date,postal_code\n"
# This one is no CSV: of unknown structure.
OPAQUE_NAME = "after-rotation.csv"


def records_of(size: int) -> int:
    return (size - len(CSV_HEADER)) // 20


def csv_of(size: int) -> bytes:
    rows, extra = divmod(size - len(CSV_HEADER), 20)
    return (CSV_HEADER + b"7" * (7 + extra) + b",19800102,K1\n"
            + b"1234567,19800102,K1\n" * (rows - 1))


def _upload(history: History, partner: str, name: str, size: int) -> None:
    upload = history.app.transfers.begin_upload(actor(history.app, "clerk"), partner=partner,
                                                name=name)
    data = b"r" * size if name == OPAQUE_NAME else csv_of(size)
    assert len(data) == size
    upload.write(data)
    entry = upload.commit()
    assert entry.size == size + 200
    history.sha256[name] = entry.sha256


def _download(history: History, name: str, *, whole: bool) -> None:
    download = history.app.transfers.open_download(actor(history.app, "lee"), name)
    download.read_at(0, download.size if whole else 10)
    assert download.close() is whole


def _sign_in(history: History, secret: str, key_blob: bytes) -> None:
    auth = history.app.auth
    attempt = auth.begin(source="192.0.2.9")
    auth.accept_public_key(attempt, username="lee", key_blob=key_blob)
    auth.accept_code(attempt, username="lee", code=totp.current_code(secret,
                                                                     now=history.clock()))


def play(history: History) -> History:
    """Run the scripted history (see the module docstring)."""
    app = history.app
    for admin in ("root-admin", "second-admin"):
        app.accounts.add(OPERATOR, username=admin, role=Role.ADMIN)
    app.partners.add(OPERATOR, slug="uni", retention_seconds=7200)
    app.partners.add(OPERATOR, slug="lab")
    _key(history, "uni", 1)
    _key(history, "lab", 2)
    account(app, "clerk", Role.STAFF)
    lee, lee_key = account(app, "lee", Role.PARTNER, partner="uni")
    account(app, "bo", Role.PARTNER, partner="lab")
    history.at(9, 30)
    _upload(history, "uni", "old.csv", 100)
    history.at(9, 40)
    _upload(history, "uni", "gone.csv", 150)
    history.at(9, 45)
    _download(history, "gone.csv.age", whole=True)
    history.at(9, 50)
    app.transfers.withdraw(actor(app, "lee"), "gone.csv.age")
    history.at(10, 10)
    _upload(history, "uni", "report.csv", 200)
    history.sha256["report.csv#1"] = history.sha256["report.csv"]
    history.at(10, 15)
    _sign_in(history, lee.totp_uri.split("secret=")[1].split("&")[0], lee_key.blob)
    history.at(10, 20)
    _download(history, "report.csv.age", whole=True)
    history.at(10, 25)
    _download(history, "report.csv.age", whole=False)
    history.at(10, 30)
    _upload(history, "uni", "report.csv", 300)
    history.at(10, 40)
    _key(history, "uni", 3)
    history.at(10, 45)
    app.keys.revoke(actor(app, "root-admin"), key_id=1)
    history.at(10, 50)
    _upload(history, "uni", "after-rotation.csv", 400)
    history.at(11, 0)
    _upload(history, "lab", "lab.csv", 500)
    history.at(11, 10)
    app.transfers.withdraw(actor(app, "clerk"), "lab.csv.age", partner="lab")
    history.at(11, 30)
    assert app.retention.purge().purged == 1
    history.at(12, 30)
    _upload(history, "uni", "late.csv", 600)
    return history
