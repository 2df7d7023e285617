"""The partner portal end to end in real headless Chromium, against `blindpost serve`.

Two partner users read an enrolment code over SFTP (OpenSSH's `sftp`: key and one-time
code), sign in with it and their one-time code, and register a passkey (Chromium's
virtual authenticator, with PRF). One generates a key in the browser, the other imports
a `blindpost keygen` key file; each is wrapped by a passkey there and stored wrapped.
Two admins approve the generated key (CLI), staff upload a file over SFTP, and the
partner downloads and decrypts it in the browser (written through the File System Access
API) with the SHA-256 of the original. A download limit of three holds across the browser
and SFTP, a download resumed with a Range request counting once; the other partner sees
none of it; the store, database and logs hold neither the file's plaintext nor an
identity in the clear. The script runs under the pages' real
CSP; axe-core checks the portal's pages.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import BrowserContext, Page, expect

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

pytestmark = pytest.mark.integration
CANARY = b"PATIENT-4711,1990-02-03,preeclampsia\n"
SIZE = 3 * 1024 * 1024 + 12345
# The File System Access API's save picker is a dialog headless Chromium cannot answer:
# the test's picker hands the portal a file in the origin-private file system instead,
# the same FileSystemWritableFileStream the real picker gives.
PICKER = """window.showSaveFilePicker = async ({suggestedName}) => {
  const root = await navigator.storage.getDirectory();
  return root.getFileHandle(suggestedName, {create: true});
};"""
SAVED_SHA256 = """async (name) => {
  const root = await navigator.storage.getDirectory();
  const file = await (await root.getFileHandle(name)).getFile();
  const digest = await crypto.subtle.digest("SHA-256", await file.arrayBuffer());
  return [file.size, [...new Uint8Array(digest)].map(b => b.toString(16).padStart(2, "0"))
          .join("")];
}"""


def _person(browser: object) -> tuple[BrowserContext, Page, list[str]]:
    context, page = new_person(browser, enforce_csp=True)  # type: ignore[arg-type]
    context.add_init_script(PICKER)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return context, page, errors


class Steps:
    """Which TOTP step each account used last: every sign-in (SFTP or portal) takes a
    later one, within the ±1 step the gateway accepts, waiting when none is left."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}

    def ahead(self, username: str) -> int:
        """How many steps from now the next code of ``username`` is (-1, 0 or 1)."""
        now = int(time.time()) // 30
        step = max(self.last.get(username, now - 1) + 1, now)
        if step > now + 1:
            time.sleep((step - 1) * 30 - time.time() + 0.5)
            now = int(time.time()) // 30
        self.last[username] = step
        return step - now


STEPS = Steps()


def _portal_sign_in(page: Page, origin: str, username: str, secret: str, *,
                    enrolment: str = "") -> None:
    page.goto(origin + "/portal/signin")
    page.get_by_label("Username").fill(username)
    ahead = STEPS.ahead(username)  # It may wait: the time is read after it.
    code = pyotp.TOTP(secret).at(time.time() + 30 * ahead)
    page.get_by_label("One-time code from your authenticator app").fill(code)
    if enrolment:
        page.get_by_label("Enrolment code (first sign-in only)").fill(enrolment)
    page.get_by_role("button", name="Continue").click()


def _enrolment_code(op: Operator, port: int, username: str, secret: str) -> str:
    """The code for the first passkey, read over SFTP with OpenSSH's `sftp` (key and
    one-time code), as a partner without the `blindpost` client would."""
    _sftp(op, port, username, secret, [f"get .portal-enrolment {username}-enrolment.txt"],
          ahead=STEPS.ahead(username))
    shown = (op.root / f"{username}-enrolment.txt").read_text()
    assert f"Blindpost portal enrolment code for {username}" in shown
    return parse(shown).code


def _register(page: Page, origin: str) -> None:
    expect(page).to_have_url(origin + "/signin/passkey")
    # The URL changes before the deferred script has bound the button: a click before the
    # load event does nothing (seen under load), so wait for it.
    page.wait_for_load_state("load")
    page.get_by_role("button", name="Register a passkey").click()
    expect(page).to_have_url(origin + "/portal/key", timeout=30_000)
    # The same on the Key page: its buttons work once its deferred script has run.
    page.wait_for_load_state("load")


def _enrolled_recipient(page: Page, origin: str) -> str:
    page.goto(origin + "/portal/key")
    return (page.locator("code.recipient").text_content() or "").strip()


def test_partner_portal_in_chromium(tmp_path: Path) -> None:
    op = Operator(tmp_path)
    op.env["BLINDPOST_SFTP_WORKERS"] = "1"
    op("init", "--admin", "alice")
    op("user", "add", "bob", "--role", "admin")
    op("partner", "add", "uni", "--max-downloads", "3")
    op("partner", "add", "other")
    clerk = op.add_sftp_user("clerk", "--role", "staff")
    lee = op.add_sftp_user("dr-lee", "--role", "partner", "--partner", "uni")
    who = op.add_sftp_user("dr-who", "--role", "partner", "--partner", "other")
    who_key = op("keygen", "-o", "who.key").stderr.split("Public key: ")[1].split()[0]
    who_identity = next(line for line in (tmp_path / "who.key").read_text().splitlines()
                        if line.startswith("AGE-SECRET-KEY"))
    data = os.urandom(SIZE // 2) + CANARY + os.urandom(SIZE - SIZE // 2 - len(CANARY))
    (tmp_path / "extract.csv").write_bytes(data)
    server = serve(op.env)
    port = int(re.search(r"sftp\s+listening on 127\.0\.0\.1:(\d+)",  # type: ignore[union-attr]
                         "".join(server.output)).group(1))
    violations: list[dict[str, object]] = []
    try:
        with chromium() as browser:
            _run(browser, server, op, port, (clerk, lee, who), (who_key, who_identity),
                 data, violations)
    finally:
        server.stop()
    assert violations == [], violations
    _nothing_in_the_clear(tmp_path / "var", who_identity)
    log = [json.loads(line) for line in server.cli("audit", "log", "--json").stdout.splitlines()
           if line.startswith("{")]
    # Complete downloads: ranged and resumed, in the browser, over SFTP; the same event.
    completes = [e for e in log if e["tag"] == "file:download:complete"]
    assert [e["details"].get("resumed_at") for e in completes] == [100, None, None]
    assert len(completes) == 3 and all("dr-lee" in e["actor"] for e in completes), completes
    assert [e["details"]["served"] for e in completes] == [
        completes[0]["details"]["size"] - 100, *[completes[0]["details"]["size"]] * 2]
    stores = [e["actor"] for e in log if e["tag"] == "portal:identity:store"]
    assert len(stores) == 2 and "dr-lee" in stores[0] and "dr-who" in stores[1], stores
    server.cli("audit", "verify")


def _run(browser: object, server: Served, op: Operator, port: int,
         secrets: tuple[str, str, str], imported: tuple[str, str], data: bytes,
         violations: list[dict[str, object]]) -> None:
    origin = server.origin
    clerk, lee_secret, who_secret = secrets
    # Each partner user reads the code for their first passkey over SFTP (early: it
    # works for ten minutes, and the later sign-ins then find fresh TOTP steps).
    enrolment = {name: _enrolment_code(op, port, name, secret)
                 for name, secret in (("dr-lee", lee_secret), ("dr-who", who_secret))}
    lee_context, lee, lee_errors = _person(browser)
    # First sign-in: the enrolment code read over SFTP and the one-time code, then a
    # passkey must be registered.
    _portal_sign_in(lee, origin, "dr-lee", lee_secret,
                    enrolment=enrolment["dr-lee"])
    _register(lee, origin)
    lee.get_by_role("button", name="Generate and enrol a key").click()
    expect(lee.locator("#portal-status")).to_contain_text("Enrolled", timeout=30_000)
    expect(lee.locator("#key-backup")).to_be_visible()
    recipient = _enrolled_recipient(lee, origin)
    assert recipient.startswith("age1pq1"), recipient

    # Two admins approve it; staff upload over SFTP (encrypted on arrival).
    key = json.loads(op.as_admin("alice", "key", "propose", "uni", recipient, "--json").stdout)
    op.as_admin("bob", "key", "approve", str(key["id"]))
    _sftp(op, port, "clerk", clerk, ["put extract.csv /uni/extract.csv"])

    # An interrupted download resumed with a Range request is one download.
    url = origin + "/portal/files/extract.csv.age"
    head = lee.request.get(url, headers={"Range": "bytes=0-99"})
    assert (head.status, head.headers["content-range"]) == (206, f"bytes 0-99/{_size(head)}")
    tail = lee.request.get(url, headers={"Range": "bytes=100-"})
    assert tail.status == 206
    ciphertext = head.body() + tail.body()
    assert len(ciphertext) == _size(head) and CANARY not in ciphertext

    # The partner sees it with its expiry and downloads left, then decrypts it here.
    lee.goto(origin + "/portal")
    row = lee.get_by_role("row").filter(has_text="extract.csv.age")
    expect(row).to_contain_text("2 of 3")
    row.get_by_role("button", name="Download and decrypt").click()
    expect(lee.locator("#portal-status")).to_contain_text("Saved and decrypted",
                                                          timeout=60_000)
    size, digest = lee.evaluate(SAVED_SHA256, "extract.csv")
    assert (size, digest) == (len(data), hashlib.sha256(data).hexdigest())
    assert not [e for e in lee_errors if "Content Security Policy" in e], lee_errors

    # The limit of three holds across the browser and SFTP: one more over SFTP, then none.
    _sftp(op, port, "dr-lee", lee_secret, ["get extract.csv.age"],
          ahead=STEPS.ahead("dr-lee"))
    assert (op.root / "extract.csv.age").read_bytes() == ciphertext
    lee.goto(origin + "/portal")
    expect(lee.get_by_role("cell", name="No file is waiting.")).to_be_visible()
    refused = lee.request.get(origin + "/portal/files/extract.csv.age")
    assert refused.status == 404, refused.status

    # Another partner's user imports a key file, and sees none of uni's files.
    who_context, who_page, _ = _person(browser)
    _portal_sign_in(who_page, origin, "dr-who", who_secret,
                    enrolment=enrolment["dr-who"])
    _register(who_page, origin)
    who_page.get_by_label("Key file made by").set_input_files(str(op.root / "who.key"))
    who_page.get_by_role("button", name="Import and enrol").click()
    expect(who_page.locator("#portal-status")).to_contain_text(imported[0], timeout=30_000)
    assert _enrolled_recipient(who_page, origin) == imported[0]
    who_page.goto(origin + "/portal")
    expect(who_page.get_by_role("cell", name="No file is waiting.")).to_be_visible()
    assert who_page.request.get(origin + "/portal/files/extract.csv.age").status == 404

    # Signing in again: the code, then the passkey.
    who_page.get_by_role("button", name="Sign out").click()
    _portal_sign_in(who_page, origin, "dr-who", who_secret)
    expect(who_page).to_have_url(origin + "/signin/verify")
    who_page.get_by_role("button", name="Use a passkey instead").click()
    expect(who_page).to_have_url(origin + "/portal")

    allow_axe(lee_context)
    for path in ("/portal", "/portal/key"):
        lee.goto(origin + path)
        violations += check_page(lee, "portal" + path.replace("/portal", "").replace("/", "-"))
    lee.goto(origin + "/portal/signin")
    violations += check_page(lee, "portal-signin")
    who_context.close()
    lee_context.close()


def _size(response: object) -> int:
    return int(response.headers["content-range"].rsplit("/", 1)[1])  # type: ignore[attr-defined]


def _nothing_in_the_clear(var: Path, identity: str) -> None:
    """No byte of the store, database or logs is the canary or an identity."""
    for path in var.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert CANARY not in content, path
            assert identity.encode() not in content, path
            assert b"AGE-SECRET-KEY" not in content.upper(), path
