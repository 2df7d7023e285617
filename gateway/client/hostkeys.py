"""Which SSH host key the gateway must present.

By default the key is pinned on first use in ``~/.config/blindpost/known_hosts`` (OpenSSH
known_hosts format, so ``blindpost host-key`` output can be compared with it, or copied
into it), and a different key later is refused. ``--known-hosts FILE`` (an OpenSSH file,
hashed names allowed) or ``--host-key SHA256:…`` state the expected key instead; then the
pin file is neither read nor written.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import paramiko

from gateway.errors import AuthenticationError, UsageError


@dataclass(frozen=True)
class Endpoint:
    """A gateway address; ``str()`` is its known_hosts name."""

    host: str
    port: int

    def __str__(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:…`` fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


class HostKeyCheck(Protocol):
    """Decides whether a presented host key is the gateway's."""

    def verify(self, endpoint: Endpoint, key: paramiko.PKey) -> str | None:
        """Raise :class:`AuthenticationError` unless ``key`` is expected; return a notice."""
        ...


def _changed(endpoint: Endpoint, expected: str, key: paramiko.PKey, where: str) -> None:
    raise AuthenticationError(
        f"the host key of {endpoint} does not match: expected {expected}, the server "
        f"offered {key.get_name()} {fingerprint(key)}. Someone may be intercepting the "
        f"connection. If the registry announced a new key, update {where}.")


class PinnedHostKeys:
    """Trust on first use, with pins in an OpenSSH-format file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def verify(self, endpoint: Endpoint, key: paramiko.PKey) -> str | None:
        known = _load(self.path, missing_ok=True).lookup(str(endpoint))
        if known is None:
            self._pin(endpoint, key)
            return (f"pinned the host key of {endpoint} on first use: {key.get_name()} "
                    f"{fingerprint(key)} (in {self.path}); compare it with the fingerprint "
                    "the registry gave you")
        if known.get(key.get_name()) != key:
            pinned = ", ".join(f"{k.get_name()} {fingerprint(k)}" for k in known.values())
            _changed(endpoint, pinned, key, f"its line in {self.path}")
        return None

    def _pin(self, endpoint: Endpoint, key: paramiko.PKey) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        line = f"{endpoint} {key.get_name()} {key.get_base64()}\n".encode("ascii")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)


class KnownHostsFile:
    """An OpenSSH known_hosts file the user named: the key must be listed there."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys = _load(path)

    def verify(self, endpoint: Endpoint, key: paramiko.PKey) -> str | None:
        known = self._keys.lookup(str(endpoint))
        if known is None:
            raise AuthenticationError(f"{self.path} has no host key for {endpoint}")
        if known.get(key.get_name()) != key:
            listed = ", ".join(f"{k.get_name()} {fingerprint(k)}" for k in known.values())
            _changed(endpoint, listed, key, str(self.path))
        return None


class HostKeyFingerprint:
    """A fingerprint the user gave (``--host-key SHA256:…``)."""

    def __init__(self, expected: str) -> None:
        if not expected.startswith("SHA256:") or len(expected) != 50:
            raise UsageError("--host-key: expected an OpenSSH fingerprint, SHA256: followed "
                             "by 43 characters (`blindpost host-key` shows it)")
        self.expected = expected

    def verify(self, endpoint: Endpoint, key: paramiko.PKey) -> str | None:
        if fingerprint(key) != self.expected:
            _changed(endpoint, self.expected, key, "the --host-key you gave")
        return None


def _load(path: Path, *, missing_ok: bool = False) -> paramiko.HostKeys:
    keys = paramiko.HostKeys()
    try:
        keys.load(str(path))
    except FileNotFoundError:
        if missing_ok:
            return keys
        raise UsageError(f"{path}: no such file") from None
    except (OSError, paramiko.SSHException) as exc:
        raise UsageError(f"{path}: cannot read the known hosts ({exc})") from None
    return keys
