"""`blindpost serve` as an operator runs it: a real process, real workers, a clean stop."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
BLINDPOST = [sys.executable, "-m", "gateway.cli"]


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BLINDPOST, *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def _banner(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        return sock.recv(64)


def test_serve_starts_workers_and_stops_cleanly(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BLINDPOST_")},
           "BLINDPOST_DATA_DIR": str(tmp_path / "var"), "BLINDPOST_SFTP_LISTEN": "127.0.0.1:0",
           "BLINDPOST_SFTP_WORKERS": "2", "BLINDPOST_CONSOLE_LISTEN": "127.0.0.1:0"}
    assert _run("init", "--admin", "alice", env=env).returncode == 0
    with subprocess.Popen([*BLINDPOST, "serve"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as server:
        try:
            assert server.stdout is not None
            lines = [server.stdout.readline() for _ in range(3)]
            match = re.search(r"sftp\s+listening on 127\.0\.0\.1:(\d+)", "".join(lines))
            assert match, lines
            port = int(match.group(1))
            assert _banner(port).startswith(b"SSH-2.0-Blindpost\r\n")
            second = _run("serve", env=env)
            assert second.returncode == 1
            assert "another `blindpost serve` is already running" in second.stderr
            started = time.monotonic()
            # To the whole process group, as systemd and container runtimes do; the
            # signal paths of `blindpost sftp` are tested one by one in test_stop.py.
            os.killpg(server.pid, signal.SIGTERM)
            _, errors = server.communicate(timeout=30)
            assert server.returncode == 0, errors
            assert time.monotonic() - started < 15  # the default drain (10 s) + slack
        finally:
            server.kill()
    with pytest.raises(OSError):
        _banner(port)
    verified = _run("audit", "verify", env=env)
    assert verified.returncode == 0, verified.stderr
    checkpoint = _run("audit", "checkpoint", env=env).stdout
    log = _run("audit", "log", "--json", env=env).stdout.splitlines()
    # The shutdown checkpoint covers the whole log but its own audit entry.
    assert checkpoint.splitlines()[1] == str(len(log) - 1)
    tags = [json.loads(line)["tag"] for line in log]
    # `audit verify` records itself (the console shows the last verification), and the
    # checkpoint asked for after it covers that entry.
    verify = tags.index("audit:verify")
    assert tags[verify - 2:verify] == ["service:stop", "audit:checkpoint"]
    assert tags[verify:] == ["audit:verify", "audit:checkpoint"]
    assert "service:start" in tags
