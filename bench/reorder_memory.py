"""Benchmark: SFTP server memory under hostile out-of-order writes (not a test).

Each scenario runs against a fresh ``blindpost sftp`` process (one worker) and reports
how much its resident memory grew (peak VmHWM less the RSS after sign-in) and how many
writes it refused:

- ``in-order``: the reference, a well-behaved upload of 256 MiB in 32 KiB writes;
- ``gapped 32 KiB``: two sessions, eight handles each, every 32 KiB write leaving a gap
  before it, up to 64 MiB per handle (what the per-upload limit alone allowed: 1 GiB);
- ``gapped 1 byte``: one session, eight handles, 25,000 one-byte writes each, every
  one leaving a gap: tiny writes cost far more memory than their bytes.

All with the default settings, so the same script measures the code before the memory
budgets (run it from a checkout of that code) and after.

    python bench/reorder_memory.py
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paramiko  # noqa: E402
from paramiko.sftp import (  # noqa: E402
    CMD_HANDLE,
    CMD_INIT,
    CMD_OPEN,
    CMD_STATUS,
    CMD_VERSION,
    CMD_WRITE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
)

from gateway import totp  # noqa: E402
from gateway.db.models import Role  # noqa: E402
from tests.unit.sftp_server.harness import Installation, User  # noqa: E402

MIB = 1 << 20
KIB = 1 << 10


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


class Session:
    """A signed-in SFTP session that pipelines raw requests and counts the replies."""

    def __init__(self, port: int, user: User) -> None:
        self.transport = paramiko.Transport(("127.0.0.1", port))
        self.transport.connect()
        self.transport.auth_publickey(user.username, user.pkey)
        code = totp.current_code(user.secret, now=datetime.now(UTC))
        self.transport.auth_interactive(user.username, lambda _t, _i, p: [code] * len(p))
        self.channel = self.transport.open_session()
        self.channel.invoke_subsystem("sftp")
        self._send(CMD_INIT, struct.pack(">I", 3))
        assert self._receive()[0] == CMD_VERSION
        self.ok = self.refused = 0

    def _send(self, kind: int, payload: bytes) -> None:
        self.channel.sendall(struct.pack(">IB", len(payload) + 1, kind) + payload)

    def _exactly(self, n: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < n:
            chunk = self.channel.recv(n - len(chunks))
            if not chunk:
                raise EOFError
            chunks += chunk
        return bytes(chunks)

    def _receive(self) -> tuple[int, bytes]:
        data = self._exactly(struct.unpack(">I", self._exactly(4))[0])
        return data[0], data[1:]

    def open(self, path: str) -> bytes:
        flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC
        self._send(CMD_OPEN, struct.pack(">I", 0) + _string(path.encode())
                   + struct.pack(">II", flags, 0))
        kind, data = self._receive()
        assert kind == CMD_HANDLE, data
        return data[8:8 + struct.unpack(">I", data[4:8])[0]]

    def pipeline(self, writes: list[tuple[bytes, int, bytes]]) -> None:
        """Send every write at once, reading the statuses in a second thread."""
        reader = threading.Thread(target=self._count, args=(len(writes),), daemon=True)
        reader.start()
        batch: list[bytes] = []
        for request_id, (handle, offset, data) in enumerate(writes, start=1):
            payload = (struct.pack(">I", request_id) + _string(handle)
                       + struct.pack(">Q", offset) + _string(data))
            batch.append(struct.pack(">IB", len(payload) + 1, CMD_WRITE) + payload)
            if len(batch) >= 64:
                self.channel.sendall(b"".join(batch))
                batch.clear()
        self.channel.sendall(b"".join(batch))
        reader.join()

    def _count(self, replies: int) -> None:
        for _ in range(replies):
            kind, data = self._receive()
            assert kind == CMD_STATUS
            if struct.unpack(">I", data[4:8])[0] == 0:
                self.ok += 1
            else:
                self.refused += 1

    def close(self) -> None:
        self.transport.close()


class Server:
    """``blindpost sftp`` for an installation, in its own process."""

    def __init__(self, inst: Installation) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BLINDPOST_LOG_LEVEL": "error"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "sftp", "--data-dir", str(inst.data_dir),
             "--listen", "127.0.0.1:0", "--workers", "1"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.process.stdout is not None
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.process.stdout.readline())
        assert match, "the server did not start"
        self.port = int(match.group(1))

    def memory_kib(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) of the server."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        rss, hwm = (int(re.search(rf"{name}:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
                    for name in ("VmRSS", "VmHWM"))
        return rss, hwm

    def stop(self) -> None:
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=20)
        self.process.kill()


def scenario(inst: Installation, users: list[User], name: str, sessions: int,
             writes_for: object) -> float:
    """Run one scenario on a fresh server; print and return how much it grew (MiB)."""
    server = Server(inst)
    try:
        open_sessions = [Session(server.port, users[n]) for n in range(sessions)]
        plans = [writes_for(session) for session in open_sessions]  # type: ignore[operator]
        time.sleep(0.5)
        baseline, _ = server.memory_kib()
        started = time.monotonic()
        threads = [threading.Thread(target=s.pipeline, args=(plan,))
                   for s, plan in zip(open_sessions, plans, strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.monotonic() - started
        _, peak = server.memory_kib()
        sent = sum(len(plan) for plan in plans)
        data = sum(len(w[2]) for plan in plans for w in plan)
        refused = sum(s.refused for s in open_sessions)
        grew = (peak - baseline) / 1024
        print(f"{name:<14} {sent:>7} writes {data / MIB:7.1f} MiB sent {refused:>6} refused  "
              f"server grew {grew:7.1f} MiB ({grew * MIB / sent:5.0f} B per write) "
              f"in {seconds:4.1f} s")
        for session in open_sessions:
            session.close()
        return grew
    finally:
        server.stop()


def in_order(session: Session, total: int = 256 * MIB) -> list[tuple[bytes, int, bytes]]:
    handle, block = session.open("/acme/in-order.csv"), os.urandom(32 * KIB)
    return [(handle, i * len(block), block) for i in range(total // len(block))]


def gapped(count: int, size: int) -> object:
    def plan(session: Session) -> list[tuple[bytes, int, bytes]]:
        handles = [session.open(f"/acme/hostile-{n}.csv") for n in range(8)]
        block = os.urandom(size)
        return [(handle, (2 * i + 1) * size, block) for i in range(count) for handle in handles]
    return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true",
                        help="a size that runs in seconds (the test suite runs every bench so)")
    args = parser.parse_args()
    # --tiny: the same scenarios, 1/64 of the writes.
    scale = 64 if args.tiny else 1
    with tempfile.TemporaryDirectory() as work:
        inst = Installation(Path(work))
        inst.add_partner("acme")
        # One account per session: a code signs in once, and the scenarios follow one
        # another within the same 30 seconds.
        users = [inst.add_user(f"clerk{n}", Role.STAFF) for n in range(4)]
        inst.app.close()
        print(f"code under test: {ROOT}")
        reference = scenario(inst, users[0:1], "in-order", 1,
                             lambda session: in_order(session, 256 * MIB // scale))
        hostile = scenario(inst, users[1:3], "gapped 32 KiB", 2,
                           gapped(64 * MIB // (32 * KIB) // scale, 32 * KIB))
        scenario(inst, users[3:4], "gapped 1 byte", 1, gapped(25_000 // scale, 1))
        print(f"gapped 32 KiB grew the server {hostile / max(reference, 0.1):.0f}x as much as "
              "the in-order reference")


if __name__ == "__main__":
    main()
