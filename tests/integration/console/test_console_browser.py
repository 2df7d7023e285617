"""The console end to end in real headless Chromium, against `blindpost serve`.

First sign-in with enrolment, sign-in with a TOTP code, a passkey registered with
Chromium's virtual authenticator and used to sign in, a partner created, a key proposed
by admin A and approved by admin B, both seen in the audit log, an exposure report run,
a third admin proposed by B and approved by A with her passkey (A alone sees its one-time
password), who then signs in and enrols.
Each main page is saved as a screenshot (build/screenshots/) and checked with axe-core.
"""

from __future__ import annotations

import os
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import Browser, Page, expect

from gateway import envelope
from tests.integration.console.browser import (
    BLINDPOST,
    Served,
    check_page,
    chromium,
    new_person,
    serve,
)
from tests.integration.test_notifications import Relay, free_port, make_relay_cert

pytestmark = pytest.mark.integration
NEW_PASSWORD = "a long and private passphrase"


def _code(secret: str, *, ahead: int = 0) -> str:
    """The code ``ahead`` steps on (one step ahead is accepted; each step is used once)."""
    return pyotp.TOTP(secret).at(datetime.now(UTC) + timedelta(seconds=30 * ahead))


def _first_sign_in(page: Page, origin: str, username: str, one_time: str,
                   printed: str | None = None) -> str:
    """Sign in with the one-time password and enrol; return the TOTP secret: the one
    the CLI ``printed`` at the bootstrap (the page then shows none: one enrolment), or the
    one the page shows."""
    page.goto(origin + "/signin")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(one_time)
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(origin + "/signin/enrol")
    if printed is not None:
        expect(page.locator("#secret")).to_have_count(0)
        secret = printed
    else:
        secret = page.locator("#secret").inner_text().strip()
    page.get_by_label("New password (12 to 256 characters").fill(NEW_PASSWORD)
    page.get_by_label("New password again").fill(NEW_PASSWORD)
    page.get_by_label("The 6-digit code your app shows now").fill(_code(secret))
    page.get_by_role("button", name="Save and sign in").click()
    expect(page).to_have_url(origin + "/")
    return secret


def _password(page: Page, origin: str, username: str) -> None:
    page.goto(origin + "/signin")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(origin + "/signin/verify")


def _sign_out(page: Page, origin: str) -> None:
    page.get_by_role("button", name="Sign out").first.click()
    expect(page).to_have_url(origin + "/signin")


def test_console_in_chromium(tmp_path: Path) -> None:
    # A real relay, so that /me's notification forms show every state (a code pending,
    # refusals, an address in force) for axe-core.
    cert = make_relay_cert(tmp_path)
    relay = Relay(free_port(), cert)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BLINDPOST_")},
           "BLINDPOST_DATA_DIR": str(tmp_path / "var"), "BLINDPOST_SFTP_LISTEN": "127.0.0.1:0",
           "BLINDPOST_SFTP_WORKERS": "1", "BLINDPOST_CONSOLE_LISTEN": "127.0.0.1:0",
           "BLINDPOST_NOTIFY_SMTP_HOST": "127.0.0.1",
           "BLINDPOST_NOTIFY_SMTP_PORT": str(relay.controller.port),
           "BLINDPOST_NOTIFY_SMTP_FROM": "blindpost@registry.example",
           "BLINDPOST_NOTIFY_SMTP_CA_FILE": str(cert[0])}
    init = subprocess.run([*BLINDPOST, "init", "--admin", "alice"], env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    found = re.search(r"One-time password for alice: (\S+)", init.stdout)
    assert found, init.stdout
    alice_otp = found.group(1)
    printed = {"alice": _printed_secret(init.stdout)}
    # The second admin is the bootstrap: the operator creates it directly.
    bob = subprocess.run([*BLINDPOST, "user", "add", "bob", "--role", "admin"], env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    found = re.search(r"One-time password for bob: (\S+)", bob.stdout)
    assert found, bob.stdout
    printed["bob"] = _printed_secret(bob.stdout)
    server = serve(env)
    violations: list[dict[str, object]] = []
    try:
        with chromium() as browser:
            _run(browser, server, (alice_otp, found.group(1)), printed, violations, relay)
    finally:
        server.stop()
        relay.stop()
    assert violations == [], violations
    log = server.cli("audit", "log", "--json").stdout
    assert '"method":"password+passkey"' in log
    assert '"method":"password+totp"' in log
    assert '"purpose":"key revoke 1"' in log
    assert '"purpose":"authority approve 1"' in log
    server.cli("audit", "verify")


def _notifications(a: Page, relay: Relay, violations: list[dict[str, object]]) -> None:
    """/me's notification forms in each state, each checked with axe-core."""
    a.get_by_label("Send them to", exact=True).fill("alice@registry.example")
    a.get_by_role("button", name="Send a code").click()
    pending = a.get_by_label("Code sent to alice@registry.example")
    expect(pending).to_be_visible()
    violations += check_page(a, "me-notify-code")
    # A second code at once is refused, by the form, with the address kept.
    a.get_by_label("Send them to", exact=True).fill("alice@registry.example")
    a.get_by_role("button", name="Send a code").click()
    expect(a.locator("#err-notify")).to_contain_text("too many codes asked for")
    expect(a.get_by_label("Send them to", exact=True)).to_have_value("alice@registry.example")
    # The message is read with the field it is about (axe cannot tell).
    expect(a.get_by_label("Send them to", exact=True)).to_have_attribute(
        "aria-describedby", "err-notify notify-hint")
    violations += check_page(a, "me-notify-limited")
    found = re.search(rb"Your code: (\d{8})", relay.messages[-1].content)
    assert found is not None and len(relay.messages) == 1
    code = found.group(1).decode()
    pending.fill("00000000" if code != "00000000" else "11111111")
    a.get_by_role("button", name="Confirm the address").click()
    expect(a.locator("#err-notify-code")).to_contain_text("not the code sent")
    expect(pending).to_have_attribute("aria-describedby", "err-notify-code")
    expect(pending).to_have_attribute("aria-invalid", "true")
    violations += check_page(a, "me-notify-wrong-code")
    pending.fill(code)
    a.get_by_role("button", name="Confirm the address").click()
    expect(a.get_by_text("They go to alice@registry.example")).to_be_visible()
    expect(a.get_by_role("button", name="Turn off and forget the address")).to_be_visible()
    violations += check_page(a, "me-notify-on")


def _printed_secret(output: str) -> str:
    found = re.search(r"TOTP provisioning URI: otpauth://\S+secret=([A-Z2-7]+)", output)
    assert found, output
    return found.group(1)


def _run(browser: Browser, server: Served, otps: tuple[str, str], printed: dict[str, str],
         violations: list[dict[str, object]], relay: Relay) -> None:
    alice_otp, bob_otp = otps
    origin = server.origin
    _, a = new_person(browser)
    a.goto(origin + "/signin")
    violations += check_page(a, "signin")
    secret = _first_sign_in(a, origin, "alice", alice_otp, printed["alice"])
    violations += check_page(a, "dashboard")

    # Sign in again with the password and a TOTP code.
    _sign_out(a, origin)
    _password(a, origin, "alice")
    violations += check_page(a, "verify")
    a.get_by_label("One-time code from your authenticator app").fill(_code(secret, ahead=1))
    a.get_by_role("button", name="Sign in").click()
    expect(a).to_have_url(origin + "/")

    # Register a passkey with the virtual authenticator, then sign in with it.
    a.goto(origin + "/me")
    a.get_by_role("button", name="Register a passkey").click()
    expect(a.get_by_role("cell", name="passkey", exact=True)).to_be_visible()
    violations += check_page(a, "me")
    _notifications(a, relay, violations)
    _sign_out(a, origin)
    _password(a, origin, "alice")
    a.get_by_role("button", name="Use a passkey instead").click()
    expect(a).to_have_url(origin + "/")

    # A partner and a proposed key; a refused form comes back with what was typed and
    # the message by its field, on the page with its menu.
    a.goto(origin + "/partners")
    a.get_by_label("Slug (folder name: lowercase letters, digits, hyphens)").fill("uni-research")
    a.get_by_label("Display name").fill("University Research")
    a.get_by_label("Retention, such as 7d").fill("9O days")
    a.get_by_role("button", name="Create partner").click()
    expect(a.locator("#err-retention")).to_contain_text("retention")
    expect(a.get_by_label("Display name")).to_have_value("University Research")
    expect(a.get_by_role("navigation", name="Main")).to_be_visible()
    violations += check_page(a, "form-error")
    a.get_by_label("Retention, such as 7d").fill("9d")
    a.get_by_role("button", name="Create partner").click()
    expect(a.get_by_role("cell", name="University Research")).to_be_visible()
    violations += check_page(a, "partners")
    recipient = str(envelope.generate_identity().recipient)
    a.goto(origin + "/keys")
    a.get_by_label("Public key (age1pq1… post-quantum, or age1…)").fill(recipient)
    a.get_by_label("Label (who holds the private key)").fill("lab laptop")
    a.get_by_role("button", name="Propose key").click()
    expect(a.get_by_text("Waiting for another admin to approve.")).to_be_visible()

    # Bob signs in for the first time and approves with a fresh code.
    _, b = new_person(browser)
    bob_secret = _first_sign_in(b, origin, "bob", bob_otp, printed["bob"])
    b.goto(origin + "/keys")
    violations += check_page(b, "keys")
    b.get_by_label("Your one-time code").first.fill(_code(bob_secret, ahead=1))
    b.get_by_role("button", name="Approve key 1").click()
    expect(b.locator(".badge", has_text="approved")).to_be_visible()
    violations += check_page(b, "keys-approved")

    # Both decisions are in the audit log.
    b.goto(origin + "/audit?tag=key:propose")
    expect(b.get_by_role("cell", name="alice", exact=True)).to_be_visible()
    b.goto(origin + "/audit?tag=key:approve")
    expect(b.get_by_role("cell", name="bob", exact=True)).to_be_visible()
    b.goto(origin + "/audit")
    violations += check_page(b, "audit")

    # An exposure report for today, as a privacy officer would run it.
    today = datetime.now(UTC).date().isoformat()
    b.goto(origin + "/exposure")
    b.get_by_label("From").fill(today)
    b.get_by_label("To (included)").fill(today)
    b.get_by_role("button", name="Run report").click()
    expect(b.locator("pre.report")).to_contain_text("BLINDPOST EXPOSURE REPORT")
    expect(b.locator("pre.report")).to_contain_text("audit log    verified")
    expect(b.get_by_role("link", name="Download CSV")).to_be_visible()
    violations += check_page(b, "exposure")
    b.goto(origin + "/transfers")
    violations += check_page(b, "transfers")
    b.goto(origin + "/tokens")
    violations += check_page(b, "tokens")

    # Bob proposes a third admin; it waits, and he cannot approve it himself.
    b.goto(origin + "/accounts")
    b.get_by_label("Username").fill("carol")
    b.get_by_label("Role").select_option("admin")
    b.get_by_role("button", name="Create account").click()
    expect(b.get_by_role("heading", name="Change 1: create admin account carol")).to_be_visible()
    expect(b.get_by_text("Waiting for another admin to approve.")).to_be_visible()
    expect(b.get_by_role("button", name="Approve change 1")).to_have_count(0)
    violations += check_page(b, "accounts")

    # Alice approves it with her passkey (a challenge bound to the change) and alone is
    # shown carol's one-time password; carol signs in with it and enrols her own code.
    a.goto(origin + "/accounts")
    a.get_by_role("button", name="Approve with a passkey").click()
    # The approval hashes carol's one-time password (argon2id): slow on a busy machine.
    expect(a.get_by_role("heading", name="Approved: create admin account carol")).to_be_visible(
        timeout=30_000)
    carol_otp = a.locator("dd code.secret").first.inner_text().strip()
    violations += check_page(a, "account-created")
    _, c = new_person(browser)
    _first_sign_in(c, origin, "carol", carol_otp)

    # Alice revokes the key: a step that says what it does, confirmed with her passkey
    # (a challenge bound to the key).
    a.goto(origin + "/keys")
    a.get_by_role("link", name="Revoke key 1…").click()
    expect(a.get_by_role("heading", name="Revoke key 1 of uni-research?")).to_be_visible()
    expect(a.get_by_text("it is uni-research's last approved key")).to_be_visible()
    violations += check_page(a, "confirm-revoke")
    a.get_by_role("button", name="Revoke key 1 with a passkey").click()
    expect(a.locator(".badge", has_text="revoked")).to_be_visible()
