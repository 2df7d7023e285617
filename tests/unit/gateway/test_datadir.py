"""`init`: what it creates, with which modes, atomically, and never over existing keys."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from sqlalchemy import inspect

import gateway.datadir
from gateway.app import App
from gateway.config import load_settings
from gateway.datadir import initialise
from gateway.errors import ConfigError, ConflictError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_creates_everything_with_private_modes(tmp_path: Path) -> None:
    result = initialise(tmp_path / "var", admin="alice", environ={})
    root = tmp_path / "var"
    assert result.admin is not None
    assert result.admin.one_time_password
    assert result.admin.totp_uri.startswith("otpauth://totp/Blindpost:alice?secret=")
    assert result.host_key_fingerprint and result.host_key_fingerprint.startswith("SHA256:")
    assert _mode(root) == 0o700
    assert _mode(root / "keys") == 0o700
    for private in ("keys/ssh_host_ed25519_key", "keys/audit_ed25519", "blindpost.toml",
                    "blindpost.db"):
        assert _mode(root / private) == 0o600, private
    assert (root / "keys/ssh_host_ed25519_key").read_text().startswith(
        "-----BEGIN OPENSSH PRIVATE KEY-----")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".var.init-")]


def test_migrations_from_empty(tmp_path: Path) -> None:
    initialise(tmp_path / "var", admin=None, environ={})
    app = App(load_settings(data_dir=tmp_path / "var", environ={}))
    tables = set(inspect(app.engine).get_table_names())
    app.close()
    assert {"partners", "accounts", "ssh_keys", "totp_secrets", "partner_keys", "transfers",
            "auth_throttle", "alembic_version"} <= tables


def test_refuses_existing_directory_without_force(tmp_path: Path) -> None:
    initialise(tmp_path / "var", admin="alice", environ={})
    key_before = (tmp_path / "var/keys/audit_ed25519").read_bytes()
    with pytest.raises(ConflictError, match="already exists; use --force"):
        initialise(tmp_path / "var", admin="bob", environ={})
    assert (tmp_path / "var/keys/audit_ed25519").read_bytes() == key_before


def test_force_completes_without_overwriting_keys(tmp_path: Path) -> None:
    initialise(tmp_path / "var", admin="alice", environ={})
    host_key = (tmp_path / "var/keys/ssh_host_ed25519_key").read_bytes()
    (tmp_path / "var/keys/audit_ed25519").unlink()
    result = initialise(tmp_path / "var", admin="bob", force=True, environ={})
    assert result.host_key_fingerprint is None
    assert (tmp_path / "var/keys/ssh_host_ed25519_key").read_bytes() == host_key
    assert (tmp_path / "var/keys/audit_ed25519").exists()
    assert result.admin is not None and result.admin.account.username == "bob"


def test_empty_existing_directory_is_fine(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    initialise(tmp_path / "var", admin=None, environ={})
    assert (tmp_path / "var/keys/ssh_host_ed25519_key").exists()


def test_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(path: Path) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(gateway.datadir, "generate_signing_key_file", broken)
    with pytest.raises(OSError, match="disk on fire"):
        initialise(tmp_path / "var", admin="alice", environ={})
    assert list(tmp_path.iterdir()) == []


def test_unwritable_parent_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot create the data directory"):
        initialise(blocker / "var", admin=None, environ={})
