"""The console's sign-in, sessions and browser protections, through its pages and API."""

from __future__ import annotations

import dataclasses
import re

import pytest
from argon2 import PasswordHasher

from gateway import envelope, throttle
from gateway.app import App
from gateway.auth import MAX_CODE_ATTEMPTS
from gateway.console_auth import REFUSED
from gateway.db.models import Account, Role
from gateway.errors import AuthenticationError
from tests.conftest import FakeClock
from tests.unit.admin_ui.console_support import PASSWORD, Person, browser
from tests.unit.gateway.factories import (
    OPERATOR,
    account,
    actor,
    admin_token,
    audit_events,
    ssh_public_key,
)


def _sign_in(app: App, username: str, password: str = PASSWORD) -> tuple[object, object]:
    client = browser(app)
    return client, client.post("/signin", data={"username": username, "password": password},
                               follow_redirects=False)


def _verify(client: object, app: App, code: str) -> object:
    token = client.cookies["blindpost"]  # type: ignore[attr-defined]
    csrf = app.console_auth.resume(token).csrf
    return client.post("/signin/verify", data={"csrf": csrf, "code": code},  # type: ignore[attr-defined]
                       follow_redirects=False)


def test_sign_in_takes_password_then_code_and_is_audited(app: App, clock: FakeClock,
                                                         alice: Person) -> None:
    client, first = _sign_in(app, "alice")
    assert first.headers["location"] == "/signin/verify"  # type: ignore[attr-defined]
    assert client.get("/", follow_redirects=False).headers["location"] == "/signin/verify"  # type: ignore[attr-defined]
    done = _verify(client, app, alice.code(clock, ahead=1))
    assert done.headers["location"] == "/"  # type: ignore[attr-defined]
    assert client.get("/").status_code == 200  # type: ignore[attr-defined]
    success = audit_events(app, "auth:login:success")[-1]
    assert success["actor"] == "alice"
    assert success["details"]["method"] == "password+totp"
    assert success["details"]["source"] == "testclient"


def test_session_token_changes_when_the_second_factor_passes(app: App, clock: FakeClock,
                                                            alice: Person) -> None:
    client, _ = _sign_in(app, "alice")
    before = client.cookies["blindpost"]  # type: ignore[attr-defined]
    _verify(client, app, alice.code(clock, ahead=1))
    assert client.cookies["blindpost"] != before  # type: ignore[attr-defined]
    stolen = browser(app)
    stolen.cookies.set("blindpost", before)
    assert stolen.get("/", follow_redirects=False).headers["location"] == "/signin"


def _throttle(app: App, scope: throttle.Scope, key: str) -> int:
    with app.read() as session:
        return throttle.failures(session, scope=scope, key=key, now=app.clock(),
                                 policy=app.auth.policy)


def _lockouts(app: App) -> set[str]:
    return {e["subject"] for e in audit_events(app, "auth:lockout")}


def test_wrong_passwords_count_against_the_source_not_the_account(
        app: App, clock: FakeClock, alice: Person) -> None:
    """Anyone can type alice's name: that must not lock her out (issue 14)."""
    for _ in range(app.settings.lockout_threshold + 1):
        _, answer = _sign_in(app, "alice", "wrong password!")
        assert answer.status_code == 401  # type: ignore[attr-defined]
        assert REFUSED in answer.text  # type: ignore[attr-defined]
    assert _lockouts(app) == set()
    assert app.accounts.get(OPERATOR, "alice").locked_until is None
    assert _throttle(app, throttle.Scope.ACCOUNT, "alice") == 0
    assert _throttle(app, throttle.Scope.SOURCE, "testclient") == \
        app.settings.lockout_threshold + 1
    client, first = _sign_in(app, "alice")
    assert first.headers["location"] == "/signin/verify"  # type: ignore[attr-defined]
    assert _verify(client, app, alice.code(clock, ahead=1)).headers["location"] == "/"  # type: ignore[attr-defined]


def test_a_held_back_source_is_slowed_and_told_so(app: App, clock: FakeClock,
                                                  alice: Person) -> None:
    strict = App(dataclasses.replace(app.settings, source_throttle_threshold=3),
                 clock=app.clock)
    for name in ("nobody", "alice", "alice"):
        _, answer = _sign_in(strict, name, "wrong password!")
        # An unknown name and a known one with a wrong password read the same.
        assert REFUSED in answer.text  # type: ignore[attr-defined]
    assert _lockouts(strict) == {"source:testclient"}
    _, held = _sign_in(strict, "alice")  # The right password: not even checked now.
    assert held.status_code == 401  # type: ignore[attr-defined]
    assert "too many failed sign-ins from this address" in held.text  # type: ignore[attr-defined]
    assert audit_events(strict, "auth:login:failure")[-1]["details"]["reason"].startswith(
        "source held back until")
    assert _throttle(strict, throttle.Scope.SOURCE, "testclient") == 3  # Not counted further.
    clock.advance(seconds=strict.settings.source_backoff_seconds + 1)
    _, first = _sign_in(strict, "alice")
    assert first.headers["location"] == "/signin/verify"  # type: ignore[attr-defined]


def test_wrong_codes_count_once_per_sign_in_and_end_it(app: App, clock: FakeClock,
                                                       alice: Person) -> None:
    client, _ = _sign_in(app, "alice")
    for attempt in range(1, MAX_CODE_ATTEMPTS + 1):
        answer = _verify(client, app, "000000")
        assert answer.status_code == 401  # type: ignore[attr-defined]
        assert "wrong code" in answer.text  # type: ignore[attr-defined]
        assert _throttle(app, throttle.Scope.ACCOUNT, "alice") == 1
        assert ("this sign-in has ended" in answer.text) == (attempt == MAX_CODE_ATTEMPTS)  # type: ignore[attr-defined]
    assert client.get("/signin/verify", follow_redirects=False).headers["location"] == \
        "/signin"  # type: ignore[attr-defined]
    assert _throttle(app, throttle.Scope.SOURCE, "testclient") == 0
    reasons = [e["details"] for e in audit_events(app, "auth:login:failure")]
    assert [(r["reason"], r["factor"]) for r in reasons] == [("wrong code", "totp")] * 3


def test_account_locks_after_wrong_codes_and_says_so_only_to_its_holder(
        app: App, clock: FakeClock, alice: Person, bob: Person) -> None:
    for _ in range(app.settings.lockout_threshold):
        client, _ = _sign_in(app, "alice")
        _verify(client, app, "000000")
    assert _lockouts(app) == {"account:alice"}
    _, stranger = _sign_in(app, "alice", "wrong password!")
    assert REFUSED in stranger.text  # type: ignore[attr-defined]
    assert "locked" not in stranger.text  # type: ignore[attr-defined]
    _, holder = _sign_in(app, "alice")
    assert holder.status_code == 401  # type: ignore[attr-defined]
    assert "account locked until 2026-11-02 09:15 UTC" in holder.text  # type: ignore[attr-defined]
    # bob, at the same address, is not held back by alice's mistakes.
    other, _ = _sign_in(app, "bob")
    assert _verify(other, app, bob.code(clock, ahead=1)).headers["location"] == "/"  # type: ignore[attr-defined]
    assert app.accounts.get(OPERATOR, "alice").locked_until is not None
    app.auth.unlock(OPERATOR, username="alice")
    client, _ = _sign_in(app, "alice")
    assert _verify(client, app, alice.code(clock, ahead=1)).headers["location"] == "/"  # type: ignore[attr-defined]


def test_a_used_code_is_named_after_the_password(app: App, clock: FakeClock,
                                                 alice: Person) -> None:
    code = alice.code(clock, ahead=1)
    client, _ = _sign_in(app, "alice")
    assert _verify(client, app, code).headers["location"] == "/"  # type: ignore[attr-defined]
    again, _ = _sign_in(app, "alice")
    answer = _verify(again, app, code)
    assert "code already used - wait for the next one" in answer.text  # type: ignore[attr-defined]


def test_unknown_user_staff_and_partner_cannot_sign_in(app: App) -> None:
    account(app, "clerk", Role.STAFF)
    for name in ("nobody", "clerk"):
        _, answer = _sign_in(app, name, "whatever password")
        assert answer.status_code == 401  # type: ignore[attr-defined]
        assert REFUSED in answer.text  # type: ignore[attr-defined]
    reasons = [e["details"]["reason"] for e in audit_events(app, "auth:login:failure")]
    assert reasons == ["unknown account", "staff accounts have no console access"]


def test_first_sign_in_cannot_skip_enrolment(app: App) -> None:
    new = app.accounts.add(OPERATOR, username="carol", role=Role.ADMIN)
    assert new.one_time_password is not None
    client, answer = _sign_in(app, "carol", new.one_time_password)
    assert answer.headers["location"] == "/signin/enrol"  # type: ignore[attr-defined]
    for page in ("/", "/partners", "/signin/verify"):
        assert client.get(page, follow_redirects=False).status_code in (303, 400)  # type: ignore[attr-defined]
    api = client.get("/api/v1/partners")  # type: ignore[attr-defined]
    assert api.status_code == 401
    assert api.headers["content-type"] == "application/problem+json"


def test_enrolment_refuses_the_one_time_password_and_short_ones(app: App, clock: FakeClock) -> None:
    new = app.accounts.add(OPERATOR, username="carol", role=Role.ADMIN)
    assert new.one_time_password is not None
    client, _ = _sign_in(app, "carol", new.one_time_password)
    page = client.get("/signin/enrol").text  # type: ignore[attr-defined]
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    for password in (new.one_time_password, "short"):
        answer = client.post("/signin/enrol", data={  # type: ignore[attr-defined]
            "csrf": csrf, "password": password, "repeat": password, "code": "000000"})
        assert answer.status_code == 400
    assert "first sign-in" in client.get("/signin/enrol").text.lower()  # type: ignore[attr-defined]


def test_password_is_rehashed_when_parameters_change(app: App, clock: FakeClock,
                                                     alice: Person) -> None:
    weak = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1).hash(PASSWORD)
    with app.transaction() as session:
        row = session.query(Account).filter_by(username="alice").one()
        row.password_hash = weak
    _sign_in(app, "alice")
    with app.read() as session:
        stored = session.query(Account).filter_by(username="alice").one().password_hash
    assert stored != weak
    assert stored is not None
    assert stored.startswith("$argon2id$")


def test_csrf_token_is_required_on_every_change(app: App, alice: Person) -> None:
    missing = alice.client.post("/partners", data={"slug": "x"}, follow_redirects=False)
    wrong = alice.client.post("/partners", data={"slug": "x", "csrf": "forged"},
                              follow_redirects=False)
    api = alice.client.post("/api/v1/partners", json={"slug": "x"})
    assert (missing.status_code, wrong.status_code, api.status_code) == (403, 403, 403)
    assert app.partners.all(OPERATOR) == []
    denied = audit_events(app, "access:denied")
    assert len(denied) == 3
    assert all(e["subject"] == "console:csrf" and e["actor"] == "alice" for e in denied)


def test_cross_origin_post_is_refused_even_with_the_token(app: App, alice: Person) -> None:
    answer = alice.client.post("/partners", data={"slug": "x", "csrf": alice.csrf},
                               headers={"origin": "https://evil.example"},
                               follow_redirects=False)
    assert answer.status_code == 403
    assert app.partners.all(OPERATOR) == []
    cross_site = alice.client.post("/partners", data={"slug": "x", "csrf": alice.csrf},
                                   headers={"sec-fetch-site": "cross-site", "origin": "null"})
    assert cross_site.status_code == 403
    signin = browser(app).post("/signin", data={"username": "alice", "password": PASSWORD},
                               headers={"origin": "https://evil.example"})
    assert signin.status_code == 403
    denied = audit_events(app, "access:denied")
    assert [e["subject"] for e in denied] == ["console:cross-site"] * 3
    assert [e["actor"] for e in denied] == ["alice"] * 3


def test_other_host_names_are_redirected_or_refused(app: App, alice: Person) -> None:
    read = alice.client.get("/", headers={"host": "rebound.example:8443"},
                            follow_redirects=False)
    assert read.status_code == 308
    assert read.headers["location"] == "http://localhost:8443/"
    write = alice.client.post("/partners", data={"slug": "x", "csrf": alice.csrf},
                              headers={"host": "rebound.example:8443"})
    assert write.status_code == 421


def test_security_headers_and_cookie(app: App, alice: Person) -> None:
    page = alice.client.get("/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "publickey-credentials-get=(self)" in page.headers["permissions-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert "strict-transport-security" not in page.headers  # Plain HTTP here.
    assert "<script>" not in page.text
    assert " style=" not in page.text
    _, signin = _sign_in(app, "alice")
    cookie = signin.headers["set-cookie"]  # type: ignore[attr-defined]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "samesite=strict" in cookie.lower()


def test_cookie_is_host_prefixed_and_hsts_sent_under_tls(app: App, alice: Person) -> None:
    from fastapi.testclient import TestClient

    from admin_ui.web import create_app

    secure = dataclasses.replace(app.settings, console_origin="https://console.example")
    tls_app = App(secure, clock=app.clock)
    client = TestClient(create_app(tls_app), base_url="https://console.example",
                        headers={"origin": "https://console.example"})
    answer = client.post("/signin", data={"username": "alice", "password": PASSWORD},
                         follow_redirects=False)
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("__Host-blindpost=")
    assert "Secure" in cookie
    assert "Path=/" in cookie
    assert "Domain" not in cookie
    assert answer.headers["strict-transport-security"].startswith("max-age=")
    tls_app.close()


def test_session_ends_after_15_idle_minutes(app: App, clock: FakeClock, alice: Person) -> None:
    clock.advance(minutes=14)
    assert alice.client.get("/", follow_redirects=False).status_code == 200
    clock.advance(minutes=15, seconds=1)
    gone = alice.client.get("/", follow_redirects=False)
    assert gone.headers["location"] == "/signin"
    assert alice.client.get("/api/v1/me").status_code == 401


def test_session_ends_after_8_hours_however_busy(app: App, clock: FakeClock,
                                                alice: Person) -> None:
    for _ in range(47):
        clock.advance(minutes=10)
        assert alice.client.get("/api/v1/me").status_code == 200
    clock.advance(minutes=10, seconds=1)
    assert alice.client.get("/api/v1/me").status_code == 401


def test_sign_out_everywhere_ends_every_session(app: App, clock: FakeClock,
                                               alice: Person) -> None:
    second, _ = _sign_in(app, "alice")
    _verify(second, app, alice.code(clock, ahead=1))
    assert second.get("/api/v1/me").status_code == 200  # type: ignore[attr-defined]
    alice.post("/signout", {"everywhere": "yes"})
    assert second.get("/api/v1/me").status_code == 401  # type: ignore[attr-defined]
    assert alice.client.get("/api/v1/me").status_code == 401
    assert audit_events(app, "auth:logout")[-1]["details"]["sessions"] == 2


def test_disabling_an_account_ends_its_sessions(app: App, alice: Person, bob: Person) -> None:
    alice.post("/accounts/bob/disable")
    assert bob.client.get("/api/v1/me").status_code == 401


def _proposed_key(app: App, person: Person) -> int:
    app.partners.add(OPERATOR, slug="uni")
    recipient = str(envelope.generate_identity().recipient)
    answer = person.post("/keys", {"partner": "uni", "recipient": recipient})
    assert answer.status_code == 303  # type: ignore[attr-defined]
    return app.keys.all(OPERATOR)[0].id


def test_approval_by_the_proposer_is_refused(app: App, clock: FakeClock, alice: Person) -> None:
    key_id = _proposed_key(app, alice)
    answer = alice.post(f"/keys/{key_id}/approve", {"code": alice.code(clock, ahead=1)})
    assert answer.status_code == 403  # type: ignore[attr-defined]
    assert "two-person rule" in answer.text  # type: ignore[attr-defined]
    assert app.keys.all(OPERATOR)[0].state.value == "proposed"


def test_approval_needs_a_fresh_second_factor(app: App, clock: FakeClock, alice: Person,
                                             bob: Person) -> None:
    key_id = _proposed_key(app, alice)
    without = bob.post(f"/keys/{key_id}/approve")
    assert without.status_code == 400  # type: ignore[attr-defined]
    assert "fresh second factor" in without.text  # type: ignore[attr-defined]
    wrong = bob.post(f"/keys/{key_id}/approve", {"code": "123456"})
    assert wrong.status_code == 401  # type: ignore[attr-defined]
    replayed = bob.post(f"/keys/{key_id}/approve", {"code": bob.code(clock)})
    assert replayed.status_code == 401  # type: ignore[attr-defined]  # Used at sign-in.
    assert app.keys.all(OPERATOR)[0].state.value == "proposed"
    done = bob.post(f"/keys/{key_id}/approve", {"code": bob.code(clock, ahead=1)})
    assert done.status_code == 303  # type: ignore[attr-defined]
    assert app.keys.all(OPERATOR)[0].approved_by == "bob"
    step_up = audit_events(app, "auth:stepup:success")[-1]
    assert step_up["details"]["purpose"] == f"key approve {key_id}"
    approve = audit_events(app, "key:approve")[-1]
    assert approve["actor"] == "bob"
    assert approve["details"]["client"] == "console"


def test_session_actor_alone_cannot_approve_in_the_core(app: App, alice: Person,
                                                        bob: Person) -> None:
    from gateway.errors import AuthorizationError

    key_id = _proposed_key(app, alice)
    session_actor = app.console_auth.resume(bob.token).actor
    with pytest.raises(AuthorizationError, match="fresh second factor"):
        app.keys.approve(session_actor, key_id=key_id)


def test_a_token_can_never_approve_or_revoke_a_key(app: App, alice: Person) -> None:
    key_id = _proposed_key(app, alice)
    token = admin_token(app, "robot")
    client = browser(app)
    for verb in ("approve", "revoke"):
        answer = client.post(f"/api/v1/keys/{key_id}/{verb}", json={"code": "123456"},
                             headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 403
        assert answer.json()["type"] == "urn:blindpost:problem:forbidden"
    assert app.keys.all(OPERATOR)[0].state.value == "proposed"
    assert [e["actor"] for e in audit_events(app, "access:denied")] == ["token:robot"] * 2


def test_token_expiry_and_revocation(app: App, clock: FakeClock) -> None:
    from datetime import timedelta

    token = app.tokens.create(OPERATOR, name="robot", role=Role.AUDITOR,
                              lifetime=timedelta(days=1)).token
    other = app.tokens.create(OPERATOR, name="other", role=Role.AUDITOR).token
    client = browser(app)

    def status(secret: str) -> int:
        return client.get("/api/v1/partners",
                          headers={"Authorization": f"Bearer {secret}"}).status_code

    assert status(token) == 200
    assert app.tokens.all(OPERATOR)[1].last_used_at == clock()
    clock.advance(days=1, seconds=1)
    assert status(token) == 401
    assert status(other) == 200
    app.tokens.revoke(OPERATOR, name="other")
    assert status(other) == 401
    reasons = [e["details"]["reason"] for e in audit_events(app, "auth:login:failure")]
    assert reasons == ["expired token", "revoked token"]


def test_auditor_reads_but_changes_nothing(app: App, audrey: Person) -> None:
    for page in ("/", "/partners", "/accounts", "/keys", "/transfers", "/audit"):
        assert audrey.client.get(page).status_code == 200
    assert audrey.post("/partners", {"slug": "x"}).status_code == 403  # type: ignore[attr-defined]
    assert audrey.client.get("/tokens").status_code == 403
    verified = audrey.post("/audit/verify")
    assert verified.status_code == 200  # type: ignore[attr-defined]
    assert "audit log OK" in verified.text  # type: ignore[attr-defined]
    assert audit_events(app, "audit:verify")[-1]["actor"] == "audrey"


def test_passkey_policy_sends_admins_to_register_one(app: App, clock: FakeClock,
                                                    alice: Person) -> None:
    strict = App(dataclasses.replace(app.settings, console_require_passkey=True), clock=clock)
    client = browser(strict)
    client.post("/signin", data={"username": "alice", "password": PASSWORD})
    answer = _verify(client, strict, alice.code(clock, ahead=1))
    assert answer.headers["location"] == "/signin/passkey"  # type: ignore[attr-defined]
    assert client.get("/", follow_redirects=False).headers["location"] == "/signin/passkey"
    assert client.get("/api/v1/me").status_code == 401
    strict.close()


def test_problem_documents_for_errors(app: App, alice: Person) -> None:
    answer = alice.client.get("/api/v1/partners/nope")
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body == {"type": "urn:blindpost:problem:not-found", "title": "Not found",
                    "status": 404, "detail": "unknown partner 'nope'",
                    "instance": "/api/v1/partners/nope"}
    invalid = alice.client.post("/api/v1/partners", json={"slug": 5},
                                headers={"X-CSRF-Token": alice.csrf})
    assert invalid.status_code == 422
    assert invalid.json()["type"] == "urn:blindpost:problem:invalid-request"


def test_pages_escape_what_users_typed(app: App, alice: Person) -> None:
    alice.post("/partners", {"slug": "uni", "name": "<script>alert(1)</script>"})
    page = alice.client.get("/partners").text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_admin_flow_through_pages(app: App, clock: FakeClock, alice: Person) -> None:
    assert alice.post("/partners", {"slug": "uni", "retention": "5d"}).status_code == 303  # type: ignore[attr-defined]
    alice.post("/partners/uni", {"retention": "3d", "max_downloads": "2", "name": "Uni"})
    assert app.partners.get(OPERATOR, "uni").max_downloads == 2
    # A staff account enrols by SSH (its key is needed): the console shows no secret.
    keyless = alice.post("/accounts", {"username": "dr-lee", "role": "staff"})
    assert keyless.status_code == 400  # type: ignore[attr-defined]
    assert "give its SSH public key" in keyless.text  # type: ignore[attr-defined]
    created = alice.post("/accounts", {"username": "dr-lee", "role": "staff",
                                       "ssh_key": ssh_public_key().openssh()})
    assert created.headers["location"] == "/accounts/dr-lee"  # type: ignore[attr-defined]
    assert app.accounts.get(OPERATOR, "dr-lee").enrolment == "pending"
    alice.post("/accounts/dr-lee/disable")
    assert app.accounts.get(OPERATOR, "dr-lee").disabled
    alice.post("/accounts/dr-lee/enable")
    assert not app.accounts.get(OPERATOR, "dr-lee").disabled
    made = alice.post("/tokens", {"name": "ci", "role": "auditor", "expires_days": "30"})
    assert "bpt_" in made.text  # type: ignore[attr-defined]
    alice.post("/tokens/ci/revoke")
    assert app.tokens.all(OPERATOR)[0].state == "revoked"
    assert actor(app, "alice").name == "alice"


def test_rows_injected_into_the_database_grant_nothing(app: App, alice: Person) -> None:
    """A SQL injection that writes a token or a session, or lifts a half-done sign-in past
    its second factor, gets no access; each attempt is an integrity:violation event."""
    import hashlib

    from sqlalchemy import text

    forged_token = "bpt_" + "x" * 43
    stolen = hashlib.sha256(b"stolen-session").hexdigest()
    pending, _ = _sign_in(app, "alice")  # Password only: waiting for the code.
    pending_id = hashlib.sha256(pending.cookies["blindpost"].encode()).hexdigest()  # type: ignore[attr-defined]
    with app.engine.begin() as db:
        db.execute(text("INSERT INTO api_tokens (name, role, token_hash, created_by, created_at)"
                        " VALUES ('evil', 'admin', :h, 'nobody', '2026-11-02 09:00:00')"),
                   {"h": hashlib.sha256(forged_token.encode()).hexdigest()})
        db.execute(text("INSERT INTO console_sessions (id, account_id, stage, csrf, created_at,"
                        " last_seen_at, source, client) SELECT :h, id, 'full', 'c',"
                        " '2026-11-02 09:00:00', '2026-11-02 09:00:00', 'x', '' FROM accounts"
                        " WHERE username = 'alice'"), {"h": stolen})
        db.execute(text("UPDATE console_sessions SET stage = 'full' WHERE id = :id"),
                   {"id": pending_id})
    client = browser(app)
    answer = client.get("/api/v1/me", headers={"Authorization": f"Bearer {forged_token}"})
    assert answer.status_code == 401
    client.cookies.set("blindpost", "stolen-session")
    assert client.get("/api/v1/me").status_code == 401
    assert pending.get("/api/v1/me").status_code == 401  # type: ignore[attr-defined]
    violations = {e["subject"] for e in audit_events(app, "integrity:violation")}
    assert violations == {"api_tokens:1", f"console_sessions:{stolen}",
                          f"console_sessions:{pending_id}"}
    assert alice.client.get("/api/v1/me").status_code == 200


def test_accounts_page_is_honest_about_locks_and_enrolment(app: App, alice: Person,
                                                            bob: Person) -> None:
    app.accounts.add(OPERATOR, username="lee", role=Role.STAFF, enrol_by_ssh=True)
    for _ in range(app.settings.lockout_threshold):
        with pytest.raises(AuthenticationError):
            app.auth.prove(username="bob", code="000000", source="192.0.2.9", purpose="test")
    page = alice.client.get("/accounts").text
    assert "locked until 2026-11-02 09:15 UTC" in page
    assert "enrol by SSH until 2026-11-05 09:00 UTC" in page
    assert alice.post("/accounts/bob/unlock").status_code == 303  # type: ignore[attr-defined]
    assert app.accounts.get(OPERATOR, "bob").state == "active"
    assert audit_events(app, "account:unlock")[-1]["actor"] == "alice"
    app.partners.add(OPERATOR, slug="uni")
    app.partners.disable(OPERATOR, slug="uni")
    assert alice.post("/partners/uni/enable").status_code == 303  # type: ignore[attr-defined]
    assert not app.partners.get(OPERATOR, "uni").disabled
    assert audit_events(app, "partner:enable")[-1]["actor"] == "alice"


def test_a_revoked_token_put_back_grants_nothing(app: App, alice: Person) -> None:
    """Current state through the API: the revoked token's row is written back as it was
    while valid, seal and all; the token still gets 401, and the console session of a
    signed-out admin put back is refused the same way."""
    from sqlalchemy import text

    secret = app.tokens.create(OPERATOR, name="robot", role=Role.AUDITOR).token
    client = browser(app)
    with app.engine.connect() as connection:
        [valid] = [dict(row._mapping) for row in
                   connection.execute(text("SELECT * FROM api_tokens WHERE name = 'robot'"))]
    app.tokens.revoke(OPERATOR, name="robot")
    with app.engine.begin() as connection:
        connection.execute(text("UPDATE api_tokens SET revoked_at = :revoked_at, seal = :seal "
                                "WHERE id = :id"), valid)
    answer = client.get("/api/v1/partners", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 401
    [violation] = [e for e in audit_events(app, "integrity:violation")
                   if e["details"]["table"] == "api_tokens"]
    assert "not current" in violation["details"]["reason"]

    assert alice.client.get("/partners").status_code == 200
    with app.engine.connect() as connection:
        kept = [dict(row._mapping) for row in connection.execute(text(
            "SELECT * FROM console_sessions WHERE account_id = (SELECT id FROM accounts "
            "WHERE username = 'alice')"))]
    cookie = alice.token
    alice.post("/signout")
    with app.engine.begin() as connection:
        for row in kept:
            columns = ", ".join(row)
            connection.execute(text(f"INSERT INTO console_sessions ({columns}) VALUES "
                                    f"({', '.join(':' + name for name in row)})"), row)
    alice.client.cookies.set("blindpost", cookie)
    answer = alice.client.get("/partners", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/signin")
    assert any(e["details"]["table"] == "console_sessions"
               for e in audit_events(app, "integrity:violation"))
