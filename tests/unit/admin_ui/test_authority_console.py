"""Authority takes two people on the console and the API (issue 20): a session proposes,
a second admin's fresh code approves and alone sees the credential, a token is refused."""

from __future__ import annotations

import re

from gateway import envelope
from gateway.app import App
from tests.conftest import FakeClock
from tests.unit.admin_ui.console_support import Person, browser
from tests.unit.gateway.factories import OPERATOR, admin_token, audit_events, ssh_public_key


def _api(person: Person, path: str, body: object = None) -> object:
    return person.client.post(path, json=body if body is not None else {},
                              headers={"X-CSRF-Token": person.csrf})


def test_one_admin_token_cannot_make_admins_or_touch_their_credentials(app: App) -> None:
    """The attack of issue 20 over HTTP: every step is 403 and no key is approved."""
    token = admin_token(app, "robot")
    client = browser(app)
    bearer = {"Authorization": f"Bearer {token}"}
    app.partners.add(OPERATOR, slug="uni")
    steps = [("/api/v1/accounts", {"username": "eve1", "role": "admin"}),
             ("/api/v1/accounts", {"username": "eve2", "role": "admin"}),
             ("/api/v1/accounts", {"username": "eve3", "role": "auditor"}),
             ("/api/v1/accounts/root-admin/reset-totp", None),
             ("/api/v1/accounts/root-admin/ssh-keys", {"key": ssh_public_key().openssh()}),
             ("/api/v1/tokens", {"name": "more", "role": "admin"}),
             ("/api/v1/keys", {"partner": "uni",
                               "recipient": str(envelope.generate_identity().recipient)})]
    for path, body in steps:
        answer = client.post(path, json=body, headers=bearer)
        assert answer.status_code == 403, (path, answer.text)
        problem = answer.json()
        assert answer.headers["content-type"] == "application/problem+json"
        assert problem["type"] == "urn:blindpost:problem:forbidden"
        if path != "/api/v1/keys":
            assert "an API token never creates or extends authority" in problem["detail"]
    assert client.get("/api/v1/keys", headers=bearer).json() == []
    assert client.get("/api/v1/authority-changes", headers=bearer).json() == []
    names = {a["username"] for a in client.get("/api/v1/accounts", headers=bearer).json()}
    assert not names & {"eve1", "eve2", "eve3"}
    refusals = audit_events(app, "access:denied")
    assert [e["actor"] for e in refusals] == ["token:robot"] * len(steps)


def test_api_proposal_and_approval_with_a_fresh_code(app: App, clock: FakeClock, alice: Person,
                                                     bob: Person) -> None:
    proposed = _api(alice, "/api/v1/accounts", {"username": "carol", "role": "admin"})
    assert proposed.status_code == 202, proposed.text  # type: ignore[attr-defined]
    change = proposed.json()["pending"]  # type: ignore[attr-defined]
    assert (change["kind"], change["target"], change["proposed_by"]) == (
        "account-create", "carol", "alice")
    assert "one_time_password" not in proposed.text  # type: ignore[attr-defined]
    listed = alice.client.get("/api/v1/authority-changes").json()
    assert [c["id"] for c in listed] == [change["id"]]
    path = f"/api/v1/authority-changes/{change['id']}/approve"
    own = _api(alice, path, {"code": alice.code(clock, ahead=1)})
    assert own.status_code == 403  # type: ignore[attr-defined]
    assert "different admin" in own.json()["detail"]  # type: ignore[attr-defined]
    assert _api(bob, path).status_code == 400  # type: ignore[attr-defined]
    done = _api(bob, path, {"code": bob.code(clock, ahead=1)})
    assert done.status_code == 200, done.text  # type: ignore[attr-defined]
    password = done.json()["one_time_password"]  # type: ignore[attr-defined]
    assert done.json()["change"]["approved_by"] == "bob"  # type: ignore[attr-defined]
    # The new admin signs in with it and must enrol their own code first.
    first = browser(app).post("/signin", data={"username": "carol", "password": password},
                              follow_redirects=False)
    assert first.headers["location"] == "/signin/enrol"
    approval = audit_events(app, "authority:approve")[-1]
    assert (approval["actor"], approval["details"]["proposed_by"]) == ("bob", "alice")


def test_console_pages_two_admins(app: App, clock: FakeClock, alice: Person,
                                  bob: Person) -> None:
    answer = alice.post("/accounts", {"username": "carol", "role": "admin"})
    assert answer.status_code == 303  # type: ignore[attr-defined]
    change_id = int(answer.headers["location"].rpartition("-")[2])  # type: ignore[attr-defined]
    mine = alice.client.get("/accounts").text
    assert f"Change {change_id}: create admin account carol" in mine
    assert "Waiting for another admin to approve." in mine
    assert f'action="/accounts/changes/{change_id}/approve"' not in mine
    theirs = bob.client.get("/accounts").text
    assert f'action="/accounts/changes/{change_id}/approve"' in theirs
    refused = alice.post(f"/accounts/changes/{change_id}/approve",
                         {"code": alice.code(clock, ahead=1)})
    assert refused.status_code == 403  # type: ignore[attr-defined]
    shown = bob.post(f"/accounts/changes/{change_id}/approve", {"code": bob.code(clock, ahead=1)})
    assert shown.status_code == 200  # type: ignore[attr-defined]
    password = re.search(r'class="secret">([^<]+)<', shown.text)  # type: ignore[attr-defined]
    assert password is not None
    assert password.group(1) not in alice.client.get("/accounts").text
    assert "carol" in {a.username for a in app.accounts.all(OPERATOR)}


def test_console_reset_and_withdraw_and_no_self_disable(app: App, alice: Person,
                                                        bob: Person) -> None:
    assert 'action="/accounts/alice/disable"' not in alice.client.get("/accounts").text
    own = alice.post("/accounts/alice/disable")
    assert own.status_code == 403  # type: ignore[attr-defined]
    assert not app.accounts.get(OPERATOR, "alice").disabled
    reset = alice.post("/accounts/bob/reset-totp")
    assert reset.status_code == 303  # type: ignore[attr-defined]
    assert app.accounts.get(OPERATOR, "bob").totp_enrolled
    change_id = app.authority.pending(OPERATOR)[0].id
    assert bob.post(f"/accounts/changes/{change_id}/withdraw").status_code == 303  # type: ignore[attr-defined]
    assert app.authority.pending(OPERATOR) == []
    event = audit_events(app, "authority:withdraw")[-1]
    assert (event["actor"], event["details"]["proposed_by"]) == ("bob", "alice")
