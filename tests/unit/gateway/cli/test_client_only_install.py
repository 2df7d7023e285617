"""`pip install blindpost` without the server extra: client commands work, server ones say
which extra to install.

Each case runs ``python -m gateway.cli`` in a fresh interpreter in which the server extra's
modules cannot be imported, as on a partner's laptop.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway.cli.program import SERVER_EXTRA_HINT, SERVER_EXTRA_MODULES

ROOT = Path(__file__).resolve().parents[4]
BLOCKER = f"""
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {sorted(SERVER_EXTRA_MODULES)!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Blocker())
sys.argv[0] = "blindpost"
from gateway.cli.program import main
main()
"""
# Distribution name in pyproject.toml -> the module it provides.
MODULE_OF = {"sqlalchemy": "sqlalchemy", "alembic": "alembic", "psycopg": "psycopg",
             "pyotp": "pyotp", "argon2-cffi": "argon2", "segno": "segno", "rfc8785": "rfc8785",
             "fastapi": "fastapi", "uvicorn": "uvicorn", "jinja2": "jinja2",
             "python-multipart": "multipart", "boto3": "boto3",
             "prometheus-client": "prometheus_client", "webauthn": "webauthn",
             "numpy": "numpy"}


def _client_only(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKER, *args], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})


def test_the_blocked_modules_are_the_server_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {spec.split("[")[0].split(">")[0].split("=")[0].split("<")[0]
             for spec in project["optional-dependencies"]["server"]}
    assert {MODULE_OF[name] for name in names} == SERVER_EXTRA_MODULES
    base = {spec.split("=")[0].split(">")[0] for spec in project["dependencies"]}
    assert base == {"paramiko", "cryptography", "click", "rich"}


def test_client_commands_work_without_the_server_extra(tmp_path: Path) -> None:
    keygen = _client_only(tmp_path, "keygen", "--classic", "-o", "k.key")
    assert keygen.returncode == 0, keygen.stderr
    assert "Fingerprint: x25519 SHA256:" in keygen.stderr
    recipient = keygen.stderr.split("Public key: ")[1].split()[0]
    (tmp_path / "plain.txt").write_text("rows\n")
    assert _client_only(tmp_path, "encrypt", "-r", recipient, "-o", "c.age",
                        "plain.txt").returncode == 0
    assert _client_only(tmp_path, "decrypt", "-i", "k.key", "-o", "back.txt",
                        "c.age").returncode == 0
    assert (tmp_path / "back.txt").read_text() == "rows\n"
    fingerprint = _client_only(tmp_path, "key", "fingerprint", "k.key")
    assert fingerprint.stdout == keygen.stderr.split("Fingerprint: ")[1]
    for command in ("send", "fetch", "trust", "portal-code", "witness"):
        shown = _client_only(tmp_path, command, "--help")
        assert shown.returncode == 0, shown.stderr
    assert _client_only(tmp_path, "version").stdout == "blindpost 0.1.0\n"


@pytest.mark.parametrize("args", [["init", "--admin", "alice"], ["serve"], ["sftp"],
                                  ["key", "list"], ["audit", "verify"]])
def test_server_commands_name_the_extra(tmp_path: Path, args: list[str]) -> None:
    result = _client_only(tmp_path, *args)
    assert result.returncode == 1
    assert result.stderr.startswith("blindpost: error: `blindpost ")
    assert SERVER_EXTRA_HINT in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_server_commands_with_the_hint(tmp_path: Path) -> None:
    result = _client_only(tmp_path, "--help")
    assert result.returncode == 0
    assert re.search(r"\n  init +\(needs pip install 'blindpost\[server\]'\)", result.stdout)
    assert re.search(r"\n  send +Encrypt FILEs", result.stdout)


def test_an_export_verifies_offline_without_the_server_extra(data_dir: Path,
                                                             tmp_path: Path) -> None:
    """The incident runbook's check on a clean machine: only cryptography and the
    standard library (the canonical leaves are read without rfc8785 or SQLAlchemy)."""
    from click.testing import CliRunner

    from gateway.cli.program import main

    def server(*args: str) -> str:
        result = CliRunner().invoke(main, ["audit", *args, "--data-dir", str(data_dir)])
        assert result.exit_code == 0, result.output
        return result.stdout

    key = server("key").strip()
    (tmp_path / "cp.txt").write_text(server("checkpoint"))
    server("export", "-o", str(tmp_path / "export.jsonl"))
    verified = _client_only(tmp_path, "audit", "verify", "--export", "export.jsonl",
                            "--key", key, "--checkpoint", "cp.txt")
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("audit log OK: ")
    lines = (tmp_path / "export.jsonl").read_bytes().splitlines(keepends=True)
    (tmp_path / "forged.jsonl").write_bytes(b"".join([lines[0].replace(b'"v":1', b'"v":2'),
                                                      *lines[1:]]))
    refused = _client_only(tmp_path, "audit", "verify", "--export", "forged.jsonl",
                           "--key", key, "--checkpoint", "cp.txt")
    assert refused.returncode == 1
    assert "its root does not match the recomputed tree" in refused.stderr
