"""A data-sharing agreement on the console and the API (issue 24): one admin proposes,
a second approves with a fresh code, a token is refused, the page shows the terms."""

from __future__ import annotations

from gateway.app import App
from tests.conftest import FakeClock
from tests.unit.admin_ui.console_support import Person, browser
from tests.unit.gateway.factories import OPERATOR, admin_token, audit_events


def test_api_agreement_takes_two_admins(app: App, clock: FakeClock, alice: Person,
                                        bob: Person) -> None:
    app.partners.add(OPERATOR, slug="uni")
    token = admin_token(app, "robot")
    by_token = browser(app).post("/api/v1/partners/uni/agreement", json={"columns": ["hcn"]},
                                 headers={"Authorization": f"Bearer {token}"})
    assert by_token.status_code == 403
    assert "an API token never creates or extends authority" in by_token.json()["detail"]
    proposed = alice.client.post("/api/v1/partners/uni/agreement",
                                 json={"columns": ["HCN", "dob"], "max_records": 5},
                                 headers={"X-CSRF-Token": alice.csrf})
    assert proposed.status_code == 202, proposed.text
    change = proposed.json()["pending"]
    assert (change["kind"], change["target"]) == ("agreement-set", "uni")
    assert alice.client.get("/api/v1/partners/uni/agreement").json()["agreement"] is None
    done = bob.client.post(f"/api/v1/authority-changes/{change['id']}/approve",
                           json={"code": bob.code(clock, ahead=1)},
                           headers={"X-CSRF-Token": bob.csrf})
    assert done.status_code == 200, done.text
    shown = alice.client.get("/api/v1/partners/uni/agreement").json()["agreement"]
    assert (shown["columns"], shown["max_records"], shown["approved_by"]) == (
        ["birth_date", "health_card_number"], 5, "bob")
    assert audit_events(app, "agreement:set")[-1]["actor"] == "bob"


def test_console_page_shows_and_proposes(app: App, alice: Person) -> None:
    app.partners.add(OPERATOR, slug="uni")
    empty = alice.client.get("/partners/uni/agreement")
    assert empty.status_code == 200
    assert "uni has no data-sharing agreement" in empty.text
    answer = alice.post("/partners/uni/agreement", {"columns": "hcn,postal_code",
                                                    "max_records": "10"})
    assert answer.status_code == 303  # type: ignore[attr-defined]
    assert answer.headers["location"].startswith("/accounts#change-")  # type: ignore[attr-defined]
    [pending] = app.authority.pending(OPERATOR)
    assert pending.params["columns"] == ["health_card_number", "postal_code"]
