"""A Blindpost installation with users and a running SFTP server, and clients to drive it.

Used by the SFTP unit and integration tests. Time is a fake clock that starts at the real
time (so file times look normal to clients) and is moved by hand between TOTP logins:
a code is accepted at most once per time step, so each login takes a fresh step.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paramiko.sftp import (
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
from sqlalchemy import select

from gateway import envelope, totp
from gateway.actors import Actor
from gateway.app import App
from gateway.audit.models import AuditEntry
from gateway.config import load_settings
from gateway.datadir import initialise
from gateway.db.models import Role
from gateway.sshkeys import PublicKey, parse_public_key
from sftp_server.service import Running, start
from tests.conftest import FakeClock

OPERATOR = Actor.local_operator()
INSTALL_HINT = "run `make test` (it installs the test dependencies with apt: `make test-deps`)"


def require_tool(name: str) -> str:
    """The path of an external program, or a failure naming the install step."""
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} is not installed; {INSTALL_HINT}")
    return path


@dataclass
class User:
    """An account with its SSH key pair and TOTP secret."""

    username: str
    role: Role
    secret: str
    key_path: Path
    public_key: PublicKey

    @property
    def pkey(self) -> paramiko.PKey:
        return paramiko.Ed25519Key.from_private_key_file(str(self.key_path))


def write_key_pair(path: Path, comment: str) -> PublicKey:
    """Write an OpenSSH Ed25519 private key (0600) and return its public half."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    return parse_public_key(public.decode() + " " + comment)


class Installation:
    """A fresh data directory, its App (fake clock), users, partners and the server."""

    def __init__(self, root: Path, *, environ: dict[str, str] | None = None,
                 **settings: object) -> None:
        self.root = root
        self.data_dir = root / "var"
        # ``environ`` is what a server process started by the test would see as well.
        self.environ = environ or {}
        initialise(self.data_dir, admin="root-admin", environ=self.environ)
        overrides = {"sftp_listen": "127.0.0.1:0", "sftp_workers": 1, **settings}
        self.settings = load_settings(data_dir=self.data_dir, environ=self.environ,
                                      overrides=overrides)
        self.clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
        self.app = App(self.settings, clock=self.clock)
        self.app.accounts.add(OPERATOR, username="second-admin", role=Role.ADMIN)
        self.server: Running | None = None
        self.identities: dict[str, envelope.Identity] = {}
        self.users: dict[str, User] = {}
        self.port = 0  # Set by start(), or by a test that runs the server itself.

    def add_partner(self, slug: str, *, with_key: bool = True, post_quantum: bool = False,
                    max_downloads: int | None = None) -> envelope.Identity | None:
        """A partner, with a key proposed and approved by two admins unless ``with_key``."""
        self.app.partners.add(OPERATOR, slug=slug, max_downloads=max_downloads)
        if not with_key:
            return None
        identity = envelope.generate_identity(post_quantum=post_quantum)
        key = self.app.keys.propose(self.account_actor("root-admin"), partner=slug,
                                    recipient=str(identity.recipient))
        self.app.keys.approve(self.account_actor("second-admin"), key_id=key.id)
        self.identities[slug] = identity
        return identity

    def add_user(self, username: str, role: Role, partner: str | None = None) -> User:
        key_path = self.root / f"id_{username}"
        public = write_key_pair(key_path, f"{username}@test")
        new = self.app.accounts.add(OPERATOR, username=username, role=role,
                                    partner=partner, ssh_keys=[public])
        secret = new.totp_uri.split("secret=")[1].split("&")[0]
        self.users[username] = User(username, role, secret, key_path, public)
        return self.users[username]

    def code(self, user: User) -> str:
        """A code for a fresh time step (steps forward first, so no code is a replay)."""
        self.clock.advance(seconds=totp.STEP_SECONDS)
        return totp.current_code(user.secret, now=self.clock())

    def actor(self, user: User) -> Actor:
        return self.account_actor(user.username)

    def account_actor(self, username: str) -> Actor:
        """The actor a sign-in of ``username`` would hand the services."""
        info = self.app.accounts.get(OPERATOR, username)
        return Actor.account(username=info.username, account_id=info.id, role=info.role,
                             partner_id=info.partner_id, source="127.0.0.1")

    def start(self) -> Running:
        self.server = start(self.settings, app=self.app)
        self.port = self.server.address[1]
        return self.server

    def known_hosts(self) -> Path:
        """A known_hosts file pinning the server's host key."""
        path = self.root / "known_hosts"
        host_key = paramiko.Ed25519Key.from_private_key_file(str(self.settings.host_key_path))
        path.write_text(f"[127.0.0.1]:{self.port} ssh-ed25519 {host_key.get_base64()}\n")
        return path

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server.wait()
        self.app.close()

    def age_identity_file(self, slug: str) -> Path:
        path = self.root / f"{slug}.key"
        path.write_text(self.identities[slug].to_secret_string() + "\n")
        return path


def askpass_script(root: Path, answer: str) -> Path:
    """An SSH_ASKPASS program that prints ``answer`` (the one-time code)."""
    path = root / f"askpass-{answer or 'empty'}.sh"
    path.write_text(f"#!/bin/sh\nprintf '%s\\n' '{answer}'\n")
    path.chmod(0o700)
    return path


def openssh_sftp(inst: Installation, user: User, commands: Sequence[str], *,
                 code: str, extra: Sequence[str] = (), timeout: float = 60,
                 key: Path | None = None, prompts: int = 1, askpass: Path | None = None,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run OpenSSH's ``sftp`` in batch mode; the code is fed through SSH_ASKPASS.

    ``sftp -b`` turns BatchMode on, which disables keyboard-interactive, so
    ``-o BatchMode=no`` comes first. ``prompts`` is NumberOfPasswordPrompts (OpenSSH's
    default is 3); ``askpass`` replaces the program that answers with ``code``. Standard
    error goes through a file (``inst.root / "sftp.stderr"``) that an askpass program may
    read, as a person reads the terminal.
    """
    sftp = require_tool("sftp")
    batch = inst.root / "batch.txt"
    batch.write_text("\n".join(commands) + "\n")
    stderr_path = inst.root / "sftp.stderr"
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(inst.root),
                   "SSH_ASKPASS": str(askpass or askpass_script(inst.root, code)),
                   "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0",
                   "SFTP_STDERR": str(stderr_path), **(env or {})}
    args = [sftp, "-o", "BatchMode=no", "-b", str(batch), "-P", str(inst.port),
            "-i", str(key or user.key_path), "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none", "-F", "/dev/null",
            "-o", f"UserKnownHostsFile={inst.known_hosts()}",
            "-o", "StrictHostKeyChecking=yes", "-o", f"NumberOfPasswordPrompts={prompts}",
            *extra, f"{user.username}@127.0.0.1"]
    with stderr_path.open("w") as stderr:
        result = subprocess.run(args, env=environment, stdout=subprocess.PIPE, stderr=stderr,
                                text=True, timeout=timeout, check=False,
                                stdin=subprocess.DEVNULL, cwd=inst.root)
    result.stderr = stderr_path.read_text()
    return result


@contextmanager
def paramiko_sftp(inst: Installation, user: User, *, code: str | None = None,
                  source: str | None = None) -> Iterator[paramiko.SFTPClient]:
    """An SFTP session through paramiko as the client: public key, then the code.

    ``source`` is the local address to connect from (any of 127.0.0.0/8 works).
    """
    sock = socket.create_connection(("127.0.0.1", inst.port), timeout=30,
                                    source_address=(source, 0) if source else None)
    transport = paramiko.Transport(sock)
    try:
        transport.connect()
        remaining = transport.auth_publickey(user.username, user.pkey)
        assert "keyboard-interactive" in remaining
        answer = code if code is not None else inst.code(user)
        transport.auth_interactive(user.username, lambda _t, _i, prompts: [answer] * len(prompts))
        client = paramiko.SFTPClient.from_transport(transport)
        assert client is not None
        try:
            yield client
        finally:
            # The server may have hung up already (a stop, a cut connection) while this
            # side's transport has yet to notice: closing then finds the socket gone.
            with contextlib.suppress(EOFError, OSError):
                client.close()
    finally:
        transport.close()


def upload_at_once(clients: Sequence[paramiko.SFTPClient], files: dict[str, bytes],
                   folder: str, *, timeout: float) -> None:
    """Upload each of ``files`` to ``folder`` through a client of its own, all at once,
    in pipelined 255 KiB writes; fail if one stalls past ``timeout`` or fails."""
    failures: list[BaseException] = []

    def upload(client: paramiko.SFTPClient, name: str) -> None:
        try:
            with client.open(f"/{folder}/{name}", "wb") as remote:
                remote.set_pipelined(True)
                data = files[name]
                for at in range(0, len(data), 255 * 1024):
                    remote.write(data[at:at + 255 * 1024])
        except BaseException as exc:  # Reported by the calling thread, which asserts.
            failures.append(exc)

    threads = [threading.Thread(target=upload, args=(client, name))
               for client, name in zip(clients, files, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "an upload stalled"
    assert failures == []


def assert_delivered(inst: Installation, user: User, files: dict[str, bytes],
                     partner: str) -> None:
    """Each of ``files`` is in ``user``'s inbox as NAME.age, and decrypts with
    ``partner``'s identity to what was uploaded."""
    with paramiko_sftp(inst, user) as client:
        for name, original in files.items():
            with client.open(f"{name}.age", "rb") as remote:
                remote.prefetch()
                ciphertext = remote.read()
            assert envelope.decrypt_bytes(ciphertext, [inst.identities[partner]]) == original


def audit_events(app: App, tag: str) -> list[dict[str, Any]]:
    """The decoded audit events with ``tag``, oldest first."""
    with app.transaction() as session:
        leaves = session.scalars(select(AuditEntry.leaf).order_by(AuditEntry.idx)).all()
    return [event for event in map(json.loads, leaves) if event["tag"] == tag]


class RawSFTP:
    """Speaks SFTP packets by hand on a signed-in session channel."""

    def __init__(self, inst: Installation, username: str) -> None:
        user = inst.users[username]
        self.transport = paramiko.Transport(socket.create_connection(("127.0.0.1", inst.port)))
        self.transport.connect()
        self.transport.auth_publickey(user.username, user.pkey)
        code = inst.code(user)
        self.transport.auth_interactive(user.username, lambda _t, _i, p: [code] * len(p))
        self.channel = self.transport.open_session()
        self.channel.settimeout(10)
        self.channel.invoke_subsystem("sftp")
        self.send(CMD_INIT, struct.pack(">I", 3))
        kind, _ = self.receive()
        assert kind == CMD_VERSION

    def send_raw(self, data: bytes) -> None:
        self.channel.sendall(data)

    def send(self, kind: int, payload: bytes) -> None:
        self.send_raw(struct.pack(">IB", len(payload) + 1, kind) + payload)

    def receive(self) -> tuple[int, bytes]:
        size = struct.unpack(">I", self._exactly(4))[0]
        data = self._exactly(size)
        return data[0], data[1:]

    def status(self) -> tuple[int, int, str]:
        """Read one STATUS reply: (request id, code, message)."""
        kind, data = self.receive()
        assert kind == CMD_STATUS
        request_id, code, length = struct.unpack(">III", data[:12])
        return request_id, code, data[12:12 + length].decode()

    def open_upload(self, path: str, request_id: int) -> bytes:
        """Open ``path`` for writing; return the handle."""
        flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC
        self.send(CMD_OPEN, struct.pack(">I", request_id) + sftp_string(path.encode())
                  + struct.pack(">II", flags, 0))
        kind, data = self.receive()
        assert kind == CMD_HANDLE, data
        (length,) = struct.unpack(">I", data[4:8])
        return data[8:8 + length]

    @staticmethod
    def write_packet(handle: bytes, offset: int, data: bytes, request_id: int) -> bytes:
        """A WRITE request, to send (several at once, without waiting) with send_raw."""
        payload = (struct.pack(">I", request_id) + sftp_string(handle)
                   + struct.pack(">Q", offset) + sftp_string(data))
        return struct.pack(">IB", len(payload) + 1, CMD_WRITE) + payload

    def _exactly(self, n: int) -> bytes:
        chunks = b""
        while len(chunks) < n:
            chunk = self.channel.recv(n - len(chunks))
            if not chunk:
                raise EOFError("the server closed the session")
            chunks += chunk
        return chunks

    def close(self) -> None:
        self.transport.close()


def sftp_string(text: bytes) -> bytes:
    """An SFTP ``string``: its length, then its bytes."""
    return struct.pack(">I", len(text)) + text
