"""An account turns its own notifications on and off on its page, "me"."""

from __future__ import annotations

from gateway.app import App
from gateway.audit import AuditTag
from tests.unit.admin_ui.console_support import Person
from tests.unit.gateway.factories import actor, audit_events


def test_an_admin_opts_in_and_out_on_their_own_page(app: App, alice: Person,
                                                    audrey: Person) -> None:
    page = alice.client.get("/me")
    assert "<h2>Notifications</h2>" in page.text and "No relay is configured yet" in page.text
    answer = alice.post("/me/notifications", {"email": "alice@registry.example"})
    assert answer.status_code == 303  # type: ignore[attr-defined]
    assert 'value="alice@registry.example"' in alice.client.get("/me").text
    refused = alice.post("/me/notifications", {"email": "alice@x\r\nBcc: y@evil.example"})
    assert refused.status_code == 400  # type: ignore[attr-defined]
    alice.post("/me/notifications", {"email": ""})
    assert app.notifications.subscription(actor(app, "alice"), username="alice").email is None
    assert [(e["actor"], e["subject"]) for e in audit_events(app, AuditTag.NOTIFY_SUBSCRIBE)
            + audit_events(app, AuditTag.NOTIFY_UNSUBSCRIBE)] == [
        ("alice", "account:alice"), ("alice", "account:alice")]
    # An auditor hears of nothing, so the page offers nothing; a post without the CSRF
    # token changes nothing.
    assert "<h2>Notifications</h2>" not in audrey.client.get("/me").text
    forged = alice.client.post("/me/notifications", data={"email": "spy@evil.example"},
                               follow_redirects=False)
    assert forged.status_code == 403
    assert app.notifications.subscription(actor(app, "alice"), username="alice").email is None

