"""Least privilege on a real PostgreSQL server: an owner role migrates, the gateway runs as
an application role that cannot rewrite the audit log or change the schema."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from gateway import envelope, totp
from gateway.app import App
from gateway.audit import verify_database
from gateway.config import load_settings
from gateway.datadir import initialise
from gateway.db.engine import snapshot
from gateway.db.models import Role
from gateway.errors import AuthenticationError
from tests.conftest import FakeClock
from tests.unit.gateway.factories import account, actor, audit_events, partner_with_key

pytestmark = pytest.mark.integration


def _url(base: str, role: str, database: str) -> str:
    """``base`` is postgresql://postgres@host:port; the server trusts loopback logins."""
    return base.replace("//postgres@", f"//{role}@") + f"/{database}"


@pytest.fixture
def roles(postgres_base_url: str) -> tuple[str, str]:
    """A database owned by a fresh owner role, and a fresh application role: their URLs."""
    suffix = uuid.uuid4().hex[:8]
    owner, app_role, database = f"owner_{suffix}", f"app_{suffix}", f"g{suffix}"
    with psycopg.connect(f"{postgres_base_url}/postgres", autocommit=True) as connection:
        connection.execute(f"CREATE ROLE {owner} LOGIN")
        connection.execute(f"CREATE ROLE {app_role} LOGIN")
        connection.execute(f"CREATE DATABASE {database} OWNER {owner}")
    return _url(postgres_base_url, owner, database), _url(postgres_base_url, app_role, database)


def _blindpost(data_dir: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BLINDPOST_")},
           "BLINDPOST_DATA_DIR": str(data_dir), "BLINDPOST_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def app_as_role(tmp_path: Path, roles: tuple[str, str], clock: FakeClock) -> Iterator[App]:
    owner_url, app_url = roles
    data_dir = tmp_path / "var"
    initialise(data_dir, admin="root-admin", environ={"BLINDPOST_DATABASE_URL": owner_url})
    result = _blindpost(data_dir, owner_url, "db", "grant", app_url.split("//")[1].split("@")[0],
                        "--apply")
    assert result.returncode == 0, result.stderr
    app = App(load_settings(data_dir=data_dir, environ={"BLINDPOST_DATABASE_URL": app_url}),
              clock=clock)
    yield app
    app.close()


@pytest.mark.parametrize(("statement", "refusal"), [
    ("UPDATE audit_entries SET tag = 'forged'", "permission denied for table audit_entries"),
    ("DELETE FROM audit_nodes", "permission denied for table audit_nodes"),
    ("TRUNCATE audit_checkpoints", "permission denied for table audit_checkpoints"),
    ("ALTER TABLE audit_entries DISABLE TRIGGER ALL", "must be owner of table audit_entries"),
    ("DROP TRIGGER audit_entries_append_only ON audit_entries", "must be owner of"),
    ("CREATE TABLE shadow (x int)", "permission denied for schema public"),
    ("ALTER TABLE accounts ADD COLUMN backdoor text", "must be owner of table accounts"),
    ("DROP TABLE transfers", "must be owner of table transfers"),
])
def test_the_application_role_cannot_rewrite_history_or_the_schema(
        app_as_role: App, statement: str, refusal: str) -> None:
    with pytest.raises(DBAPIError, match=refusal), app_as_role.engine.begin() as connection:
        connection.execute(text(statement))
    assert audit_events(app_as_role, "account:create")


def test_the_gateway_works_as_the_application_role(app_as_role: App, clock: FakeClock) -> None:
    app = app_as_role
    identity = partner_with_key(app, "uni")
    account(app, "clerk", Role.STAFF)
    new, key = account(app, "lee", Role.PARTNER, partner="uni")
    upload = app.transfers.begin_upload(actor(app, "clerk"), partner="uni", name="x.csv")
    upload.write(b"rows" * 1000)
    upload.commit()
    download = app.transfers.open_download(actor(app, "lee"), "x.csv.age")
    assert envelope.decrypt_bytes(download.read_at(0, download.size), [identity]) == (
        b"rows" * 1000)
    download.close()
    # Failures count and clear (auth_throttle rows are updated and deleted).
    secret = new.totp_uri.split("secret=")[1].split("&")[0]
    attempt = app.auth.begin(source="192.0.2.1")
    app.auth.accept_public_key(attempt, username="lee", key_blob=key.blob)
    with pytest.raises(AuthenticationError):
        app.auth.accept_code(attempt, username="lee", code="000000")
    app.auth.accept_code(attempt, username="lee", code=totp.current_code(secret, now=clock()))
    clock.advance(days=8)
    assert app.retention.purge().purged == 1
    with app.transaction() as session:
        app.audit.checkpoint(session)
    with snapshot(app.engine) as session:
        assert verify_database(session, verifier=app.audit.verifier).size > 10


def test_grants_are_printed_for_review(tmp_path: Path, roles: tuple[str, str]) -> None:
    owner_url, _ = roles
    initialise(tmp_path / "var", admin=None, environ={"BLINDPOST_DATABASE_URL": owner_url})
    printed = _blindpost(tmp_path / "var", owner_url, "db", "grant", "blindpost_app").stdout
    assert 'GRANT SELECT, INSERT ON public.audit_checkpoints, public.audit_cosignatures, ' \
           'public.audit_entries, ' \
           'public.audit_nodes TO blindpost_app;' in printed
    audit_lines = [line for line in printed.splitlines() if "audit_entries" in line]
    assert all("UPDATE" not in line and "DELETE" not in line for line in audit_lines)
    refused = _blindpost(tmp_path / "var", owner_url, "db", "grant", "Robert'); DROP")
    assert refused.returncode == 2
    assert "invalid role name" in refused.stderr
    owner = owner_url.split("//")[1].split("@")[0]
    refused = _blindpost(tmp_path / "var", owner_url, "db", "grant", owner, "--apply")
    assert refused.returncode == 2
    assert "owns the schema" in refused.stderr


def test_grants_are_refused_on_sqlite(tmp_path: Path) -> None:
    initialise(tmp_path / "var", admin=None, environ={})
    result = _blindpost(tmp_path / "var", "", "db", "grant", "blindpost_app")
    assert result.returncode == 2
    assert "`db grant` is for PostgreSQL" in result.stderr
