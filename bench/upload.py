"""Benchmark: the staff upload page's encrypt-and-upload in Chromium against
`blindpost send` of the same file (not a test).

One `blindpost serve` on loopback, a partner whose key is post-quantum (ML-KEM-768 +
X25519), and one file of a CSV header and random bytes on disk. The browser side is a
staff member signed in to the console (one-time code, then a passkey of Chromium's
virtual authenticator); each round chooses the file on the upload page, clicks "Encrypt
and upload" and times it until the page says the file is stored: the page reads the file
once for its columns, then encrypts it with typage as it reads it again and sends the
ciphertext in 8 MiB parts (gateway/web_uploads.py), hashing it to check the gateway's
SHA-256. The reference is `blindpost send` of the same file by another staff member
(read for its columns, encrypt, upload over SFTP, hash check), timed from outside. Each
round uploads the same name, which supersedes the previous file.

Reports each side's median throughput, their ratio, the load average before each round
(the machine may be shared), and the page's peak memory: the renderer process's peak
RSS (VmHWM) and the largest JavaScript heap sampled while it uploaded, against the
file's size.

    .venv/bin/python bench/upload.py [--size-mib 256] [--repeat 2] [--tiny]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.portal import BLINDPOST, code, start_gateway  # noqa: E402  # After the path.

MIB = 1 << 20
HEADER = b"HCN,Birth Date,postal_code\n"


def prepare(work: Path, size: int, senders: int) -> tuple[Path, dict[str, str], Path]:
    """A data directory with partner `acme` (a post-quantum key), a staff member for the
    browser and ``senders`` for `blindpost send`, and the file to upload."""
    from gateway.db.models import Role
    from tests.unit.sftp_server.harness import Installation

    setup = Installation(work / "gw")
    setup.add_partner("acme", post_quantum=True)
    users: dict[str, str] = {}
    for name in ["clerk", *(f"s{n}" for n in range(senders))]:
        users[name] = setup.add_user(name, Role.STAFF).secret
        users[name + ":key"] = str(setup.users[name].key_path)
    # The first passkey takes an enrolment code, which staff read over SFTP (`blindpost
    # portal-code`); the bench measures uploads, so it issues the code here.
    users["clerk:enrolment"] = setup.app.portal_enrolment.issue(
        setup.actor(setup.users["clerk"])).code
    setup.app.close()
    plain = work / "extract.csv"
    with plain.open("wb") as out:
        out.write(HEADER)
        while out.tell() < size:
            out.write(os.urandom(min(MIB, size - out.tell())))
    return setup.data_dir, users, plain


class Browser:
    """A staff member's upload page, signed in with a passkey."""

    def __init__(self, browser: object, origin: str, users: dict[str, str]) -> None:
        from playwright.sync_api import expect

        from tests.integration.console.browser import new_person

        self.origin = origin
        self.context, self.page = new_person(browser, enforce_csp=True)  # type: ignore[arg-type]
        self.cdp = self.context.new_cdp_session(self.page)
        self.cdp.send("Performance.enable")
        page = self.page
        page.goto(origin + "/portal/signin")
        page.get_by_label("Username").fill("clerk")
        page.get_by_label("One-time code from your authenticator app").fill(
            code(users["clerk"]))
        page.get_by_label("Enrolment code (first sign-in only)").fill(users["clerk:enrolment"])
        page.get_by_role("button", name="Continue").click()
        page.wait_for_load_state("load")
        page.get_by_role("button", name="Register a passkey").click()
        expect(page).to_have_url(origin + "/upload", timeout=60_000)

    def heap(self) -> int:
        metrics = self.cdp.send("Performance.getMetrics")["metrics"]
        return int(next(m["value"] for m in metrics if m["name"] == "JSHeapUsedSize"))

    def upload(self, plain: Path) -> tuple[float, int]:
        """Seconds from the click to the stored file, and the largest JS heap seen."""
        page = self.page
        page.goto(self.origin + "/upload?partner=acme")
        page.get_by_label("File to encrypt and upload").set_input_files(str(plain))
        status = page.locator("#upload-status")
        started = time.perf_counter()
        page.get_by_role("button", name="Encrypt and upload", exact=True).click()
        heap = 0
        while True:
            text = status.text_content() or ""
            if text.startswith(("Uploaded", "Not done")):
                break
            heap = max(heap, self.heap())
            page.wait_for_timeout(100)
        seconds = time.perf_counter() - started
        if not text.startswith("Uploaded"):
            raise SystemExit(f"the browser upload failed: {text}")
        return seconds, heap


def renderer_peak_kib(chrome: object) -> int:
    """The largest peak RSS (VmHWM) of this browser's renderer processes (other browsers
    on a shared machine are not counted)."""
    cdp = chrome.new_browser_cdp_session()  # type: ignore[attr-defined]
    processes = cdp.send("SystemInfo.getProcessInfo")["processInfo"]
    peak = 0
    for process in processes:
        if process["type"] != "renderer":
            continue
        status = Path(f"/proc/{process['id']}/status")
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
    return peak


def send(work: Path, port: int, name: str, users: dict[str, str], plain: Path,
         data_dir: Path) -> float:
    known_hosts = work / "known_hosts"
    if not known_hosts.exists():
        from gateway.config import load_settings
        from gateway.hostkey import public_host_key

        settings = load_settings(data_dir=data_dir, environ={})
        known_hosts.write_text(f"[127.0.0.1]:{port} {public_host_key(settings.host_key_path)}\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BLINDPOST_")},
           "HOME": str(work)}
    started = time.perf_counter()
    subprocess.run([*BLINDPOST, "send", "--host", "127.0.0.1", "--port", str(port),
                    "--user", name, "--key", users[name + ":key"], "--known-hosts",
                    str(known_hosts), "--totp-command", f"echo {code(users[name])}",
                    "acme", str(plain)],
                   check=True, capture_output=True, timeout=3600, cwd=work, env=env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="4 MiB, one round (the suite)")
    args = parser.parse_args()
    size = (4 if args.tiny else args.size_mib) * MIB
    repeat = 1 if args.tiny else args.repeat
    from tests.integration.console.browser import chromium

    with tempfile.TemporaryDirectory(prefix="bench-upload-") as scratch:
        work = Path(scratch)
        data_dir, users, plain = prepare(work, size, repeat)
        server, port = start_gateway(data_dir)
        browser_runs: list[float] = []
        send_runs: list[float] = []
        heaps: list[int] = []
        loads: list[float] = []
        try:
            with chromium() as chrome:
                page = Browser(chrome, server.origin, users)
                for number in range(repeat):
                    loads.append(os.getloadavg()[0])
                    # Alternate which side goes first: the machine may be shared.
                    if number % 2:
                        send_runs.append(send(work, port, f"s{number}", users, plain,
                                              data_dir))
                    seconds, heap = page.upload(plain)
                    browser_runs.append(seconds)
                    heaps.append(heap)
                    if not number % 2:
                        send_runs.append(send(work, port, f"s{number}", users, plain,
                                              data_dir))
                renderer = renderer_peak_kib(chrome)
        finally:
            server.stop()
    mib = size / MIB
    browser_rate = mib / statistics.median(browser_runs)
    send_rate = mib / statistics.median(send_runs)
    print(f"staff upload (encrypt and send) of {mib:.0f} MiB, {repeat} round(s), median:")
    print(f"  load average (1 min) before each round: "
          f"{', '.join(f'{load:.2f}' for load in loads)}")
    print(f"  browser (Chromium, typage streaming, 8 MiB parts)  {browser_rate:8.1f} MiB/s  "
          f"({', '.join(f'{s:.2f}' for s in browser_runs)} s)")
    print(f"  blindpost send (SFTP)                              {send_rate:8.1f} MiB/s  "
          f"({', '.join(f'{s:.2f}' for s in send_runs)} s)")
    print(f"  ratio browser / send                               "
          f"{browser_rate / send_rate:8.2f}x")
    print(f"  page peak: renderer RSS {renderer / 1024:.0f} MiB, JS heap "
          f"{max(heaps) / MIB:.0f} MiB, for a {mib:.0f} MiB file")


if __name__ == "__main__":
    main()
