"""Running deploy/runbooks/*.md as written: their shell blocks, in a scratch root.

The convention (deploy/runbooks/README.md): a fenced block whose info string is ``sh`` is
run by the suite; ``sh illustrative`` marks one that is not (a template of site values, a
command for another host). Blocks run in order in one shell state: variables a block sets
are seen by the next, as they are by the administrator typing them.

What changes between the runbook and the run is only *where*: the absolute paths a node
uses (``/opt/blindpost``, ``/var/lib/blindpost``, ``/etc/blindpost``, …) are moved under a
scratch root, and the commands that change the host itself (``apt-get``, ``useradd``,
``systemctl``, ownership changes to the ``blindpost`` user) are stubs that record their
arguments in ``host-commands.log`` for the test to check. Everything else — the install
script, ``blindpost``, ``pg_dump``, ``age``, ``sqlite3``, ``tar`` — runs for real.
"""

from __future__ import annotations

import re
import select
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import paramiko

from gateway import totp

RUNBOOKS = Path(__file__).resolve().parents[1] / "deploy" / "runbooks"
SHELLS = frozenset({"sh", "bash", "shell"})
ILLUSTRATIVE = "illustrative"
# Longest first: /etc/blindpost must not catch a path /etc/blindpost-something would.
NODE_PATHS = ("/opt/blindpost", "/var/lib/blindpost", "/etc/blindpost", "/etc/systemd/system",
              "/usr/local/bin", "/var/backups/blindpost")
_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                    re.MULTILINE | re.DOTALL)

# Stubs for what changes the host: each records its arguments, and `install` keeps
# creating directories and modes while leaving out the owner the test machine lacks.
_STUBS = {
    "apt-get": "",
    "useradd": "",
    "systemctl": "",
    "chown": "",
    "install": 'args=; while [ $# -gt 0 ]; do case $1 in -o|-g) shift 2;; '
               '*) args="$args $1"; shift;; esac; done; exec /usr/bin/install $args',
    "sudo": 'while [ $# -gt 0 ]; do case $1 in -u) shift 2;; *) break;; esac; done; '
            'exec "$@"',
}


@dataclass(frozen=True)
class Block:
    """One fenced block of a runbook."""

    runbook: str
    line: int
    section: str  # the `## ` heading it is under
    language: str
    illustrative: bool
    text: str

    @property
    def runnable(self) -> bool:
        return self.language in SHELLS and not self.illustrative

    def __str__(self) -> str:
        return f"{self.runbook}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of ``path``, in order, indentation removed."""
    text = path.read_text()
    found = []
    for match in _FENCE.finditer(text):
        words = match.group("info").split()
        indent = len(match.group("indent"))
        body = "\n".join(line[indent:] for line in match.group("body").splitlines())
        headings = re.findall(r"^## (.+)$", text[:match.start()], re.MULTILINE)
        found.append(Block(runbook=path.name, line=text.count("\n", 0, match.start()) + 1,
                           section=headings[-1] if headings else "",
                           language=words[0] if words else "",
                           illustrative=ILLUSTRATIVE in words[1:], text=body + "\n"))
    return found


@dataclass
class Session:
    """One administrator's shell on a scratch node, running one runbook's blocks."""

    runbook: str
    root: Path
    cwd: Path
    env: dict[str, str]
    ran: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.blocks = blocks(RUNBOOKS / self.runbook)
        stubs = self.root / "stubs"
        stubs.mkdir(parents=True, exist_ok=True)
        for name, body in _STUBS.items():
            script = stubs / name
            script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{self.host_log}"\n{body}\n')
            script.chmod(0o755)
        for path in NODE_PATHS:
            (self.root / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
        self.env = {**self.env,
                    "PATH": f"{stubs}:{self.root / 'usr/local/bin'}:{self.env['PATH']}"}
        self._state = self.root / f".{self.runbook}.state"
        self._state.write_text("")

    @property
    def host_log(self) -> Path:
        return self.root / "host-commands.log"

    def node_path(self, path: str) -> Path:
        """Where the scratch node keeps ``path`` (one of :data:`NODE_PATHS` or below)."""
        return self.root / path.lstrip("/")

    def run(self, containing: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the one runnable block containing ``containing``; return its result."""
        matches = [i for i, b in enumerate(self.blocks) if b.runnable and containing in b.text]
        assert len(matches) == 1, f"{self.runbook}: {len(matches)} blocks contain {containing!r}"
        [index] = matches
        self.ran.add(index)
        script = self.blocks[index].text
        for path in NODE_PATHS:
            script = re.sub(rf"(?<![\w/]){re.escape(path)}(?![\w-])",
                            str(self.node_path(path)), script)
        # The state of the shell so far, the block, then the state it leaves (variables
        # in lower case or BLINDPOST_/AWS_, the working directory and the umask).
        kept = "^([a-z][a-z0-9_]*|BLINDPOST_\\w+|AWS_\\w+)$"
        wrapper = (f'. "{self._state}"\nset -euo pipefail\n{script}\nset +eu\n'
                   f'{{ declare -p $(compgen -v | grep -E "{kept}"); echo "cd \\"$PWD\\"";'
                   f' echo "umask $(umask)"; }} > "{self._state}"\n')
        result = subprocess.run(["bash", "-c", wrapper], cwd=self.cwd, env=self.env,
                                capture_output=True, text=True, timeout=300, check=False)
        if check:
            assert result.returncode == 0, (
                f"{self.blocks[index]} failed ({result.returncode}):\n{script}\n"
                f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
        return result

    def chdir(self, path: Path) -> None:
        """Go to ``path``, as the administrator does between steps."""
        with self._state.open("a") as state:
            state.write(f'cd "{path}"\n')

    def unrun(self) -> list[Block]:
        """The runnable blocks not run yet (a test that ends with some left missed them)."""
        return [b for i, b in enumerate(self.blocks) if b.runnable and i not in self.ran]

    def host_commands(self) -> list[str]:
        return self.host_log.read_text().splitlines() if self.host_log.exists() else []


@contextmanager
def sftp_node(blindpost: list[str], env: dict[str, str], *, user: str, key: Path,
              totp_secret: str) -> Iterator[paramiko.SFTPClient]:
    """Start ``blindpost sftp`` on a free loopback port and sign ``user`` in (SSH key, then
    the current one-time code): the sign-in a partner or staff member makes."""
    # The node's log goes to a file: a pipe nobody reads would stall it once full.
    with tempfile.TemporaryFile(mode="w+") as log:
        node = subprocess.Popen([*blindpost, "sftp", "--listen", "127.0.0.1:0", "--workers",
                                 "1"], env=env, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            assert node.stdout is not None
            ready, _, _ = select.select([node.stdout], [], [], 120)
            line = node.stdout.readline() if ready else ""
            match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if not match:
                node.kill()
                node.wait()
                log.seek(0)
                raise AssertionError(f"the node did not start: {line}{log.read()[-4000:]}")
            with _signed_in(int(match.group(1)), user, key, totp_secret) as client:
                yield client
        finally:
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)
                node.communicate(timeout=60)


@contextmanager
def _signed_in(port: int, user: str, key: Path,
               secret: str) -> Iterator[paramiko.SFTPClient]:
    transport = paramiko.Transport(socket.create_connection(("127.0.0.1", port), timeout=30))
    try:
        transport.connect()
        transport.auth_publickey(user, paramiko.Ed25519Key.from_private_key_file(str(key)))
        code = totp.current_code(secret, now=datetime.now(UTC))
        transport.auth_interactive(user, lambda _t, _i, prompts: [code] * len(prompts))
        assert transport.is_authenticated()
        client = paramiko.SFTPClient.from_transport(transport)
        assert client is not None
        with client:
            yield client
    finally:
        transport.close()


def totp_secret(output: str) -> str:
    """The secret of the TOTP provisioning URI a command printed."""
    match = re.search(r"otpauth://\S*[?&]secret=([A-Z2-7]+)", output)
    assert match, output
    return match.group(1)
