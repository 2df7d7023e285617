"""The staff upload page end to end in real headless Chromium, against `blindpost serve`.

A staff member signs in with their one-time code and registers a passkey (Chromium's
virtual authenticator), sees the partner's approved key by the fingerprint
`blindpost keygen` printed and its agreement, and uploads a 256 MiB file that the page
encrypts with typage as it reads it and sends in ordered parts, under the pages' real
CSP. The partner downloads it over SFTP (OpenSSH) and decrypts it with `age` (the
reference CLI): the SHA-256 matches, and the store, database and logs hold no byte of
the canary placed in the file. Refusals are shown on the page, store nothing and are
audited with their reason: a column outside the agreement, a payload that is not
ciphertext (the page's part is swapped for plaintext on its way), and keys that changed
after the page was loaded. Without JavaScript the page says what to use instead.
axe-core checks the page.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from gateway.portal_code import parse
from tests.integration.console.browser import (
    Served,
    allow_axe,
    check_page,
    chromium,
    new_person,
    serve,
)
from tests.integration.test_end_to_end import Operator, _sftp
from tests.unit.sftp_server.harness import require_tool

pytestmark = pytest.mark.integration
CANARY = b"PATIENT-4711,1990-02-03,preeclampsia\n"
SIZE = 256 * 1024 * 1024
HEADER = b"HCN,Birth Date\n"


def _step() -> int:
    return int(time.time() // 30)


def _as(op: Operator, name: str, step: int, *args: str) -> subprocess.CompletedProcess[str]:
    """An admin command with the code of time step ``step`` (±1 step is accepted, each
    step once per account: several commands in one window use several steps)."""
    return op(*args, "--by", name, stdin=pyotp.TOTP(op.secrets[name]).at(step * 30) + "\n")


def _approved_key(op: Operator, file: str, steps: tuple[int, int]) -> str:
    """A classic key (age 1.1 opens it) for uni, proposed by alice, approved by bob;
    its fingerprint."""
    printed = op("keygen", "--classic", "-o", file).stderr
    recipient = printed.split("Public key: ")[1].split()[0]
    key = json.loads(_as(op, "alice", steps[0], "key", "propose", "uni", recipient,
                         "--json").stdout)
    _as(op, "bob", steps[1], "key", "approve", str(key["id"]))
    return printed.split("Fingerprint: x25519 ")[1].split()[0]


def _big_file(path: Path) -> str:
    """A CSV header, then random bytes with the canary in the middle; its SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for piece in (HEADER, os.urandom(SIZE // 2 - len(HEADER)), CANARY,
                      os.urandom(SIZE - SIZE // 2 - len(CANARY))):
            out.write(piece)
            digest.update(piece)
    return digest.hexdigest()


def test_staff_upload_in_chromium(tmp_path: Path) -> None:
    op = Operator(tmp_path)
    op.env["BLINDPOST_SFTP_WORKERS"] = "1"
    op("init", "--admin", "alice")
    op("user", "add", "bob", "--role", "admin")
    op("partner", "add", "uni")
    clerk = op.add_sftp_user("clerk", "--role", "staff")
    lee = op.add_sftp_user("dr-lee", "--role", "partner", "--partner", "uni")
    # Steps now and now + 1 stay accepted until the clock is two steps on (a minute);
    # now - 1 was refused whenever a step ended between here and the approval.
    now = _step()
    fingerprint = _approved_key(op, "uni.key", (now, now))
    change = json.loads(_as(op, "alice", now + 1, "agreement", "propose", "uni",
                            "--columns", "hcn,birth_date", "--json").stdout)
    _as(op, "bob", now + 1, "agreement", "approve", str(change["pending"]["id"]))
    sha256 = _big_file(tmp_path / "extract.csv")
    server = serve(op.env)
    port = int(re.search(r"sftp\s+listening on 127\.0\.0\.1:(\d+)",  # type: ignore[union-attr]
                         "".join(server.output)).group(1))
    violations: list[dict[str, object]] = []
    try:
        # The first passkey rests on the SSH key too: the code read over SFTP.
        _sftp(op, port, "clerk", clerk, ["get .portal-enrolment clerk-enrolment.txt"])
        enrolment = parse((op.root / "clerk-enrolment.txt").read_text()).code
        with chromium() as browser:
            _run(browser, server, op, (clerk, enrolment), fingerprint, violations,
                 unused_step=now + 2)
        _sftp(op, port, "dr-lee", lee, ["get extract.csv.age"])
    finally:
        server.stop()
    assert violations == [], violations
    opened = subprocess.run([require_tool("age"), "-d", "-i", str(tmp_path / "uni.key"),
                             str(tmp_path / "extract.csv.age")], capture_output=True,
                            check=True, timeout=120)
    assert hashlib.sha256(opened.stdout).hexdigest() == sha256
    _no_canary(tmp_path / "var")
    _audited(server)


def _run(browser: Browser, server: Served, op: Operator, clerk: tuple[str, str],
         fingerprint: str, violations: list[dict[str, object]], *,
         unused_step: int) -> None:
    """The clerk's session in Chromium; ``unused_step`` is the first TOTP step no
    admin has used yet."""
    origin = server.origin
    context, page = new_person(browser, enforce_csp=True)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    _sign_in(page, origin, clerk)
    page.get_by_label("Partner").select_option("uni")
    page.get_by_role("button", name="Show its keys").click()
    expect(page.locator("code.fingerprint")).to_have_text([fingerprint])
    expect(page.locator(".columns")).to_have_text("birth_date, health_card_number")

    # A column outside the agreement: refused before a byte of ciphertext is sent.
    _upload(page, op.root / "outside.csv", b"HCN,postal_code\n1,K1A\n")
    expect(_status(page)).to_contain_text("Not done: ")
    expect(_status(page)).to_contain_text("postal_code")

    # The page's part swapped for its header and plaintext on the way: the gateway's
    # payload check refuses it.
    page.route("**/upload/sessions/*/parts/0", _plaintext_payload)
    _upload(page, op.root / "small.csv", HEADER + b"1,1980-01-02\n" * 100)
    expect(_status(page)).to_contain_text("payload")
    expect(_status(page)).to_contain_text("is not")
    page.unroute("**/upload/sessions/*/parts/0")

    _upload(page, op.root / "extract.csv", None)
    expect(_status(page)).to_contain_text("Uploaded: extract.csv.age for uni",
                                          timeout=300_000)
    assert not [e for e in errors if "Content Security Policy" in e], errors

    # A second key approved while the page still lists one: the upload is refused.
    step = max(_step() + 1, unused_step)
    second = _approved_key(op, "second.key", (step, step))
    _upload(page, op.root / "small.csv", None)
    expect(_status(page)).to_contain_text("not the partner's approved keys")
    allow_axe(context)
    page.reload()
    expect(page.locator("code.fingerprint")).to_have_text([fingerprint, second])
    violations += check_page(page, "upload")
    _without_javascript(browser, context, origin, second)
    context.close()


def _sign_in(page: Page, origin: str, clerk: tuple[str, str]) -> None:
    secret, enrolment = clerk
    page.goto(origin + "/portal/signin")
    page.get_by_label("Username").fill("clerk")
    # The current step went to the SFTP sign-in that read the enrolment code; one step
    # ahead is accepted.
    page.get_by_label("One-time code from your authenticator app").fill(
        pyotp.TOTP(secret).at(time.time() + 30))
    page.get_by_label("Enrolment code (first sign-in only)").fill(enrolment)
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(origin + "/signin/passkey")
    page.wait_for_load_state("load")
    page.get_by_role("button", name="Register a passkey").click()
    expect(page).to_have_url(origin + "/upload", timeout=30_000)


def _status(page: Page) -> object:
    return page.locator("#upload-status")


def _upload(page: Page, path: Path, data: bytes | None) -> None:
    if data is not None:
        path.write_bytes(data)
    page.get_by_label("File to encrypt and upload").set_input_files(str(path))
    page.get_by_role("button", name="Encrypt and upload", exact=True).click()


def _plaintext_payload(route: Route) -> None:
    sent = route.request.post_data_buffer or b""
    header = sent[:sent.index(b"\n", sent.index(b"\n--- ") + 1) + 1]
    route.continue_(post_data=header + b"1980-01-02,a plain text row\n" * 200)


def _without_javascript(browser: Browser, signed_in: BrowserContext, origin: str,
                        second: str) -> None:
    context = browser.new_context(java_script_enabled=False)
    context.add_cookies(signed_in.cookies())
    page = context.new_page()
    page.goto(origin + "/upload?partner=uni")
    expect(page.get_by_text("Encrypting in the browser needs JavaScript")).to_be_visible()
    expect(page.get_by_text(second)).to_be_visible()
    expect(page.get_by_label("File to encrypt and upload")).to_be_hidden()
    context.close()


def _no_canary(var: Path) -> None:
    """No byte of the store, database or logs is the canary's."""
    for path in var.rglob("*"):
        if path.is_file():
            assert CANARY not in path.read_bytes(), path


def _audited(server: Served) -> None:
    log = [json.loads(line) for line in server.cli("audit", "log", "--json").stdout.splitlines()
           if line.startswith("{")]
    done = [e for e in log if e["tag"] == "file:upload:complete"]
    assert len(done) == 1 and "clerk" in done[0]["actor"], done
    assert done[0]["details"]["encrypted_here"] is False
    assert done[0]["details"]["data_read_by"] == "sender"
    reasons = [e["details"]["reason"] for e in log if e["tag"] == "file:upload:aborted"]
    assert len(reasons) == 3, reasons
    assert "postal_code" in reasons[0]
    assert "payload" in reasons[1]
    assert "not the partner's approved keys" in reasons[2]
    server.cli("audit", "verify")
