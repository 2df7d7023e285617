"""Driving the console in Debian's Chromium through Playwright, with axe-core and
Chromium's virtual WebAuthn authenticator (the DevTools WebAuthn domain)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.unit.sftp_server.harness import require_tool

ROOT = Path(__file__).resolve().parents[3]
AXE = ROOT / "tests/node/node_modules/axe-core/axe.min.js"
SCREENSHOTS = ROOT / "build/screenshots"
CHROMIUM_ARGS = ["--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
BLINDPOST = [sys.executable, "-m", "gateway.cli"]


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Debian Chromium (Playwright downloads no browser here)."""
    executable = require_tool("chromium")
    if not AXE.is_file():
        raise AssertionError("axe-core is missing; run `make test-deps` (npm ci in tests/node)")
    args = [*CHROMIUM_ARGS, *(["--no-sandbox"] if os.geteuid() == 0 else [])]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=args)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Served:
    """`blindpost serve` in a subprocess, with its console's origin."""

    env: dict[str, str]
    origin: str
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        _, errors = self.process.communicate(timeout=30)
        assert self.process.returncode == 0, errors

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*BLINDPOST, *args], env=self.env, capture_output=True,
                                text=True, timeout=60, check=False)
        assert result.returncode == 0, (args, result.stderr)
        return result


def serve(env: dict[str, str]) -> Served:
    process = subprocess.Popen([*BLINDPOST, "serve"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    lines = [process.stdout.readline() for _ in range(3)]
    match = re.search(r"console\s+listening on 127\.0\.0\.1:(\d+)\s+\(open (http://\S+)",
                      "".join(lines))
    assert match, lines
    return Served(env, match.group(2), process, lines)


def new_person(browser: Browser, *, enforce_csp: bool = False) -> tuple[BrowserContext, Page]:
    """A separate browser profile with its own virtual passkey authenticator (with the
    PRF extension, which the partner portal's key wrapping needs).

    CSP is bypassed only so that axe-core can be injected; the pages' own script comes
    from /static as the policy requires. With ``enforce_csp`` the policy holds until
    :func:`allow_axe` lifts it for the accessibility checks.
    """
    context = browser.new_context(bypass_csp=not enforce_csp,
                                  viewport={"width": 1280, "height": 900})
    return context, _with_authenticator(context)


@contextmanager
def persistent_person(profile: Path) -> Iterator[tuple[BrowserContext, Page]]:
    """:func:`new_person` (policy enforced) in a browser profile kept on disk at
    ``profile``: a fresh context is incognito-like, and its storage quota is far below
    what a benchmark writing gigabytes to the origin-private file system needs."""
    args = [*CHROMIUM_ARGS, *(["--no-sandbox"] if os.geteuid() == 0 else [])]
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=require_tool("chromium"), args=args,
            viewport={"width": 1280, "height": 900})
        try:
            yield context, _with_authenticator(context)
        finally:
            context.close()


def _with_authenticator(context: BrowserContext) -> Page:
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "ctap2Version": "ctap2_1", "transport": "internal",
        "hasResidentKey": True, "hasUserVerification": True, "isUserVerified": True,
        "hasPrf": True, "automaticPresenceSimulation": True}})
    context.cdp = cdp  # type: ignore[attr-defined]  # Kept for allow_axe.
    return page


def allow_axe(context: BrowserContext) -> None:
    """Lift the page's CSP from now on, so that axe-core can be injected."""
    context.cdp.send("Page.setBypassCSP", {"enabled": True})  # type: ignore[attr-defined]


def check_page(page: Page, name: str) -> list[dict[str, Any]]:
    """Save a screenshot of the page and return axe-core's WCAG 2 A/AA violations."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    page.add_script_tag(path=str(AXE))
    violations: list[dict[str, Any]] = page.evaluate(
        """async () => (await axe.run(document, {runOnly: {type: 'tag',
               values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})).violations
               .map(v => ({page: location.pathname, id: v.id, impact: v.impact,
                           help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))""")
    return violations
