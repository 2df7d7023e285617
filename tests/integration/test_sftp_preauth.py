"""Connections still signing in cannot starve real users (issue 15, point 2).

The attack: connect, then send the SSH banner one byte at a time, slower than paramiko's
per-read timeout but faster than never. The login grace timer started only after the
handshake, so such connections lived forever; 200 of them from 10 addresses filled the
connection limit and a real user was refused. Sources here are addresses of 127.0.0.0/8,
which Linux routes to the loopback interface.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.db.models import Role
from tests.unit.sftp_server.harness import Installation, paramiko_sftp

pytestmark = pytest.mark.integration
DRIBBLE_SECONDS = 1.0


class SlowBanner:
    """A connection from ``source`` that sends its banner one byte per second."""

    def __init__(self, port: int, source: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5,
                                             source_address=(source, 0))
        try:
            self.admitted = self.sock.recv(64).startswith(b"SSH-2.0-")
        except ConnectionResetError:
            self.admitted = False

    def dribble(self) -> bool:
        """Send the next byte; False once the server has closed the connection."""
        try:
            self.sock.send(b"S")
            self.sock.settimeout(0.01)
            return self.sock.recv(64) != b""
        except TimeoutError:
            return True
        except OSError:
            return False

    def close(self) -> None:
        self.sock.close()


class Attacker:
    """Holds ``per_source`` slow connections from each of ``sources``, dribbling."""

    def __init__(self, port: int, sources: list[str], per_source: int) -> None:
        self.connections = [SlowBanner(port, source) for source in sources
                            for _ in range(per_source)]
        self.opened = time.monotonic()
        self._alive = [c for c in self.connections if c.admitted]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def admitted(self) -> int:
        return sum(c.admitted for c in self.connections)

    @property
    def alive(self) -> int:
        return len(self._alive)

    def _run(self) -> None:
        while not self._stop.wait(DRIBBLE_SECONDS):
            self._alive = [c for c in self._alive if c.dribble()]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for connection in self.connections:
            connection.close()


def _installation(root: Path, **settings: object) -> Iterator[Installation]:
    inst = Installation(root, **settings)
    inst.add_partner("acme")
    inst.add_user("lee", Role.PARTNER, partner="acme")
    inst.start()
    yield inst
    inst.close()


@pytest.fixture
def inst(tmp_path: Path) -> Iterator[Installation]:
    yield from _installation(tmp_path, sftp_max_connections=40,
                             sftp_max_connections_per_source=8,
                             sftp_max_unauthenticated_per_source=2,
                             sftp_auth_timeout_seconds=3)


def test_slow_banners_from_a_few_addresses_cannot_lock_users_out(inst: Installation) -> None:
    attacker = Attacker(inst.port, [f"127.0.0.{n}" for n in range(2, 7)], per_source=8)
    try:
        # 40 tried, enough to fill the limit; only 2 per address are let in.
        assert attacker.admitted == 10
        with paramiko_sftp(inst, inst.users["lee"]) as sftp:
            assert sftp.listdir("/") == []
        # The grace timer runs from accept: the dribbled banners end with it.
        deadline = attacker.opened + inst.settings.sftp_auth_timeout_seconds + 3
        while attacker.alive and time.monotonic() < deadline:
            time.sleep(0.2)
        assert attacker.alive == 0
    finally:
        attacker.stop()


@pytest.fixture
def reserved(tmp_path: Path) -> Iterator[Installation]:
    # 12 connections; 25% of them (3) are out of reach for connections still signing
    # in, except from an address that signed in before.
    yield from _installation(tmp_path, sftp_max_connections=12,
                             sftp_max_connections_per_source=6,
                             sftp_max_unauthenticated_per_source=3,
                             sftp_reserve_percent=25, sftp_auth_timeout_seconds=15)


def test_the_reserve_keeps_room_for_returning_users(reserved: Installation) -> None:
    inst, lee = reserved, reserved.users["lee"]
    with paramiko_sftp(inst, lee, source="127.0.0.10") as sftp:
        assert sftp.listdir("/") == []
    attacker = Attacker(inst.port, ["127.0.0.2", "127.0.0.3", "127.0.0.4"], per_source=3)
    try:
        assert attacker.admitted == 9
        newcomer = SlowBanner(inst.port, "127.0.0.20")
        assert not newcomer.admitted
        newcomer.close()
        with paramiko_sftp(inst, lee, source="127.0.0.10") as sftp:
            assert sftp.listdir("/") == []
    finally:
        attacker.stop()
