"""One error pattern for every form, confirmations that state the consequence, and
passwords (issue 23): in-process, through the pages."""

from __future__ import annotations

import re

from gateway.app import App
from gateway.db.models import Role
from tests.conftest import FakeClock
from tests.unit.admin_ui.console_support import PASSWORD, Person, browser
from tests.unit.gateway.factories import (
    OPERATOR,
    account,
    actor,
    add_console_account,
    audit_events,
    partner_with_key,
)


def _field_error(page: str, error_id: str) -> str:
    found = re.search(rf'<p class="error field-error" id="{error_id}" role="alert">([^<]*)</p>',
                      page)
    assert found is not None, page
    return found.group(1)


def test_a_refused_form_comes_back_with_what_was_typed_and_the_message_by_the_field(
        alice: Person) -> None:
    answer = alice.post("/partners", {"slug": "uni-research", "name": "Uni Research",
                                      "retention": "90s0", "max_downloads": "3"})
    assert answer.status_code == 400  # type: ignore[attr-defined]
    page = answer.text  # type: ignore[attr-defined]
    assert "retention" in _field_error(page, "err-retention")
    assert 'id="retention" name="retention" value="90s0" aria-invalid="true"' in page
    assert 'value="uni-research"' in page and 'value="Uni Research"' in page
    assert '<nav aria-label="Main">' in page  # The page's own menu, no dead end.
    bad_slug = alice.post("/partners", {"slug": "Uni Research"})
    assert bad_slug.status_code == 400  # type: ignore[attr-defined]
    assert "invalid partner slug" in _field_error(bad_slug.text, "err-slug")  # type: ignore[attr-defined]


def test_a_wrong_code_shows_the_confirmation_again_with_its_consequence(
        app: App, alice: Person, bob: Person, clock: FakeClock) -> None:
    partner_with_key(app, "uni")
    account(app, "clerk", Role.STAFF)
    upload = app.transfers.begin_upload(actor(app, "clerk"), partner="uni", name="a.csv")
    upload.write(b"rows")
    upload.commit()
    confirm = alice.client.get("/keys/1/revoke")
    assert confirm.status_code == 200
    assert "this purges 1 waiting file for uni now" in confirm.text
    assert "uni&#39;s last approved key" in confirm.text
    wrong = alice.post("/keys/1/revoke", {"code": "000000"})
    assert wrong.status_code == 401  # type: ignore[attr-defined]
    assert "this purges 1 waiting file for uni now" in wrong.text  # type: ignore[attr-defined]
    assert "wrong code" in _field_error(wrong.text, "confirm-error")  # type: ignore[attr-defined]
    assert [k.state.value for k in app.keys.all(OPERATOR)] == ["approved"]
    done = alice.post("/keys/1/revoke", {"code": alice.code(clock, ahead=1)})
    assert done.status_code == 303, done.text  # type: ignore[attr-defined]
    assert audit_events(app, "file:purge")[-1]["details"]["reason"] == "key revoked"


def test_disabling_states_the_consequence_and_guards_the_two_person_rule(
        app: App, alice: Person, bob: Person) -> None:
    app.partners.add(OPERATOR, slug="lab")
    confirm = alice.client.get("/partners/lab/disable")
    assert "Disable partner lab?" in confirm.text and "no file is waiting for it" in confirm.text
    assert 'action="/partners/lab/disable"' in confirm.text
    own = alice.client.get("/accounts/alice/disable")
    assert own.status_code == 403
    assert "nobody disables their own account" in own.text
    assert '<nav aria-label="Main">' in own.text
    # alice and bob are the only admins with a usable factor (root-admin is the third).
    app.accounts.disable(OPERATOR, username="root-admin")
    starved = alice.client.get("/accounts/bob/disable")
    assert starved.status_code == 403 and "fewer than 2 active admins" in starved.text


def test_a_password_is_changed_with_the_current_one_and_a_fresh_code(
        app: App, alice: Person, clock: FakeClock) -> None:
    differ = alice.post("/me/password", {"current_password": PASSWORD,
                                         "new_password": "a brand new phrase",
                                         "repeat": "a brand new phrase!",
                                         "code": alice.code(clock)})
    assert differ.status_code == 400  # type: ignore[attr-defined]
    assert _field_error(differ.text, "err-repeat") == "the two new passwords differ"  # type: ignore[attr-defined]
    wrong = alice.post("/me/password", {"current_password": "not my password",
                                        "new_password": "a brand new phrase",
                                        "repeat": "a brand new phrase",
                                        "code": alice.code(clock, ahead=1)})
    assert wrong.status_code == 401  # type: ignore[attr-defined]
    assert "current password is wrong" in wrong.text  # type: ignore[attr-defined]
    clock.advance(seconds=60)  # The code was used up by the refused attempt.
    done = alice.post("/me/password", {"current_password": PASSWORD,
                                       "new_password": "a brand new phrase",
                                       "repeat": "a brand new phrase",
                                       "code": alice.code(clock)})
    assert done.status_code == 200 and "Your password is changed" in done.text  # type: ignore[attr-defined]
    assert [e["tag"] for e in audit_events(app, "account:password:failure")] == [
        "account:password:failure"]
    assert audit_events(app, "account:password:change")[-1]["actor"] == "alice"


def test_a_refused_button_shows_its_page_with_the_message_on_top(app: App,
                                                                 alice: Person) -> None:
    app.partners.add(OPERATOR, slug="lab")
    again = alice.post("/partners/lab/enable")
    assert again.status_code == 409  # type: ignore[attr-defined]
    page = again.text  # type: ignore[attr-defined]
    assert re.search(r'<p class="error" role="alert" id="page-error">[^<]*already enabled', page)
    assert "<h1>Partners</h1>" in page and '<nav aria-label="Main">' in page


def test_a_password_reset_keeps_the_factor_and_the_holder_may_approve_it(
        app: App, alice: Person, bob: Person, clock: FakeClock) -> None:
    proposed = alice.post("/accounts/bob/reset-password")
    assert proposed.status_code == 303  # type: ignore[attr-defined]
    change = app.authority.pending(OPERATOR)[0]
    assert change.summary == "reset the password of bob (their second factor stays)"
    assert f'action="/accounts/changes/{change.id}/approve"' in bob.client.get("/accounts").text
    shown = bob.post(f"/accounts/changes/{change.id}/approve", {"code": bob.code(clock, ahead=1)})
    assert shown.status_code == 200, shown.text  # type: ignore[attr-defined]
    found = re.search(r'<code class="secret">([^<]+)</code>', shown.text)  # type: ignore[attr-defined]
    assert found is not None
    client = browser(app)
    signed = client.post("/signin", data={"username": "bob", "password": found.group(1)},
                         follow_redirects=False)
    assert signed.headers["location"] == "/signin/enrol"
    page = client.get("/signin/enrol")
    assert 'id="secret"' not in page.text and "No new secret is made" in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    clock.advance(seconds=60)
    fresh = "a fresh long phrase"
    done = client.post("/signin/enrol", data={"csrf": csrf.group(1), "password": fresh,
                                              "repeat": fresh, "code": bob.code(clock)},
                       follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/", done.text
    assert audit_events(app, "account:password:reset")[-1]["subject"] == "account:bob"


def test_a_first_sign_in_with_a_kept_factor_counts_wrong_codes(app: App) -> None:
    new = add_console_account(app, "dora", Role.AUDITOR)
    assert new.totp_uri is not None and new.one_time_password is not None  # The bootstrap.
    client = browser(app)
    client.post("/signin", data={"username": "dora", "password": new.one_time_password})
    page = client.get("/signin/enrol")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    for _ in range(3):
        answer = client.post("/signin/enrol", data={
            "csrf": csrf.group(1), "password": PASSWORD, "repeat": PASSWORD, "code": "000000"})
        assert answer.status_code in (400, 401), answer.text
    assert "this sign-in has ended" in answer.text and "<h1>Sign in</h1>" in answer.text
    assert [e["details"]["reason"] for e in audit_events(app, "auth:login:failure")
            ][-3:] == ["wrong code"] * 3
