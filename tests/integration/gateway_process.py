"""``blindpost sftp`` and ``blindpost serve`` as real processes: start, signal, watch, wait.

Each runs in its own process group (as under systemd or a container), so a test can
signal the group or the main process alone, find the worker processes and tell which
one serves a given connection.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from gateway import totp
from tests.unit.sftp_server.harness import (
    Installation,
    User,
    askpass_script,
    openssh_sftp,
    require_tool,
)

VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


def wait_for(condition: Callable[[], bool], seconds: float = 20, what: str = "condition") -> float:
    """Poll ``condition`` until it holds; return how long that took, or fail."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"{what}: not met within {seconds} s"
        time.sleep(0.02)
    return time.monotonic() - started


def real_code(user: User) -> str:
    """The user's code now: a server process runs on the real clock."""
    return totp.current_code(user.secret, now=datetime.now(UTC))


class GatewayProcess:
    """A ``blindpost`` server command over an installation, with its output collected."""

    def __init__(self, inst: Installation, args: Sequence[str], *,
                 env: dict[str, str] | None = None) -> None:
        self.inst = inst
        environment = {k: v for k, v in os.environ.items() if not k.startswith("BLINDPOST_")}
        environment.update(inst.environ)
        environment.update(env or {})
        environment["BLINDPOST_DATA_DIR"] = str(inst.data_dir)
        self.process = subprocess.Popen(
            [str(VENV_BIN / "blindpost"), *args], env=environment, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_for(lambda: bool(self.port) or self.process.poll() is not None, 60, "start-up")
        assert self.port, "server did not start:\n" + self.output
        inst.port = self.port

    @classmethod
    def sftp(cls, inst: Installation, *, workers: int = 2,
             env: dict[str, str] | None = None) -> GatewayProcess:
        return cls(inst, ["sftp", "--listen", "127.0.0.1:0", "--workers", str(workers)],
                   env=env)

    def _read(self) -> None:
        # Read all the time: a full pipe would block the server's logging.
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def port(self) -> int:
        match = LISTENING.search(self.output)
        return int(match.group(1)) if match else 0

    @property
    def pid(self) -> int:
        return self.process.pid

    def worker_pids(self) -> list[int]:
        """The SFTP worker processes (children started by multiprocessing's spawn)."""
        return [pid for pid, ppid in _processes() if ppid == self.pid
                and b"spawn_main" in _cmdline(pid)]

    def stop(self, signum: signal.Signals = signal.SIGTERM, *, group: bool = True,
             timeout: float = 60) -> float:
        """Send ``signum`` to the process group (or the main process); return the seconds
        until the main process exited."""
        started = time.monotonic()
        if group:
            os.killpg(self.pid, signum)
        else:
            os.kill(self.pid, signum)
        self.process.wait(timeout)
        took = time.monotonic() - started
        self._close_output()
        return took

    def leftovers(self, seconds: float = 5) -> list[int]:
        """Processes of the group still alive after up to ``seconds`` (multiprocessing's
        resource tracker leaves by itself moments after the parent)."""
        deadline = time.monotonic() + seconds
        while True:
            alive = _group_members(self.pid)
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.05)

    def kill(self) -> None:
        """Clean-up after a failed test: nothing of the group survives it."""
        if _group_members(self.pid) or self.process.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(30)
        self._close_output()

    def _close_output(self) -> None:
        self._reader.join(5)
        if self.process.stdout is not None and not self._reader.is_alive():
            self.process.stdout.close()


def throttled_upload(inst: Installation, source: Path, target: str) -> subprocess.Popen[str]:
    """OpenSSH's ``sftp`` uploading ``source`` as ``clerk`` at about 500 kB/s, left running."""
    user = inst.users["clerk"]
    batch = inst.root / "throttled.txt"
    batch.write_text(f"put {source} {target}\n")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(inst.root), "DISPLAY": ":0",
           "SSH_ASKPASS": str(askpass_script(inst.root, real_code(user))),
           "SSH_ASKPASS_REQUIRE": "force"}
    return subprocess.Popen(
        [require_tool("sftp"), "-o", "BatchMode=no", "-b", str(batch), "-l", "4000",
         "-P", str(inst.port), "-i", str(user.key_path), "-F", "/dev/null",
         "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={inst.known_hosts()}",
         f"{user.username}@127.0.0.1"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def sign_in_within(inst: Installation, user: User, seconds: float,
                   commands: Sequence[str] = ("ls",)) -> subprocess.CompletedProcess[str]:
    """Sign in with OpenSSH as a client that retries would, until it works or time is up.

    A connection that reaches a worker in the instant it is killed is reset by the kernel
    (see sftp_server/service.py); retrying is what a client does about that.
    """
    deadline = time.monotonic() + seconds
    while True:
        result = openssh_sftp(inst, user, list(commands), code=real_code(user))
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def banner_served_by(server: GatewayProcess) -> int | None:
    """Open a connection, wait for the banner, and say which worker accepted it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        assert sock.recv(64).startswith(b"SSH-2.0-Blindpost")
        return serving_pid(server.worker_pids(), server_port=server.port,
                           client_port=sock.getsockname()[1])


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _processes(pgid: int | None = None) -> list[tuple[int, int]]:
    """(pid, parent pid) of every live process, or of those in process group ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid, group = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:
            continue
        if state != "Z" and pgid in (None, int(group)):
            found.append((int(entry.name), int(ppid)))
    return found


def _group_members(pgid: int) -> list[int]:
    return [pid for pid, _ in _processes(pgid)]


def serving_pid(pids: Sequence[int], *, server_port: int, client_port: int) -> int | None:
    """Which of ``pids`` holds the server side of the TCP connection from ``client_port``."""
    inode = _connection_inode(server_port, client_port)
    for pid in pids:
        try:
            links = [str(fd.readlink()) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        if f"socket:[{inode}]" in links:
            return pid
    return None


def _connection_inode(server_port: int, client_port: int) -> str:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
            if (local, remote) == (server_port, client_port):
                return fields[9]
    raise AssertionError(f"no server-side socket for client port {client_port}")
