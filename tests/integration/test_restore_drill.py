"""The backup-and-restore runbook, run as written: back up, destroy, restore, verify, download.

deploy/runbooks/backup-and-restore.md's blocks run in a scratch root (tests/runbooks.py),
once for each shape: SQLite on one host (`sqlite3 .backup`), and PostgreSQL with its owner
and application roles (`pg_dump` as the owner). Each drill makes the backup key as the
runbook shows, backs up an installation with a file waiting for its partner, checks that
no backup file is readable by others and no unencrypted copy is left, destroys the
database and the data directory, restores them, and then: `audit verify` passes against
the witnessed checkpoint (and fails against one taken after the backup: the restored log
really is shorter), and the file that was waiting before the backup downloads over SFTP
and decrypts with the partner's key.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from gateway.app import App
from gateway.config import load_settings
from gateway.db.models import Role
from tests.postgres import postgres_tool
from tests.runbooks import Session, sftp_node
from tests.unit.gateway.factories import OPERATOR, actor
from tests.unit.sftp_server.harness import require_tool, write_key_pair

pytestmark = pytest.mark.integration
CONTENT = b"PATIENT-4711,1990-02-03,preeclampsia\n" * 1000
BIN = str(Path(sys.executable).parent)
BLINDPOST = [sys.executable, "-m", "gateway.cli"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    require_tool("age")
    require_tool("sqlite3")
    path = f"{BIN}:{Path(postgres_tool('pg_dump')).parent}:{os.environ['PATH']}"
    return {**{k: v for k, v in os.environ.items() if not k.startswith("BLINDPOST_")},
            "PATH": path, "HOME": str(tmp_path), **extra}


def _run(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*BLINDPOST, *args], env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    if check:
        assert result.returncode == 0, (args, result.stderr)
    return result


def _backup_key(tmp_path: Path, env: dict[str, str], book: Session) -> Path:
    """The runbook's backup key, made "offline" (in its own directory); the recipient
    copied to the server as the runbook says."""
    offline = tmp_path / "offline"
    offline.mkdir()
    book.chdir(offline)
    book.run("blindpost keygen --classic -o backup.key")
    assert (offline / "backup.key").stat().st_mode & 0o077 == 0
    backups = book.node_path("/var/backups/blindpost")
    backups.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copy(offline / "backup-recipient.txt", backups)
    return offline / "backup.key"


def _backup(book: Session, env: dict[str, str], database_block: str, archive_block: str) -> None:
    """Back up as the runbook says, with life going on between its two steps (a running
    gateway signs a checkpoint into the data directory every minute)."""
    book.run(database_block)
    _run(env, "partner", "add", "during-backup")
    _run(env, "audit", "checkpoint")
    book.run(archive_block)
    backups = book.node_path("/var/backups/blindpost")
    for path in [backups, *backups.rglob("*")]:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    names = sorted(p.name for p in backups.iterdir())
    assert all(n.endswith((".age", ".txt")) for n in names), f"unencrypted copy left: {names}"


def _after_restore(book: Session, env: dict[str, str], tmp_path: Path,
                   lee_secret: str) -> None:
    data_dir = book.node_path("/var/lib/blindpost")
    assert data_dir.stat().st_mode & 0o777 == 0o700
    backups = book.node_path("/var/backups/blindpost")
    [newer] = backups.glob("witness-newer.txt")
    refused = _run(env, "audit", "verify", "--checkpoint", str(newer), check=False)
    assert refused.returncode == 1
    assert "witness-newer.txt" in refused.stderr
    # The waiting file downloads over SFTP and decrypts with the partner's key.
    with sftp_node(BLINDPOST, env, user="lee", key=tmp_path / "id_lee",
                   totp_secret=lee_secret) as client:
        (tmp_path / "extract.csv.age").write_bytes(client.open("extract.csv.age").read())
    _run(env, "decrypt", "-i", str(tmp_path / "partner.key"), "-o",
         str(tmp_path / "extract.csv"), str(tmp_path / "extract.csv.age"))
    assert (tmp_path / "extract.csv").read_bytes() == CONTENT


def _witness_newer(env: dict[str, str], book: Session) -> None:
    """Life goes on after the backup, and a witness sees it."""
    _run(env, "partner", "add", "late-partner")
    checkpoint = _run(env, "audit", "checkpoint").stdout
    (book.node_path("/var/backups/blindpost") / "witness-newer.txt").write_text(checkpoint)


def test_sqlite_backup_destroy_restore(tmp_path: Path) -> None:
    root = tmp_path / "node"
    data_dir = root / "var/lib/blindpost"
    env = _env(tmp_path, BLINDPOST_DATA_DIR=str(data_dir))
    book = Session("backup-and-restore.md", root=root, cwd=tmp_path, env=env)
    _run(env, "init", "--admin", "alice")
    lee_secret = _installation_with_a_waiting_file(env, tmp_path)
    key = _backup_key(tmp_path, env, book)

    _backup(book, env, 'sqlite3 "$BLINDPOST_DATA_DIR/blindpost.db" ".backup',
            'tar -cf - -C "$BLINDPOST_DATA_DIR"')
    _witness_newer(env, book)

    # Disaster: the data directory, database and all, is gone.
    shutil.rmtree(data_dir)
    restore_dir = tmp_path / "restore"
    restore_dir.mkdir()
    backups = book.node_path("/var/backups/blindpost")
    for path in [key, *backups.glob("*.age"), *backups.glob("witness-2*.txt")]:
        shutil.copy(path, restore_dir)
    book.chdir(restore_dir)
    restored = book.run("systemctl stop blindpost\n")
    assert restored.stdout.startswith("audit log OK")
    assert "systemctl start blindpost" in book.host_commands()
    _after_restore(book, env, tmp_path, lee_secret)
    # Every block of the backup key and the SQLite sections ran; the others are the
    # PostgreSQL drill's.
    assert all(b.section.startswith("PostgreSQL") for b in book.unrun()), book.unrun()


def _owner_and_app(base_url: str) -> tuple[str, str]:
    """The runbook's roles and its `blindpost` database, fresh; their URLs."""
    with psycopg.connect(f"{base_url}/postgres", autocommit=True) as connection:
        for role in ("blindpost_owner", "blindpost_app"):
            if not connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                      (role,)).fetchone():
                connection.execute(f"CREATE ROLE {role} LOGIN")  # Fixed names.
        connection.execute("DROP DATABASE IF EXISTS blindpost WITH (FORCE)")
        connection.execute("CREATE DATABASE blindpost OWNER blindpost_owner")

    def url(role: str) -> str:
        return base_url.replace("//postgres@", f"//{role}@") + "/blindpost"

    return url("blindpost_owner"), url("blindpost_app")


def test_postgres_backup_destroy_restore(tmp_path: Path, postgres_base_url: str) -> None:
    root = tmp_path / "node"
    data_dir = root / "var/lib/blindpost"
    owner, app = _owner_and_app(postgres_base_url)
    host, port = postgres_base_url.rsplit("@", 1)[1].split(":")
    env = _env(tmp_path, owner=owner, PGHOST=host, PGPORT=port, PGUSER="postgres")
    book = Session("backup-and-restore.md", root=root, cwd=tmp_path, env=env)
    env_file = book.node_path("/etc/blindpost") / "blindpost.env"
    env_file.write_text(f"BLINDPOST_DATA_DIR={data_dir}\nBLINDPOST_DATABASE_URL={app}\n")
    env_file.chmod(0o600)
    as_owner = {**env, "BLINDPOST_DATA_DIR": str(data_dir), "BLINDPOST_DATABASE_URL": owner}
    _run(as_owner, "init", "--admin", "alice")
    _run(as_owner, "db", "grant", "blindpost_app", "--apply")
    as_app = {**as_owner, "BLINDPOST_DATABASE_URL": app}
    lee_secret = _installation_with_a_waiting_file(as_app, tmp_path)
    key = _backup_key(tmp_path, env, book)

    _backup(book, as_app, 'pg_dump --format=custom "$owner"',
            'tar -C "$BLINDPOST_DATA_DIR" -cf - .')
    _witness_newer(as_app, book)

    # Disaster: the database and the data directory are gone.
    with psycopg.connect(f"{postgres_base_url}/postgres", autocommit=True) as connection:
        connection.execute("DROP DATABASE blindpost WITH (FORCE)")
    shutil.rmtree(data_dir)
    restore_dir = tmp_path / "restore"
    restore_dir.mkdir()
    backups = book.node_path("/var/backups/blindpost")
    for path in [key, *backups.glob("*.age"), *backups.glob("witness-2*.txt")]:
        shutil.copy(path, restore_dir)
    book.chdir(restore_dir)
    book.run("systemctl stop blindpost-sftp blindpost-console")
    book.run("createdb --owner=blindpost_owner blindpost")
    book.run("age -d -i backup.key blindpost-data-$stamp.tar.age")
    verified = book.run("set +a\nblindpost audit verify --full --checkpoint witness-$stamp.txt")
    assert verified.stdout.startswith("audit log OK")
    assert "sudo -u postgres createdb --owner=blindpost_owner blindpost" in book.host_commands()
    _after_restore(book, as_app, tmp_path, lee_secret)
    assert all(b.section.startswith("One host") for b in book.unrun()), book.unrun()


def _installation_with_a_waiting_file(env: dict[str, str], root: Path) -> str:
    """A partner with an approved key and a partner user, one uploaded file waiting for
    them; lee's TOTP secret."""
    _run(env, "keygen", "-o", str(root / "partner.key"))
    recipient = (root / "partner.key").read_text().split("public key: ")[1].split()[0]
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
