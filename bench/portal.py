"""Benchmark: the partner portal's download-and-decrypt in Chromium against `blindpost
fetch` on the same file (not a test).

One `blindpost serve` on loopback holds one file of random bytes for a partner whose key
is post-quantum (ML-KEM-768 + X25519). The browser side is a partner user signed in to
the portal (one-time code, then a passkey of Chromium's virtual authenticator with PRF)
who imported the key file there; each round clicks "Download and decrypt" and times it
until the page says the file is saved, written through the File System Access API (to
the origin-private file system: headless Chromium cannot answer a save dialog). The
reference is `blindpost fetch` of the same file by another partner user of the same
partner (download, decrypt, hash check, fsync), timed from outside. Both ends check the
plaintext's SHA-256 against the original.

Reports each side's median throughput, their ratio, and the page's peak memory: the
renderer process's peak RSS (VmHWM) and the largest JavaScript heap sampled while it
decrypted, against the file's size. The promise measured: the page's memory stays far
below the file's size (streaming), whatever that size.

    .venv/bin/python bench/portal.py [--size-mib 256] [--repeat 2] [--tiny]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIB = 1 << 20
BLINDPOST = [sys.executable, "-m", "gateway.cli"]
PICKER = """window.showSaveFilePicker = async ({suggestedName}) => {
  const root = await navigator.storage.getDirectory();
  return root.getFileHandle(suggestedName, {create: true});
};"""
SAVED = """async (name) => {
  const root = await navigator.storage.getDirectory();
  const file = await (await root.getFileHandle(name)).getFile();
  const reader = file.stream().getReader();
  let size = 0;
  for (;;) { const {done, value} = await reader.read(); if (done) break; size += value.length; }
  return size;
}"""


def prepare(work: Path, size: int, fetchers: int) -> tuple[Path, dict[str, str], Path, str]:
    """A data directory with partner `acme` (a post-quantum key), a file of ``size``
    random bytes uploaded for it, one browser user and ``fetchers`` fetch users."""
    from gateway.db.models import Role
    from tests.unit.sftp_server.harness import Installation

    setup = Installation(work / "gw")
    identity = setup.add_partner("acme", post_quantum=True)
    staff = setup.add_user("clerk", Role.STAFF)
    users = {name: setup.add_user(name, Role.PARTNER, partner="acme").secret
             for name in ["browser", *(f"f{n}" for n in range(fetchers))]}
    keys = {name: setup.users[name].key_path for name in users}
    plain = work / "extract.bin"
    digest = hashlib.sha256()
    upload = setup.app.transfers.begin_upload(setup.actor(staff), partner="acme",
                                              name="extract.bin")
    with plain.open("wb") as out:
        for _ in range(0, size, MIB):
            block = os.urandom(min(MIB, size - out.tell()))
            digest.update(block)
            out.write(block)
            upload.write(block)
    upload.commit()
    # The first passkey takes an enrolment code, which a partner reads over SFTP
    # (`blindpost portal-code`); the bench measures downloads, so it issues the code here.
    users["browser:enrolment"] = setup.app.portal_enrolment.issue(
        setup.actor(setup.users["browser"])).code
    setup.app.close()
    key_file = work / "acme.key"
    key_file.write_text(identity.to_secret_string() + "\n")
    key_file.chmod(0o600)
    for name, path in keys.items():
        users[name + ":key"] = str(path)
    return setup.data_dir, users, key_file, digest.hexdigest()


def code(secret: str, ahead: int = 0) -> str:
    from gateway import totp

    return totp.current_code(secret, now=datetime.fromtimestamp(time.time() + 30 * ahead, UTC))


def renderer_peak_kib() -> int:
    """The largest peak RSS (VmHWM) of any Chromium renderer process now running."""
    peak = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            cmdline = (status.parent / "cmdline").read_bytes()
            if b"--type=renderer" not in cmdline:
                continue
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            continue
    return peak


class Browser:
    """A partner user's page in the portal, signed in and with the key imported."""

    def __init__(self, person: tuple[Any, Any], origin: str, users: dict[str, str],
                 key_file: Path) -> None:
        from playwright.sync_api import expect

        self.origin = origin
        self.context, self.page = person
        self.context.add_init_script(PICKER)
        self.cdp = self.context.new_cdp_session(self.page)
        self.cdp.send("Performance.enable")
        page = self.page
        page.goto(origin + "/portal/signin")
        page.get_by_label("Username").fill("browser")
        page.get_by_label("One-time code from your authenticator app").fill(
            code(users["browser"]))
        page.get_by_label("Enrolment code (first sign-in only)").fill(
            users["browser:enrolment"])
        page.get_by_role("button", name="Continue").click()
        # Each page's buttons work once its deferred script ran: wait for the load.
        expect(page).to_have_url(origin + "/signin/passkey", timeout=60_000)
        page.wait_for_load_state("load")
        page.get_by_role("button", name="Register a passkey").click()
        expect(page).to_have_url(origin + "/portal/key", timeout=60_000)
        page.wait_for_load_state("load")
        page.get_by_label("Key file made by").set_input_files(str(key_file))
        page.get_by_role("button", name="Import and enrol").click()
        expect(page.locator("#portal-status")).to_contain_text("Imported", timeout=60_000)

    def heap(self) -> int:
        metrics = self.cdp.send("Performance.getMetrics")["metrics"]
        return int(next(m["value"] for m in metrics if m["name"] == "JSHeapUsedSize"))

    def download(self) -> tuple[float, int]:
        """Seconds from the click to the saved file, and the largest JS heap seen."""
        page = self.page
        page.goto(self.origin + "/portal")
        status = page.locator("#portal-status")
        started = time.perf_counter()
        page.get_by_role("button", name="Download and decrypt").click()
        heap = 0
        while True:
            text = status.text_content() or ""
            if text.startswith(("Saved", "Not done")):
                break
            heap = max(heap, self.heap())
            page.wait_for_timeout(100)
        seconds = time.perf_counter() - started
        if not text.startswith("Saved"):
            raise SystemExit(f"the browser download failed: {text}")
        return seconds, heap

    def saved_size(self) -> int:
        return int(self.page.evaluate(SAVED, "extract.bin"))


def fetch(work: Path, port: int, name: str, users: dict[str, str], key_file: Path,
          data_dir: Path) -> float:
    out = work / f"inbox-{name}"
    known_hosts = work / "known_hosts"
    if not known_hosts.exists():
        from gateway.config import load_settings
        from gateway.hostkey import public_host_key

        settings = load_settings(data_dir=data_dir, environ={})
        known_hosts.write_text(f"[127.0.0.1]:{port} {public_host_key(settings.host_key_path)}\n")
    started = time.perf_counter()
    subprocess.run([*BLINDPOST, "fetch", "--host", "127.0.0.1", "--port", str(port),
                    "--user", name, "--key", users[name + ":key"], "--known-hosts",
                    str(known_hosts), "--totp-command", f"echo {code(users[name])}",
                    "-i", str(key_file), "--out", str(out)],
                   check=True, capture_output=True, timeout=3600, cwd=work)
    return time.perf_counter() - started


def start_gateway(data_dir: Path) -> tuple[Any, int]:
    """`blindpost serve` of ``data_dir`` on loopback (one SFTP worker, the console): the
    served process and its SFTP port."""
    from tests.integration.console.browser import serve

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BLINDPOST_")},
           "BLINDPOST_DATA_DIR": str(data_dir), "BLINDPOST_SFTP_LISTEN": "127.0.0.1:0",
           "BLINDPOST_SFTP_WORKERS": "1", "BLINDPOST_CONSOLE_LISTEN": "127.0.0.1:0"}
    server = serve(env)
    port = int("".join(server.output).split("sftp")[1].split("127.0.0.1:")[1].split()[0])
    return server, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="4 MiB, one round (the suite)")
    args = parser.parse_args()
    size = (4 if args.tiny else args.size_mib) * MIB
    repeat = 1 if args.tiny else args.repeat
    from tests.integration.console.browser import persistent_person

    with tempfile.TemporaryDirectory(prefix="bench-portal-") as scratch:
        work = Path(scratch)
        data_dir, users, key_file, digest = prepare(work, size, repeat)
        server, port = start_gateway(data_dir)
        browser_runs: list[float] = []
        fetch_runs: list[float] = []
        heaps: list[int] = []
        try:
            # A profile on disk: the origin-private file system that stands in for the
            # save dialog has an incognito context's small quota otherwise.
            with persistent_person(work / "profile") as person:
                page = Browser(person, server.origin, users, key_file)
                for number in range(repeat):
                    # Alternate which side goes first: the machine may be shared.
                    if number % 2:
                        fetch_runs.append(fetch(work, port, f"f{number}", users, key_file,
                                                data_dir))
                    seconds, heap = page.download()
                    browser_runs.append(seconds)
                    heaps.append(heap)
                    if not number % 2:
                        fetch_runs.append(fetch(work, port, f"f{number}", users, key_file,
                                                data_dir))
                saved = page.saved_size()
                renderer = renderer_peak_kib()
        finally:
            server.stop()
        fetched = work / "inbox-f0" / "extract.bin"
        if hashlib.sha256(fetched.read_bytes()).hexdigest() != digest or saved != size:
            raise SystemExit("a side did not produce the original file")
    mib = size / MIB
    browser_rate = mib / statistics.median(browser_runs)
    fetch_rate = mib / statistics.median(fetch_runs)
    print(f"portal download-and-decrypt of {mib:.0f} MiB, {repeat} round(s), median:")
    print(f"  browser (Chromium, typage streaming)  {browser_rate:8.1f} MiB/s  "
          f"({', '.join(f'{s:.2f}' for s in browser_runs)} s)")
    print(f"  blindpost fetch                       {fetch_rate:8.1f} MiB/s  "
          f"({', '.join(f'{s:.2f}' for s in fetch_runs)} s)")
    print(f"  ratio browser / fetch                 {browser_rate / fetch_rate:8.2f}x")
    print(f"  page peak: renderer RSS {renderer / 1024:.0f} MiB, JS heap "
          f"{max(heaps) / MIB:.0f} MiB, for a {mib:.0f} MiB file")


if __name__ == "__main__":
    main()
