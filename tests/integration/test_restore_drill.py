"""The backup-and-restore runbook, run as written: back up, destroy, restore, verify, download.

deploy/runbooks/backup-and-restore.md: witness checkpoint, `pg_dump`, the data directory
through `tar | age`; then the database and the data directory are destroyed and restored,
`audit verify` passes against the witnessed checkpoint (and fails against one taken after
the backup: the restored log really is shorter), and the file that was waiting before
the backup downloads over SFTP and decrypts.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import paramiko
import psycopg
import pytest

from gateway import totp
from gateway.app import App
from gateway.config import load_settings
from gateway.db.models import Role
from tests.postgres import postgres_tool
from tests.unit.gateway.factories import OPERATOR, actor
from tests.unit.sftp_server.harness import require_tool, write_key_pair

pytestmark = pytest.mark.integration
CONTENT = b"PATIENT-4711,1990-02-03,preeclampsia\n" * 1000


def _run(env: dict[str, str], *args: str, stdout: object = subprocess.PIPE,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), env=env, stdout=stdout, stderr=subprocess.PIPE,
                            text=True, timeout=120, check=False)
    if check:
        assert result.returncode == 0, (args, result.stderr)
    return result


def _pipe(env: dict[str, str], first: list[str], second: list[str]) -> None:
    """``first | second``, without a shell."""
    producer = subprocess.Popen(first, env=env, stdout=subprocess.PIPE)
    consumer = subprocess.run(second, env=env, stdin=producer.stdout, capture_output=True,
                              timeout=120, check=False)
    assert producer.stdout is not None
    producer.stdout.close()
    assert producer.wait(timeout=120) == 0
    assert consumer.returncode == 0, consumer.stderr


def _admin(base_url: str, statement: str) -> None:
    with psycopg.connect(f"{base_url}/postgres", autocommit=True) as connection:
        connection.execute(statement)  # Test-generated names only.


def test_backup_destroy_restore(tmp_path: Path, postgres_url: str) -> None:
    age = require_tool("age")
    data_dir, backups = tmp_path / "var", tmp_path / "backups"
    backups.mkdir()
    blindpost = [sys.executable, "-m", "gateway.cli"]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BLINDPOST_")},
           "BLINDPOST_DATA_DIR": str(data_dir), "BLINDPOST_DATABASE_URL": postgres_url}

    # An installation with a file waiting for its partner.
    _run(env, *blindpost, "init", "--admin", "alice")
    _run(env, *blindpost, "keygen", "-o", str(tmp_path / "partner.key"))
    recipient = (tmp_path / "partner.key").read_text().split("public key: ")[1].split()[0]
    lee_secret = _populate(env, recipient, tmp_path)
    _run(env, *blindpost, "keygen", "--classic", "-o", str(tmp_path / "backup.key"))
    backup_recipient = (tmp_path / "backup.key").read_text().split("public key: ")[1].split()[0]

    # Backup, in the runbook's order.
    with (backups / "witness.txt").open("w") as witness:
        _run(env, *blindpost, "audit", "checkpoint", stdout=witness)
    shutil.copy2(data_dir / "audit-checkpoint.txt", data_dir / "audit-checkpoint.at-dump.txt")
    _run(env, postgres_tool("pg_dump"), "--format=custom",
         f"--file={backups / 'blindpost.dump'}", postgres_url)
    # A running gateway signs checkpoints every minute, so one may land in the data
    # directory's audit-checkpoint.txt between the dump and the archive.
    _run(env, *blindpost, "partner", "add", "during-backup")
    _run(env, *blindpost, "audit", "checkpoint")
    _pipe(env, ["tar", "-C", str(data_dir), "-cf", "-", "."],
          [age, "-r", backup_recipient, "-o", str(backups / "data.tar.age")])
    # Life goes on after the backup, and a witness sees it.
    _run(env, *blindpost, "partner", "add", "late-partner")
    with (backups / "witness-newer.txt").open("w") as witness:
        _run(env, *blindpost, "audit", "checkpoint", stdout=witness)

    # Disaster: the database and the data directory are gone.
    base_url, _, database = postgres_url.rpartition("/")
    _admin(base_url, f'DROP DATABASE "{database}" WITH (FORCE)')
    shutil.rmtree(data_dir)

    # Restore.
    _admin(base_url, f'CREATE DATABASE "{database}"')
    _run(env, postgres_tool("pg_restore"), f"--dbname={postgres_url}", "--no-owner",
         str(backups / "blindpost.dump"))
    _run(env, *blindpost, "db", "upgrade")
    data_dir.mkdir(mode=0o700)
    _pipe(env, [age, "-d", "-i", str(tmp_path / "backup.key"), str(backups / "data.tar.age")],
          ["tar", "-C", str(data_dir), "-xf", "-"])
    (data_dir / "audit-checkpoint.at-dump.txt").replace(data_dir / "audit-checkpoint.txt")

    verified = _run(env, *blindpost, "audit", "verify", "--checkpoint",
                    str(backups / "witness.txt"))
    assert verified.stdout.startswith("audit log OK")
    newer = _run(env, *blindpost, "audit", "verify", "--checkpoint",
                 str(backups / "witness-newer.txt"), check=False)
    assert newer.returncode == 1
    assert "witness-newer.txt" in newer.stderr

    # The waiting file downloads over SFTP and decrypts with the partner's key.
    ciphertext = _download(env, tmp_path, lee_secret)
    (tmp_path / "extract.csv.age").write_bytes(ciphertext)
    _run(env, *blindpost, "decrypt", "-i", str(tmp_path / "partner.key"), "-o",
         str(tmp_path / "extract.csv"), str(tmp_path / "extract.csv.age"))
    assert (tmp_path / "extract.csv").read_bytes() == CONTENT


def _populate(env: dict[str, str], recipient: str, root: Path) -> str:
    """Partner with an approved key, a partner user, one uploaded file; lee's TOTP secret."""
    app = App(load_settings(environ=env))
    try:
        app.accounts.add(OPERATOR, username="bob", role=Role.ADMIN)
        app.partners.add(OPERATOR, slug="uni")
        key = app.keys.propose(actor(app, "alice"), partner="uni", recipient=recipient)
        app.keys.approve(actor(app, "bob"), key_id=key.id)
        app.accounts.add(OPERATOR, username="clerk", role=Role.STAFF)
        lee = app.accounts.add(OPERATOR, username="lee", role=Role.PARTNER, partner="uni",
                               ssh_keys=[write_key_pair(root / "id_lee", "lee")])
        upload = app.transfers.begin_upload(actor(app, "clerk"), partner="uni",
                                            name="extract.csv")
        upload.write(CONTENT)
        upload.commit()
    finally:
        app.close()
    return lee.totp_uri.split("secret=")[1].split("&")[0]


def _download(env: dict[str, str], root: Path, secret: str) -> bytes:
    node = subprocess.Popen([sys.executable, "-m", "gateway.cli", "sftp", "--listen",
                             "127.0.0.1:0", "--workers", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert node.stdout is not None
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", node.stdout.readline())
        assert match
        transport = paramiko.Transport(socket.create_connection(
            ("127.0.0.1", int(match.group(1))), timeout=30))
        transport.connect()
        transport.auth_publickey("lee", paramiko.Ed25519Key.from_private_key_file(
            str(root / "id_lee")))
        code = totp.current_code(secret, now=datetime.now(UTC))
        transport.auth_interactive("lee", lambda _t, _i, prompts: [code] * len(prompts))
        client = paramiko.SFTPClient.from_transport(transport)
        assert client is not None
        with client:
            data: bytes = client.open("extract.csv.age").read()
        transport.close()
        return data
    finally:
        node.send_signal(signal.SIGTERM)
        node.communicate(timeout=60)
