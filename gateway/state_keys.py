"""The state key: what makes database rows the gateway wrote tell apart from injected ones.

One random 32-byte key in ``keys/state_key`` (0600, never in the database). Three keys are
derived from it, one per use, so that none can stand in for another:

* the *row seal* key: an HMAC-SHA256 over each granting row (see :mod:`gateway.integrity`);
* the *TOTP* key: ChaCha20-Poly1305 over each account's TOTP secret, bound to the account;
* the *audit entry* key: an HMAC-SHA256 over each audit entry as it is appended.

Every sealed value names the key it was made with (``v1.<key id>.<base64>``), so a
rotation can finish after a crash: while ``keys/state_key.new`` exists, both keys are
loaded and each value is checked with the key it names.

``cryptography.hazmat`` is imported here for one primitive (the AEAD for TOTP secrets);
nothing of it leaves this module.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import os
import secrets
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from gateway.errors import ConfigError, GatewayError

KEY_FILE = "state_key"
NEXT_SUFFIX = ".new"
# Every process that uses the state key holds a shared lock on a file of its own in this
# directory, so a rotation can tell which processes would keep the old key (and refuse).
USERS_DIR = "state_key.users"
# Held exclusively for the whole of a rotation, shared while a process registers.
ROTATION_LOCK = "state_key.lock"
VERSION = "v1"
_KEY_BYTES = 32
_NONCE_BYTES = 12
_ROW_SEAL = b"blindpost/row-seal/v1"
_TOTP = b"blindpost/totp-secret/v1"
_AUDIT_ENTRY = b"blindpost/audit-entry/v1"


class SealError(GatewayError):
    """A sealed value is malformed, names an unknown key, or fails its check."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise SealError("malformed sealed value") from exc


@dataclass(frozen=True)
class StateKey:
    """One state key and the keys derived from it."""

    material: bytes

    # Both computed once: verification checks the MAC of every audit entry, a million
    # times for a large log, and deriving the key again each time doubled its cost.
    @cached_property
    def key_id(self) -> str:
        """A short public name of the key (not secret: a hash of it)."""
        return hashlib.sha256(b"blindpost/state-key-id\n" + self.material).hexdigest()[:12]

    @cached_property
    def _derived(self) -> dict[bytes, bytes]:
        return {label: hmac.digest(self.material, label, "sha256")
                for label in (_ROW_SEAL, _TOTP, _AUDIT_ENTRY)}

    def _derive(self, label: bytes) -> bytes:
        return self._derived[label]

    def mac(self, purpose: str, message: bytes) -> str:
        """``v1.<key id>.<tag>``: an HMAC-SHA256 of ``message`` under the purpose's key."""
        label = {"row": _ROW_SEAL, "audit": _AUDIT_ENTRY}[purpose]
        tag = hmac.digest(self._derive(label), message, "sha256")
        return f"{VERSION}.{self.key_id}.{_b64(tag)}"

    def encrypt(self, plaintext: bytes, *, context: bytes) -> str:
        """``v1.<key id>.<nonce+ciphertext>`` of ``plaintext``, bound to ``context``."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = ChaCha20Poly1305(self._derive(_TOTP)).encrypt(nonce, plaintext, context)
        return f"{VERSION}.{self.key_id}.{_b64(nonce + sealed)}"

    def decrypt(self, body: bytes, *, context: bytes) -> bytes:
        try:
            return ChaCha20Poly1305(self._derive(_TOTP)).decrypt(
                body[:_NONCE_BYTES], body[_NONCE_BYTES:], context)
        except InvalidTag as exc:
            raise SealError("encrypted value fails authentication") from exc


def _split(value: str) -> tuple[str, bytes]:
    version, _, rest = value.partition(".")
    key_id, _, body = rest.partition(".")
    if version != VERSION or not key_id or not body:
        raise SealError("malformed sealed value")
    return key_id, _unb64(body)


class StateKeys:
    """The current state key, plus the next one while a rotation is unfinished."""

    def __init__(self, current: StateKey, others: tuple[StateKey, ...] = ()) -> None:
        self.current = current
        self._by_id = {key.key_id: key for key in (current, *others)}

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._by_id)

    def key(self, key_id: str) -> StateKey:
        found = self._by_id.get(key_id)
        if found is None:
            raise SealError(f"sealed with unknown state key {key_id}")
        return found

    def mac(self, purpose: str, message: bytes) -> str:
        return self.current.mac(purpose, message)

    def check_mac(self, purpose: str, message: bytes, value: str) -> bool:
        """Whether ``value`` is a valid MAC of ``message`` under the key it names."""
        try:
            key_id, _ = _split(value)
            expected = self.key(key_id).mac(purpose, message)
        except SealError:
            return False
        return hmac.compare_digest(expected.encode(), value.encode())

    def encrypt(self, plaintext: bytes, *, context: bytes) -> str:
        return self.current.encrypt(plaintext, context=context)

    def decrypt(self, value: str, *, context: bytes) -> bytes:
        key_id, body = _split(value)
        return self.key(key_id).decrypt(body, context=context)

    @staticmethod
    def key_id_of(value: str) -> str:
        """The key id a sealed value names (for rotation and reports)."""
        return _split(value)[0]


def _write_new_key(path: Path) -> StateKey:
    material = secrets.token_bytes(_KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(base64.b64encode(material).decode("ascii") + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return StateKey(material)


def _read_key(path: Path) -> StateKey:
    try:
        text = path.read_text(encoding="ascii").strip()
        material = base64.b64decode(text, validate=True)
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, binascii.Error) as exc:
        raise ConfigError(f"{path}: unreadable state key ({exc})") from exc
    if len(material) != _KEY_BYTES:
        raise ConfigError(f"{path}: a state key is {_KEY_BYTES} bytes, base64-encoded")
    return StateKey(material)


def create_key_file(keys_dir: Path) -> StateKey:
    """Create ``keys/state_key`` (0600); never overwrites one."""
    return _write_new_key(keys_dir / KEY_FILE)


def load(keys_dir: Path) -> StateKeys:
    """The installation's state keys; raise :class:`ConfigError` when the key is missing."""
    path = keys_dir / KEY_FILE
    try:
        current = _read_key(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: the state key is missing. Copy it from the other nodes "
                          "or a backup; on an installation that never had one, "
                          "`blindpost init --force` creates it and seals the current "
                          "database state, trusting it once.") from None
    following = keys_dir / (KEY_FILE + NEXT_SUFFIX)
    others = (_read_key(following),) if following.exists() else ()
    return StateKeys(current, others)


def begin_rotation(keys_dir: Path) -> StateKey:
    """Write the next key beside the current one (``state_key.new``)."""
    return _write_new_key(keys_dir / (KEY_FILE + NEXT_SUFFIX))


def finish_rotation(keys_dir: Path) -> None:
    """Make the next key the current one (atomic rename, then fsync of the directory)."""
    (keys_dir / (KEY_FILE + NEXT_SUFFIX)).replace(keys_dir / KEY_FILE)
    fd = os.open(keys_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def abandon_rotation(keys_dir: Path) -> None:
    """Forget a next key that was never used."""
    (keys_dir / (KEY_FILE + NEXT_SUFFIX)).unlink(missing_ok=True)


# The registration files this process holds open (and locked) until it exits.
_registered: dict[Path, int] = {}


@contextmanager
def rotation_lock(keys_dir: Path, *, exclusive: bool) -> Iterator[None]:
    """Hold the rotation lock: exclusively for a rotation (refused, not waited for, if
    another one runs), shared while a process starts using the key (it waits)."""
    fd = os.open(keys_dir / ROTATION_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
        except BlockingIOError:
            raise GatewayError("another state key rotation is running") from None
        yield
    finally:
        os.close(fd)


def register_user(keys_dir: Path) -> None:
    """Mark this process as a user of the state key until it exits.

    Taken under the rotation lock, so a process starting during a rotation waits for it
    and then loads the new key.
    """
    directory = keys_dir / USERS_DIR
    path = directory / f"{socket.gethostname()}-{os.getpid()}"
    if path in _registered:
        return
    directory.mkdir(mode=0o700, exist_ok=True)
    with rotation_lock(keys_dir, exclusive=False):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        os.write(fd, " ".join(Path(arg).name for arg in sys.argv)[:200].encode())
    _registered[path] = fd


def other_users(keys_dir: Path) -> list[str]:
    """The other live processes using the state key, as ``host-pid (command)``; files of
    processes that ended are removed on the way."""
    directory = keys_dir / USERS_DIR
    found: list[str] = []
    for path in sorted(directory.iterdir()) if directory.is_dir() else []:
        if path in _registered:
            continue
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            command = os.read(fd, 200).decode(errors="replace").strip()
            found.append(f"{path.name} ({command or 'unknown command'})")
        else:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return found
