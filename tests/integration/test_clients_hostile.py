"""`blindpost fetch` against a hostile server: it trusts nothing the server names.

The server is a real SSH/SFTP server (paramiko's), on an ephemeral port, that lets any
key in and lists what each test tells it to: names and transfer ids that are paths,
terminal escape sequences, a listing without end. The client runs as a real program.
Each test asserts the refusal, what reached the terminal, and that nothing was
written outside (or inside) the output folder.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway import envelope
from gateway.client.hostkeys import fingerprint
from gateway.sftp_extensions import CIPHERTEXT_SHA256, TRANSFER_ID
from tests.unit.sftp_server.harness import write_key_pair

pytestmark = pytest.mark.integration

GOOD_ID = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
ESCAPE = "\x1b]0;owned\x07\x1b[2J"


@dataclass
class Listed:
    """One file as the hostile server lists it."""

    name: str
    transfer_id: str = GOOD_ID
    sha256: str = "ab" * 32
    content: bytes = b""


@dataclass
class Script:
    """What the server lists, and the message it refuses every open with."""

    files: list[Listed] = field(default_factory=list)
    count: int | None = None  # Repeat the first file this many times (a long listing).
    refusal: str = "no"


class _Server(paramiko.ServerInterface):
    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == "session" else (
            paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED)


class _Files(paramiko.SFTPServerInterface):
    def __init__(self, server: object, *args: Any, script: Script, **kwargs: Any) -> None:
        super().__init__(server, *args, **kwargs)
        self._script = script

    def list_folder(self, path: str) -> list[paramiko.SFTPAttributes] | int:
        files = self._script.files
        if self._script.count is not None:
            files = files[:1] * self._script.count
        return [_attributes(f) for f in files]

    def stat(self, path: str) -> paramiko.SFTPAttributes | int:
        return paramiko.sftp.SFTP_NO_SUCH_FILE

    def open(self, path: str, flags: int, attr: paramiko.SFTPAttributes) -> Any:
        return paramiko.sftp.SFTP_PERMISSION_DENIED


class _Session(paramiko.SFTPServer):
    """Answers every refused open with the script's message (terminal escapes)."""

    def __init__(self, channel: paramiko.Channel, name: str, server: object,
                 sftp_si: type, *, script: Script) -> None:
        super().__init__(channel, name, server, sftp_si, script=script)
        self._refusal = script.refusal

    def _send_status(self, request_number: int, code: int, desc: str | None = None) -> None:
        if code == paramiko.sftp.SFTP_PERMISSION_DENIED:
            desc = self._refusal
        super()._send_status(request_number, code, desc)


def _attributes(listed: Listed) -> paramiko.SFTPAttributes:
    attrs = paramiko.SFTPAttributes()
    attrs.filename = listed.name
    attrs.st_size = len(listed.content)
    attrs.st_mode = 0o100400
    attrs.attr = {CIPHERTEXT_SHA256: listed.sha256, TRANSFER_ID: listed.transfer_id}
    return attrs


class HostileGateway:
    """A paramiko SSH server on 127.0.0.1 serving ``script`` to every connection."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.host_key = _ed25519()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(sock)
            transport.add_server_key(self.host_key)
            transport.set_subsystem_handler("sftp", _Session, _Files, script=self.script)
            transport.start_server(server=_Server())

    def close(self) -> None:
        self._listener.close()


def _ed25519() -> paramiko.PKey:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption())
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem.decode()))


@pytest.fixture
def gateway() -> Iterator[HostileGateway]:
    server = HostileGateway(Script())
    yield server
    server.close()


@dataclass
class Run:
    exit: int
    stdout: str
    stderr: str


def fetch(gateway: HostileGateway, tmp_path: Path, *args: str) -> Run:
    """`blindpost fetch --out tmp_path/box/inbox` against the hostile server."""
    key = client_keys(tmp_path)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "fetch", "--host", "127.0.0.1", "--port",
         str(gateway.port), "--user", "lee", "--key", str(key), "--host-key",
         fingerprint(gateway.host_key), "-i", str(tmp_path / "partner.key"), "--out",
         str(tmp_path / "box" / "inbox"), *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)},
        capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL)
    return Run(done.returncode, done.stdout, done.stderr)


def client_keys(tmp_path: Path) -> Path:
    """The client's SSH key and age identity (made once); the SSH key's path."""
    key = tmp_path / "id_partner"
    if not key.exists():
        write_key_pair(key, "partner@test")
        (tmp_path / "partner.key").write_text(
            envelope.generate_identity(post_quantum=False).to_secret_string() + "\n")
    return key


def _files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


def _no_escapes(run: Run) -> None:
    for text in (run.stdout, run.stderr):
        assert not any(ord(ch) < 0x20 and ch != "\n" for ch in text), repr(text)
        assert "\x7f" not in text and "\u202e" not in text


@pytest.mark.parametrize(("listed", "problem"), [
    (Listed("a.csv.age", transfer_id="x/../../../escape"),
     r"refusing the transfer id 'x/../../../escape' from the gateway: an id is 1 to 64 "
     r"letters, digits, '-' or '_'; nothing was fetched"),
    (Listed("a.csv.age", transfer_id=".."), "refusing the transfer id '..'"),
    (Listed("a.csv.age", transfer_id="id\x1b[31m"), r"refusing the transfer id 'id\\x1b\[31m'"),
    (Listed("a.csv.age", transfer_id="9" * 5000), r"refusing the transfer id '9{200}…'"),
    (Listed("../../../escape.csv.age"),
     "refusing the file name '../../../escape.csv.age' from the gateway: it contains a "
     "path separator"),
    (Listed("..\\..\\x.age"), "it contains a path separator"),
    (Listed("...age"), "a hidden name or a path step"),
    (Listed(f"evil{ESCAPE}.csv.age"),
     r"refusing the file name 'evil\\x1b\]0;owned\\x07\\x1b\[2J.csv.age' from the gateway: "
     "it contains control, format or unassigned characters"),
    (Listed("report\u202egpj.exe.age"), r"'report\\u202egpj.exe.age'"),
    (Listed("x" * 300 + ".age"), "longer than 255 bytes"),
    (Listed("a.csv.age", sha256="../" * 20), "refusing the ciphertext SHA-256"),
])
def test_hostile_names_and_ids_are_refused_and_nothing_is_written(
        gateway: HostileGateway, tmp_path: Path, listed: Listed, problem: str) -> None:
    gateway.script.files = [listed]
    client_keys(tmp_path)
    before = _files_under(tmp_path)
    run = fetch(gateway, tmp_path)
    assert run.exit == 1, run
    assert run.stderr.startswith("blindpost: error: "), run.stderr
    assert re.search(problem, run.stderr), run.stderr
    _no_escapes(run)
    created = _files_under(tmp_path) - before
    # Only the client's own state may appear (its pins live in its HOME), never a file
    # the server named, inside the output folder or outside it.
    assert {p for p in created if not p.is_relative_to(tmp_path / "home")} == set(), created
    assert list((tmp_path / "box" / "inbox").iterdir()) == []


def test_a_listing_of_100000_entries_is_refused_without_filling_memory(
        gateway: HostileGateway, tmp_path: Path) -> None:
    gateway.script.files, gateway.script.count = [Listed("a.csv.age")], 100_000
    run = fetch(gateway, tmp_path)
    assert run.exit == 1, run
    assert ("blindpost: error: the server lists more than 10000 entries in /; refusing "
            "the listing") in run.stderr
    assert list((tmp_path / "box" / "inbox").iterdir()) == []


def test_escapes_in_a_refusal_message_never_reach_the_terminal(
        gateway: HostileGateway, tmp_path: Path) -> None:
    content = b"age-encryption.org/v1\n"
    gateway.script.files = [Listed("a.csv.age", sha256=hashlib.sha256(content).hexdigest(),
                                   content=content)]
    gateway.script.refusal = f"denied{ESCAPE}\nfetched a.csv.age -> /etc/passwd" + "z" * 5000
    run = fetch(gateway, tmp_path)
    assert run.exit == 1, run
    assert run.stdout.startswith(r"FAILED  a.csv.age: denied\x1b]0;owned\x07\x1b[2J\n"
                                 "fetched a.csv.age -> /etc/passwd"), run.stdout
    assert len(run.stdout) < 400, "the server's message is cut"
    _no_escapes(run)
    assert list((tmp_path / "box" / "inbox").iterdir()) == []


def test_out_is_created_when_missing(gateway: HostileGateway, tmp_path: Path) -> None:
    run = fetch(gateway, tmp_path)
    assert (run.exit, run.stdout) == (0, "nothing new in the inbox\n"), run
    inbox = tmp_path / "box" / "inbox"
    assert inbox.is_dir()
    assert inbox.stat().st_mode & 0o777 == 0o700
    (tmp_path / "file").write_text("x")
    blocked = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "fetch", "--host", "127.0.0.1", "--port",
         str(gateway.port), "--user", "lee", "--key", str(tmp_path / "id_partner"),
         "--host-key", fingerprint(gateway.host_key), "-i", str(tmp_path / "partner.key"),
         "--out", str(tmp_path / "file" / "inbox")],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path / "home")})
    assert blocked.returncode == 2
    assert "--out" in blocked.stderr and "cannot create the folder" in blocked.stderr
