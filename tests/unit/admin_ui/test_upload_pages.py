"""The staff upload page in-process: what it shows, and its endpoints (begin, ordered
parts, commit, cancel) driven as the page's script drives them, with ciphertext made
here. Each refusal stores nothing and is audited with its reason. The browser's own
encryption and the 256 MiB round trip are in tests/integration/console/
test_upload_browser.py."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from gateway import console_sessions, envelope
from gateway.app import App
from gateway.data_elements import scan
from gateway.db.models import Account, Role, Transfer
from gateway.web_uploads import IDLE, PART_LIMIT
from tests.conftest import FakeClock
from tests.unit.admin_ui.console_support import browser
from tests.unit.gateway.factories import (
    account,
    actor,
    approved,
    audit_events,
    partner_with_key,
)

CSV = b"HCN,Birth Date,postal_code\r\n" + b"1,1980-01-02,K1A\r\n" * 40000


@dataclass
class Staff:
    client: TestClient
    csrf: str
    identity: envelope.Identity
    totp_uri: str

    def begin(self, *, name: str = "extract.csv", data: bytes = CSV,
              fingerprints: list[str] | None = None) -> object:
        contents = scan(data)
        return self.client.post("/upload/sessions", headers={"X-CSRF-Token": self.csrf},
                                json={"partner": "uni", "name": name,
                                      "fingerprints": fingerprints if fingerprints is not None
                                      else [self.identity.recipient.fingerprint],
                                      "contents": {"format": contents.format,
                                                   "columns": list(contents.columns or []),
                                                   "records": contents.records}})

    def part(self, upload_id: str, number: int, data: bytes) -> object:
        return self.client.put(f"/upload/sessions/{upload_id}/parts/{number}", content=data,
                               headers={"X-CSRF-Token": self.csrf})

    def commit(self, upload_id: str, parts: int) -> object:
        return self.client.post(f"/upload/sessions/{upload_id}/commit", json={"parts": parts},
                                headers={"X-CSRF-Token": self.csrf})


def _signed_in(app: App, clock: FakeClock, username: str) -> tuple[TestClient, str]:
    """A console session past its passkey (the browser test registers a real one)."""
    with app.transaction() as session:
        row = session.scalar(select(Account).where(Account.username == username))
        assert row is not None
        token, opened = console_sessions.open_session(
            session, row, stage=console_sessions.Stage.FULL, source="192.0.2.1",
            client="test", now=clock())
        csrf = opened.csrf
    client = browser(app)
    client.cookies.set("blindpost", token)
    return client, csrf


@pytest.fixture
def staff(app: App, clock: FakeClock) -> Iterator[Staff]:
    identity = partner_with_key(app, "uni", post_quantum=False)
    new, _ = account(app, "clerk", Role.STAFF)
    assert new.totp_uri is not None
    client, csrf = _signed_in(app, clock, "clerk")
    yield Staff(client, csrf, identity, new.totp_uri)
    client.close()


def _transfers(app: App) -> int:
    with app.read() as session:
        return int(session.scalar(select(func.count(Transfer.id))) or 0)


def _aborted(app: App) -> str:
    return str(audit_events(app, "file:upload:aborted")[-1]["details"]["reason"])


def test_the_page_shows_the_keys_by_fingerprint_and_the_agreement(app: App,
                                                                   staff: Staff) -> None:
    approved(app, app.agreements.propose(actor(app, "root-admin"), partner="uni",
                                         columns=["health_card_number", "birth_date"]))
    page = staff.client.get("/upload?partner=uni")
    assert page.status_code == 200
    fingerprint = staff.identity.recipient.fingerprint
    assert f'data-fingerprint="{fingerprint}"' in page.text
    assert f'data-recipient="{staff.identity.recipient}"' in page.text
    assert "approved by second-admin" not in page.text  # send's order: approved TIME by NAME
    assert "by second-admin, proposed by root-admin" in page.text
    assert "birth_date, health_card_number" in page.text
    assert "blindpost send PARTNER FILE" in page.text  # the no-script notice
    assert staff.client.get("/", follow_redirects=False).headers["location"] == "/upload"


def test_a_browser_upload_is_stored_as_sent_and_audited_like_send(app: App,
                                                                  staff: Staff) -> None:
    ciphertext = envelope.encrypt_bytes(CSV, [staff.identity.recipient])
    opened = staff.begin()
    assert opened.status_code == 201, opened.text  # type: ignore[attr-defined]
    upload_id = opened.json()["id"]  # type: ignore[attr-defined]
    cut = len(ciphertext) // 3
    for number, piece in enumerate((ciphertext[:cut], ciphertext[cut:2 * cut],
                                    ciphertext[2 * cut:])):
        received = staff.part(upload_id, number, piece)
        assert received.status_code == 200  # type: ignore[attr-defined]
        assert received.json()["sha256"] == hashlib.sha256(piece).hexdigest()  # type: ignore[attr-defined]
    stored = staff.commit(upload_id, 3).json()  # type: ignore[attr-defined]
    assert (stored["name"], stored["size"]) == ("extract.csv.age", len(ciphertext))
    assert stored["sha256"] == hashlib.sha256(ciphertext).hexdigest()
    event = audit_events(app, "file:upload:complete")[-1]
    assert "clerk" in event["actor"]
    details = event["details"]
    assert details["encrypted_here"] is False
    assert details["declared_recipients"] == [staff.identity.recipient.fingerprint]
    assert (details["data_read_by"], details["records"]) == ("sender", 40000)
    with app.read() as session:
        row = session.scalar(select(Transfer))
        assert row is not None
        object_id = row.object_id
    reader = app.store.open(object_id)
    assert envelope.decrypt_bytes(reader.read_at(0, len(ciphertext) + 1),
                                  [staff.identity]) == CSV
    reader.close()
    # Finished: the upload is gone.
    assert staff.part(upload_id, 3, b"x").status_code == 404  # type: ignore[attr-defined]


def test_keys_other_than_the_approved_ones_are_refused_before_any_byte(
        app: App, staff: Staff) -> None:
    other = envelope.generate_identity(post_quantum=False).recipient.fingerprint
    for fingerprints in ([other], [staff.identity.recipient.fingerprint, other], []):
        refused = staff.begin(fingerprints=fingerprints)
        assert refused.status_code == 403, refused.text  # type: ignore[attr-defined]
        detail = refused.json()["detail"]  # type: ignore[attr-defined]
        assert "not the partner's approved keys" in detail
        assert _aborted(app) == detail
    assert _transfers(app) == 0


def test_contents_outside_the_agreement_are_refused_before_any_byte(app: App,
                                                                    staff: Staff) -> None:
    approved(app, app.agreements.propose(actor(app, "root-admin"), partner="uni",
                                         columns=["health_card_number"]))
    refused = staff.begin()
    assert refused.status_code == 403, refused.text  # type: ignore[attr-defined]
    detail = refused.json()["detail"]  # type: ignore[attr-defined]
    assert "Birth Date" in detail and "postal_code" in detail
    assert _aborted(app) == detail
    assert _transfers(app) == 0


def test_a_payload_that_is_not_ciphertext_is_refused_and_nothing_is_stored(
        app: App, staff: Staff) -> None:
    ciphertext = envelope.encrypt_bytes(CSV, [staff.identity.recipient])
    header = ciphertext[:ciphertext.index(b"\n---") + 1]
    header += ciphertext[len(header):].split(b"\n", 1)[0] + b"\n"
    upload_id = staff.begin().json()["id"]  # type: ignore[attr-defined]
    refused = staff.part(upload_id, 0, header + CSV)
    assert refused.status_code == 400  # type: ignore[attr-defined]
    detail = refused.json()["detail"]  # type: ignore[attr-defined]
    assert "payload" in detail and "is not" in detail
    assert "payload" in _aborted(app)
    assert staff.part(upload_id, 1, b"more").status_code == 404  # type: ignore[attr-defined]
    assert _transfers(app) == 0


def test_parts_come_in_order_within_the_limit_from_the_same_session(
        app: App, clock: FakeClock, staff: Staff) -> None:
    ciphertext = envelope.encrypt_bytes(CSV, [staff.identity.recipient])
    upload_id = staff.begin().json()["id"]  # type: ignore[attr-defined]
    # Another session of the same account sees no such upload, and ends nothing.
    other, csrf = _signed_in(app, clock, "clerk")
    assert other.put(f"/upload/sessions/{upload_id}/parts/0", content=ciphertext,
                     headers={"X-CSRF-Token": csrf}).status_code == 404
    # Without the CSRF header: refused, and the upload goes on.
    assert staff.client.put(f"/upload/sessions/{upload_id}/parts/0",
                            content=ciphertext).status_code == 403
    skipped = staff.part(upload_id, 1, ciphertext)
    assert skipped.status_code == 400  # type: ignore[attr-defined]
    assert "part 0 is next" in _aborted(app)
    upload_id = staff.begin().json()["id"]  # type: ignore[attr-defined]
    assert staff.part(upload_id, 0, ciphertext[:100]).status_code == 200  # type: ignore[attr-defined]
    short = staff.commit(upload_id, 2)
    assert short.status_code == 400  # type: ignore[attr-defined]
    assert "2 parts, but 1 arrived" in _aborted(app)
    upload_id = staff.begin().json()["id"]  # type: ignore[attr-defined]
    too_big = staff.part(upload_id, 0, bytes(PART_LIMIT + 1))
    assert too_big.status_code == 403  # type: ignore[attr-defined]
    assert "part limit" in _aborted(app)
    assert _transfers(app) == 0


def test_an_upload_left_idle_is_aborted(app: App, clock: FakeClock, staff: Staff) -> None:
    upload_id = staff.begin().json()["id"]  # type: ignore[attr-defined]
    clock.advance(seconds=IDLE.total_seconds() + 1)
    assert app.web_uploads.sweep() == 1
    assert "sent nothing for 10 minutes" in _aborted(app)
    assert staff.part(upload_id, 0, os.urandom(10)).status_code == 404  # type: ignore[attr-defined]
    cancelled = staff.begin().json()["id"]  # type: ignore[attr-defined]
    assert staff.client.delete(f"/upload/sessions/{cancelled}",
                               headers={"X-CSRF-Token": staff.csrf}).status_code == 204
    assert "cancelled in the browser" in _aborted(app)


def test_only_staff_upload(app: App, clock: FakeClock, staff: Staff) -> None:
    client, csrf = _signed_in(app, clock, "root-admin")
    assert client.get("/upload").status_code == 403
    refused = client.post("/upload/sessions", headers={"X-CSRF-Token": csrf},
                          json={"partner": "uni", "name": "x.csv",
                                "fingerprints": [staff.identity.recipient.fingerprint],
                                "contents": {"format": "empty", "columns": [],
                                             "records": 0}})
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert _transfers(app) == 0
    assert timedelta(0) < IDLE



def test_staff_sign_in_with_their_code_then_a_passkey(app: App, clock: FakeClock,
                                                      staff: Staff) -> None:
    totp = pyotp.parse_uri(staff.totp_uri)
    # Their first passkey rests on the SSH key too: without the code read over SFTP
    # (/.portal-enrolment), the one-time code alone opens nothing.
    refused = browser(app).post("/portal/signin", data={"username": "clerk",
                                                        "code": totp.at(clock())},
                                follow_redirects=False)
    assert refused.status_code == 401
    assert "enrolment code" in refused.text
    clock.advance(seconds=30)
    enrolment = app.portal_enrolment.issue(actor(app, "clerk")).code
    answer = browser(app).post("/portal/signin",
                               data={"username": "clerk", "code": totp.at(clock()),
                                     "enrolment": enrolment}, follow_redirects=False)
    assert (answer.status_code, answer.headers["location"]) == (303, "/signin/passkey")
    # Past the passkey: their own page works, and the menu offers the upload page only.
    me = staff.client.get("/me")
    assert me.status_code == 200, me.text
    assert 'href="/upload"' in me.text and 'href="/partners"' not in me.text
