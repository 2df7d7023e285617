"""The pages an admin lives in, in real headless Chromium against `blindpost serve`.

The dashboard's "needs doing" with links to where each thing is done, a partner's and an
account's detail pages, onboarding a partner person by SSH with an allow-list (no TOTP
secret on screen), a machine account proposed for a second admin, searching accounts,
and the audit log: newest first, filtered, searched, deep-linked, and no wider than a
1280 px window. Each page is saved as a screenshot and checked with axe-core.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from gateway import envelope
from gateway.sshkeys import parse_public_key
from tests.integration.console.browser import BLINDPOST, check_page, chromium, new_person, serve
from tests.integration.console.test_console_browser import _first_sign_in, _printed_secret

pytestmark = pytest.mark.integration


def _fits(page: Page) -> None:
    """No horizontal scrolling in the 1280 px window."""
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1] == 1280, width


def _ssh_key(tmp_path: Path, name: str) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name,
                    "-f", str(tmp_path / name)], check=True)
    return (tmp_path / f"{name}.pub").read_text().strip()


def test_dashboard_details_onboarding_and_audit(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BLINDPOST_")},
           "BLINDPOST_DATA_DIR": str(tmp_path / "var"), "BLINDPOST_SFTP_LISTEN": "127.0.0.1:0",
           "BLINDPOST_SFTP_WORKERS": "1", "BLINDPOST_CONSOLE_LISTEN": "127.0.0.1:0"}
    init = subprocess.run([*BLINDPOST, "init", "--admin", "alice"], env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    found = re.search(r"One-time password for alice: (\S+)", init.stdout)
    assert found, init.stdout
    subprocess.run([*BLINDPOST, "user", "add", "bob", "--role", "admin"], env=env,
                   capture_output=True, text=True, timeout=60, check=True)
    subprocess.run([*BLINDPOST, "partner", "add", "uni"], env=env, capture_output=True,
                   text=True, timeout=60, check=True)
    keys = _ssh_key(tmp_path, "lee"), _ssh_key(tmp_path, "job")
    server = serve(env)
    violations: list[dict[str, object]] = []
    try:
        with chromium() as browser:
            _, a = new_person(browser)
            _first_sign_in(a, server.origin, "alice", found.group(1),
                           _printed_secret(init.stdout))
            violations += _dashboard_and_partner(a, server.origin)
            violations += _onboarding(a, server.origin, keys)
            violations += _audit(a, server.origin)
    finally:
        server.stop()
    assert violations == [], violations


def _dashboard_and_partner(a: Page, origin: str) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    a.goto(origin + "/partners")
    a.get_by_label("Slug (folder name: lowercase letters, digits, hyphens)").fill("lab")
    a.get_by_role("button", name="Create partner").click()
    a.goto(origin + "/")
    todo = a.get_by_role("region", name="Needs doing")
    expect(todo.get_by_role("link", name="Partner uni cannot receive files: it has no "
                                          "approved key")).to_be_visible()
    a.goto(origin + "/keys")
    a.get_by_label("Partner", exact=True).select_option("uni")
    a.get_by_label("Public key (age1pq1… post-quantum, or age1…)").fill(
        str(envelope.generate_identity().recipient))
    a.get_by_role("button", name="Propose key").click()
    a.goto(origin + "/")
    item = a.get_by_role("link", name=re.compile(r"Key 1 for uni .* waits for a second admin"))
    expect(item).to_be_visible()
    found += check_page(a, "dashboard-needs-doing")
    a.get_by_role("link", name=re.compile("Partner lab cannot receive")).click()
    expect(a).to_have_url(origin + "/partners/lab")
    a.goto(origin + "/partners/uni")
    expect(a.get_by_role("heading", name="Partner uni")).to_be_visible()
    expect(a.get_by_role("alert")).to_contain_text("Cannot receive files")
    expect(a.get_by_role("table", name="Recipient keys of uni")).to_contain_text("proposed")
    expect(a.get_by_text("Sharing agreement")).to_be_visible()
    _fits(a)
    found += check_page(a, "partner-detail")
    return found


def _onboarding(a: Page, origin: str, keys: tuple[str, str]) -> list[dict[str, object]]:
    lee_key, job_key = keys
    found: list[dict[str, object]] = []
    a.goto(origin + "/accounts")
    form = a.locator("form", has=a.get_by_role("button", name="Create account"))
    form.get_by_label("Username").fill("dr-lee")
    form.get_by_label("Role").select_option("partner")
    form.get_by_label("Partner (partner accounts only)").select_option("uni")
    form.get_by_label("SSH public keys", exact=False).fill(lee_key)
    form.get_by_label("Allowed from", exact=False).fill("192.0.2.0/24")
    form.get_by_role("button", name="Create account").click()
    # No secret page: straight to the account, which enrols by SSH.
    expect(a).to_have_url(origin + "/accounts/dr-lee")
    expect(a.locator(".secret")).to_have_count(0)
    expect(a.get_by_text("enrol by SSH until")).to_be_visible()
    facts = a.locator("main > dl.card")
    expect(facts).to_contain_text("192.0.2.0/24")
    fingerprint = parse_public_key(lee_key).fingerprint
    expect(a.get_by_role("listitem").filter(has_text=fingerprint)).to_be_visible()
    expect(a.get_by_role("table", name=re.compile("What dr-lee did"))).to_contain_text(
        "account:create")
    _fits(a)
    found += check_page(a, "account-detail")

    # A machine account waits for a second admin, on the accounts page and the dashboard.
    a.goto(origin + "/accounts")
    form = a.locator("form", has=a.get_by_role("button", name="Create account"))
    form.get_by_label("Username").fill("nightly")
    form.get_by_label("Role").select_option("staff")
    form.get_by_label("SSH public keys", exact=False).fill(job_key)
    form.get_by_label("Allowed from", exact=False).fill("10.20.0.0/24")
    form.get_by_role("checkbox", name=re.compile("^Machine account")).check()
    form.get_by_role("button", name="Create account").click()
    expect(a.get_by_role("heading", name=re.compile("Machine account nightly"))).to_be_visible()
    expect(a.get_by_text("Waiting for another admin to approve.").first).to_be_visible()
    expect(a.locator("article", has_text="Machine account nightly")).to_contain_text(
        "only from 10.20.0.0/24")
    # Not a machine yet: a second admin approves it.
    a.goto(origin + "/accounts/nightly")
    expect(a.locator("main > dl.card")).not_to_contain_text("(machine)")
    a.goto(origin + "/")
    expect(a.get_by_role("link", name=re.compile("Machine account nightly"))).to_be_visible()

    # Search on accounts.
    a.goto(origin + "/accounts?q=dr-")
    table = a.get_by_role("table", name="Accounts")
    expect(table.get_by_role("link", name="dr-lee")).to_be_visible()
    expect(table.get_by_role("link", name="alice")).to_have_count(0)
    found += check_page(a, "accounts-search")
    return found


def _audit(a: Page, origin: str) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    a.goto(origin + "/audit")
    entries = [int(n) for n in a.locator("table.events tbody tr td:first-child a:first-child")
               .all_inner_texts()]
    assert len(entries) == 50 and entries == sorted(entries, reverse=True), entries
    _fits(a)
    found += check_page(a, "audit")
    # Older pages by keyset, and back.
    a.get_by_role("link", name="Older events").click()
    older = int(a.locator("table.events tbody tr td:first-child a").first.inner_text())
    assert older == entries[-1] - 1
    # Search over actor, subject and tag.
    a.goto(origin + "/audit")
    a.get_by_role("searchbox", name="Search").fill("dr-lee")
    a.get_by_role("button", name="Filter").click()
    rows = a.locator("table.events tbody tr")
    expect(rows.first).to_contain_text("dr-lee")
    assert all("dr-lee" in row for row in rows.all_inner_texts())
    # A partner filter: what concerned uni, not lab.
    a.goto(origin + "/audit")
    a.get_by_label("Partner", exact=True).select_option("lab")
    a.get_by_role("button", name="Filter").click()
    expect(a.locator("table.events tbody tr").first).to_contain_text("partner:lab")
    assert not any("uni" in row for row in a.locator("table.events tbody tr td:nth-child(5)")
                   .all_inner_texts())
    # A tag filter, and readable details (labels, not key=value).
    a.goto(origin + "/audit?tag=key:propose")
    row = a.locator("table.events tbody tr").first
    expect(row).to_contain_text("key:propose")
    expect(row.locator("dt", has_text="Fingerprint")).to_be_visible()
    assert "fingerprint=" not in row.inner_text()
    _fits(a)
    # A deep link to the event, and its proof.
    index = row.locator("td:first-child a").first.inner_text()
    row.get_by_role("link", name=f"Entry {index}", exact=True).click()
    expect(a).to_have_url(f"{origin}/audit/{index}")
    expect(a.get_by_role("heading", name=f"Audit entry {index}")).to_be_visible()
    with a.expect_download() as download:
        a.get_by_role("link", name="Download its inclusion proof").click()
    assert download.value.suggested_filename == f"entry-{index}.tlog-proof"
    found += check_page(a, "audit-entry")
    a.get_by_role("link", name="Show it in the log").click()
    expect(a.locator(f"#e-{index}")).to_be_visible()
    return found
