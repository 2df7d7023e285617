"""The gateway's host key: pinned on first use, or checked against what the user gave."""

from __future__ import annotations

import base64
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.client.hostkeys import (
    Endpoint,
    HostKeyFingerprint,
    KnownHostsFile,
    PinnedHostKeys,
    fingerprint,
)
from gateway.errors import AuthenticationError, UsageError

GATEWAY = Endpoint("gw.example", 2222)


def _key() -> paramiko.PKey:
    line = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return paramiko.Ed25519Key(data=base64.b64decode(line.split()[1]))


def test_endpoint_names_as_known_hosts_does() -> None:
    assert str(Endpoint("gw.example", 22)) == "gw.example"
    assert str(GATEWAY) == "[gw.example]:2222"


def test_first_use_pins_then_the_same_key_passes(tmp_path: Path) -> None:
    key = _key()
    pins = PinnedHostKeys(tmp_path / "blindpost" / "known_hosts")
    notice = pins.verify(GATEWAY, key)
    assert notice is not None
    assert fingerprint(key) in notice
    assert pins.path.read_text() == f"[gw.example]:2222 ssh-ed25519 {key.get_base64()}\n"
    assert (pins.path.stat().st_mode & 0o777) == 0o600
    assert pins.verify(GATEWAY, key) is None
    other_port = Endpoint("gw.example", 2200)
    assert pins.verify(other_port, _key()) is not None


def test_a_changed_key_is_refused_naming_both(tmp_path: Path) -> None:
    old, new = _key(), _key()
    pins = PinnedHostKeys(tmp_path / "known_hosts")
    pins.verify(GATEWAY, old)
    with pytest.raises(AuthenticationError) as refused:
        pins.verify(GATEWAY, new)
    message = refused.value.diagnostics()
    assert fingerprint(old) in message
    assert fingerprint(new) in message
    assert "does not match" in message


def test_known_hosts_file(tmp_path: Path) -> None:
    key = _key()
    path = tmp_path / "known_hosts"
    path.write_text(f"[gw.example]:2222 ssh-ed25519 {key.get_base64()}\n")
    KnownHostsFile(path).verify(GATEWAY, key)
    with pytest.raises(AuthenticationError, match="does not match"):
        KnownHostsFile(path).verify(GATEWAY, _key())
    with pytest.raises(AuthenticationError, match=r"has no host key for gw\.other"):
        KnownHostsFile(path).verify(Endpoint("gw.other", 22), key)
    with pytest.raises(UsageError, match="no such file"):
        KnownHostsFile(tmp_path / "missing")


def test_fingerprint_option() -> None:
    key = _key()
    HostKeyFingerprint(fingerprint(key)).verify(GATEWAY, key)
    with pytest.raises(AuthenticationError, match="the --host-key you gave"):
        HostKeyFingerprint(fingerprint(_key())).verify(GATEWAY, key)
    with pytest.raises(UsageError, match="expected an OpenSSH fingerprint"):
        HostKeyFingerprint("MD5:aa:bb")
