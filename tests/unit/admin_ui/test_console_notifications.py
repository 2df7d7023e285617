"""An account turns its own notifications on and off on its page, "me": an address is
used only once the code sent to it is typed back."""

from __future__ import annotations

import dataclasses
import re
from email.utils import parsedate_to_datetime

import pytest

from gateway.app import App
from gateway.audit import AuditTag
from gateway.db.models import Role
from gateway.errors import AuthorizationError
from gateway.notify import service as notify_service
from gateway.notify.delivery import Mail
from tests.conftest import FakeClock
from tests.unit.admin_ui.console_support import Person
from tests.unit.gateway.factories import account, actor, audit_events


@pytest.fixture
def sent(app: App, monkeypatch: pytest.MonkeyPatch) -> list[Mail]:
    """A relay is configured; what would be handed to it is kept here (the real relay
    is in tests/integration/test_notifications.py)."""
    mails: list[Mail] = []
    monkeypatch.setattr(app.notifications, "_settings", dataclasses.replace(
        app.settings, notify_smtp_host="127.0.0.1", notify_smtp_from="bp@registry.example"))
    monkeypatch.setattr(notify_service, "send_mail",
                        lambda _settings, mail, *, now: bool(mails.append(mail)) or True)
    return mails


def test_without_a_relay_no_code_can_be_sent(app: App, alice: Person) -> None:
    page = alice.client.get("/me")
    assert '<h2 id="notifications">Notifications</h2>' in page.text
    assert "No relay is configured yet" in page.text
    refused = alice.post("/me/notifications", {"email": "alice@registry.example"})
    assert refused.status_code == 400  # type: ignore[attr-defined]
    assert app.notifications.subscription(actor(app, "alice"), username="alice").email is None


def test_an_admin_confirms_their_address_with_the_code_sent_to_it(
        app: App, alice: Person, audrey: Person, sent: list[Mail]) -> None:
    answer = alice.post("/me/notifications", {"email": "alice@registry.example"})
    assert answer.status_code == 303  # type: ignore[attr-defined]
    assert [m.to for m in sent] == ["alice@registry.example"]
    code = re.search(r"Your code: (\d{8})", sent[0].body)
    assert code is not None
    page = alice.client.get("/me").text
    assert "Code sent to alice@registry.example" in page
    # Not used until confirmed; a wrong code is refused and audited.
    assert app.notifications.subscription(actor(app, "alice"), username="alice").email is None
    wrong = "00000000" if code.group(1) != "00000000" else "11111111"
    refused = alice.post("/me/notifications/confirm", {"code": wrong})
    assert refused.status_code == 400  # type: ignore[attr-defined]
    alice.post("/me/notifications/confirm", {"code": code.group(1)})
    assert app.notifications.subscription(actor(app, "alice"), username="alice").email == (
        "alice@registry.example")
    assert "They go to <strong>alice@registry.example</strong>" in alice.client.get("/me").text
    # The same code again confirms nothing: it was used.
    again = alice.post("/me/notifications/confirm", {"code": code.group(1)})
    assert again.status_code == 400  # type: ignore[attr-defined]
    bad = alice.post("/me/notifications", {"email": "alice@x\r\nBcc: y@evil.example"})
    assert bad.status_code == 400  # type: ignore[attr-defined]
    alice.post("/me/notifications", {"email": ""})
    assert app.notifications.subscription(actor(app, "alice"), username="alice").email is None
    tags = (AuditTag.NOTIFY_VERIFY_SENT, AuditTag.NOTIFY_VERIFY_FAILURE,
            AuditTag.NOTIFY_SUBSCRIBE, AuditTag.NOTIFY_UNSUBSCRIBE)
    events = [(tag.value, e["actor"], e["subject"]) for tag in tags
              for e in audit_events(app, tag)]
    assert events == [("notify:verify:sent", "alice", "account:alice"),
                      ("notify:verify:failure", "alice", "account:alice"),
                      ("notify:verify:failure", "alice", "account:alice"),
                      ("notify:subscribe", "alice", "account:alice"),
                      ("notify:unsubscribe", "alice", "account:alice")]
    assert "registry.example" not in str(audit_events(app, AuditTag.NOTIFY_VERIFY_SENT))
    # An auditor hears of nothing, so the page offers nothing; a post without the CSRF
    # token changes nothing.
    assert "Notifications</h2>" not in audrey.client.get("/me").text
    forged = alice.client.post("/me/notifications", data={"email": "spy@evil.example"},
                               follow_redirects=False)
    assert forged.status_code == 403
    assert len(sent) == 1


def test_too_many_codes_are_refused_by_the_form_and_the_api(
        app: App, clock: FakeClock, alice: Person, sent: list[Mail]) -> None:
    first = alice.post("/me/notifications", {"email": "alice@registry.example"})
    assert first.status_code == 303  # type: ignore[attr-defined]
    again = alice.post("/me/notifications", {"email": "alice@registry.example"})
    assert again.status_code == 429  # type: ignore[attr-defined]
    # Told by the form, with what was typed kept.
    assert re.search(r'<p class="error field-error" id="err-notify" role="alert">too many '
                     r"codes asked for: at most 3 an hour, 1 minute apart; ask again after "
                     r"09:0\d:\d\d UTC</p>", again.text)  # type: ignore[attr-defined]
    assert 'value="alice@registry.example"' in again.text  # type: ignore[attr-defined]
    api = alice.client.post("/api/v1/me/notifications",
                            json={"email": "alice@registry.example"},
                            headers={"X-CSRF-Token": alice.csrf})
    assert api.status_code == 429
    problem = api.json()
    assert problem["type"] == "urn:blindpost:problem:too-many-requests"
    assert problem["detail"].startswith("too many codes asked for")
    retry = parsedate_to_datetime(api.headers["retry-after"])
    assert clock() < retry <= clock() + notify_service.VERIFY_COOLDOWN
    assert len(sent) == 1
    assert len(audit_events(app, AuditTag.NOTIFY_VERIFY_LIMITED)) == 2
    # Once the cooldown is over the API sends one, and confirms it.
    clock.now = retry
    answer = alice.client.post("/api/v1/me/notifications",
                               json={"email": "alice@registry.example"},
                               headers={"X-CSRF-Token": alice.csrf})
    assert answer.status_code == 202, answer.text
    code = re.search(r"Your code: (\d{8})", sent[-1].body)
    assert code is not None and len(sent) == 2
    confirmed = alice.client.post("/api/v1/me/notifications/confirm",
                                  json={"code": code.group(1)},
                                  headers={"X-CSRF-Token": alice.csrf})
    assert confirmed.json() == {"username": "alice", "email": "alice@registry.example"}


def test_a_partner_user_asks_codes_for_their_own_address_only(
        app: App, sent: list[Mail]) -> None:
    app.partners.add(actor(app, "root-admin"), slug="uni")
    account(app, "dr-lee", Role.PARTNER, partner="uni")
    with pytest.raises(AuthorizationError):
        app.notifications.request_address(actor(app, "dr-lee"), username="root-admin",
                                          email="lee@uni.example")
    assert sent == []
    app.notifications.request_address(actor(app, "dr-lee"), username="dr-lee",
                                      email="lee@uni.example")
    assert [m.to for m in sent] == ["lee@uni.example"]
