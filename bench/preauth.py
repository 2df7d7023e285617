"""Benchmark: slow-banner connections against the SFTP server's admission (not a test).

An attacker opens connections and sends the SSH banner one byte every 10 seconds, slower
than anyone signs in but within paramiko's per-read timeout. With the default settings
(200 connections, 20 per address, 30 s grace), the script reports how many connections
the attacker holds, for how long, and whether real users still sign in:

1. the attack of the outside pass: 20 connections from each of 10 addresses;
2. a wider one: 10 connections from each of 40 addresses, with a user who signed in from
   her address the day before (returning) and one signing in for the first time.

Run from a checkout of the code to measure (the script measures whatever is there).

    python bench/preauth.py
"""

from __future__ import annotations

import argparse
import select
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.db.models import Role  # noqa: E402
from tests.unit.sftp_server.harness import Installation, paramiko_sftp  # noqa: E402

DRIBBLE_SECONDS = 10.0
WATCH_SECONDS = 45.0


class Attack:
    """Slow-banner connections, ``per_source`` from each address, dribbling."""

    def __init__(self, port: int, sources: list[str], per_source: int) -> None:
        self.opened = time.monotonic()
        self.socks: list[socket.socket] = []
        for source in sources:
            for _ in range(per_source):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5,
                                                source_address=(source, 0))
                try:
                    admitted = sock.recv(64).startswith(b"SSH-2.0-")
                except OSError:
                    admitted = False
                if admitted:
                    self.socks.append(sock)
                else:
                    sock.close()
        self.held = len(self.socks)
        self.lifetimes: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._dribble, daemon=True)
        self._thread.start()

    def _dribble(self) -> None:
        """Every half second note which connections the server closed; every
        DRIBBLE_SECONDS send the survivors one more byte."""
        next_byte = time.monotonic() + DRIBBLE_SECONDS
        while not self._stop.wait(0.5):
            readable, _, _ = select.select(self.socks, [], [], 0)
            closed = [sock for sock in readable if self._closed(sock)]
            if time.monotonic() >= next_byte:
                next_byte += DRIBBLE_SECONDS
                for sock in set(self.socks) - set(closed):
                    try:
                        sock.send(b"S")
                    except OSError:
                        closed.append(sock)
            for sock in closed:
                self.lifetimes.append(time.monotonic() - self.opened)
                sock.close()
            self.socks = [sock for sock in self.socks if sock not in closed]

    @staticmethod
    def _closed(sock: socket.socket) -> bool:
        try:
            return sock.recv(64) == b""
        except OSError:
            return True

    def alive(self) -> int:
        return len(self.socks)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.socks:
            sock.close()


def sign_in(inst: Installation, username: str, source: str) -> str:
    started = time.monotonic()
    try:
        with paramiko_sftp(inst, inst.users[username], source=source) as sftp:
            sftp.listdir("/")
    except Exception as exc:
        return f"refused ({type(exc).__name__})"
    return f"signed in ({time.monotonic() - started:.1f} s)"


def installation(root: Path) -> Installation:
    inst = Installation(root)
    inst.add_partner("acme")
    for name in ("lee", "ann"):
        inst.add_user(name, Role.PARTNER, partner="acme")
    inst.start()
    return inst


def run(title: str, sources: list[str], per_source: int, *, returning: bool,
        watch: float = WATCH_SECONDS) -> None:
    with tempfile.TemporaryDirectory() as work:
        inst = installation(Path(work))
        try:
            if returning:
                sign_in(inst, "ann", "127.0.1.1")
            attack = Attack(inst.port, sources, per_source)
            print(f"{title}: {len(sources) * per_source} slow connections tried, "
                  f"{attack.held} held")
            print(f"  new user from a new address:   {sign_in(inst, 'lee', '127.0.1.2')}")
            if returning:
                print(f"  returning user (signed in before): {sign_in(inst, 'ann', '127.0.1.1')}")
            deadline = attack.opened + watch
            while attack.alive() and time.monotonic() < deadline:
                time.sleep(1)
            longest = max(attack.lifetimes, default=0.0)
            print(f"  still held after {watch:.0f} s: {attack.alive()}; the longest "
                  f"closed one lived {longest:.0f} s (grace "
                  f"{inst.settings.sftp_auth_timeout_seconds} s, one byte every "
                  f"{DRIBBLE_SECONDS:.0f} s)")
            attack.stop()
        finally:
            inst.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true",
                        help="a size that runs in seconds (the test suite runs every bench so)")
    args = parser.parse_args()
    print(f"code under test: {ROOT}")
    if args.tiny:
        run("2 addresses x 2", ["127.0.0.2", "127.0.0.3"], 2, returning=True, watch=1.0)
        return
    run("10 addresses x 20", [f"127.0.0.{n}" for n in range(2, 12)], 20, returning=False)
    run("40 addresses x 10", [f"127.0.{n // 200 + 2}.{n % 200 + 2}" for n in range(40)], 10,
        returning=True)


if __name__ == "__main__":
    main()
