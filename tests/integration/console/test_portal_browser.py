"""The partner portal end to end in real headless Chromium, against `blindpost serve`.

Two partner users sign in with their one-time code and register a passkey (Chromium's
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
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import BrowserContext, Page, expect

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


def _portal_sign_in(page: Page, origin: str, username: str, secret: str, *,
                    ahead: int = 0) -> None:
    from datetime import UTC, datetime, timedelta

    page.goto(origin + "/portal/signin")
    page.get_by_label("Username").fill(username)
    code = pyotp.TOTP(secret).at(datetime.now(UTC) + timedelta(seconds=30 * ahead))
    page.get_by_label("One-time code from your authenticator app").fill(code)
    page.get_by_role("button", name="Continue").click()


def _register(page: Page, origin: str) -> None:
    expect(page).to_have_url(origin + "/signin/passkey")
    # The URL changes before the deferred script has bound the button: a click before the
    # load event does nothing (seen under load), so wait for it.
    page.wait_for_load_state("load")
    page.get_by_role("button", name="Register a passkey").click()
    expect(page).to_have_url(origin + "/portal/key", timeout=30_000)


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
    lee_context, lee, lee_errors = _person(browser)
    # First sign-in: the code, then a passkey must be registered.
    _portal_sign_in(lee, origin, "dr-lee", lee_secret)
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
    _sftp(op, port, "dr-lee", lee_secret, ["get extract.csv.age"], ahead=1)
    assert (op.root / "extract.csv.age").read_bytes() == ciphertext
    lee.goto(origin + "/portal")
    expect(lee.get_by_role("cell", name="No file is waiting.")).to_be_visible()
    refused = lee.request.get(origin + "/portal/files/extract.csv.age")
    assert refused.status == 404, refused.status

    # Another partner's user imports a key file, and sees none of uni's files.
    who_context, who_page, _ = _person(browser)
    _portal_sign_in(who_page, origin, "dr-who", who_secret)
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
    _portal_sign_in(who_page, origin, "dr-who", who_secret, ahead=1)
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
