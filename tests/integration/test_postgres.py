"""The gateway on a real PostgreSQL server: migrations, services, audit append-only rules."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from gateway import envelope, totp
from gateway.app import App
from gateway.config import load_settings
from gateway.datadir import initialise
from gateway.db import make_engine
from gateway.db.models import Role
from gateway.errors import AuthenticationError
from tests.conftest import FakeClock
from tests.unit.gateway.db.test_migrations import check_retention_migration
from tests.unit.gateway.factories import account, actor, audit_events, partner_with_key

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_app(tmp_path: Path, postgres_url: str, clock: FakeClock) -> Iterator[App]:
    environ = {"BLINDPOST_DATABASE_URL": postgres_url}
    initialise(tmp_path / "var", admin="root-admin", environ=environ)
    app = App(load_settings(data_dir=tmp_path / "var", environ=environ), clock=clock)
    yield app
    app.close()


def test_migrations_from_empty(pg_app: App) -> None:
    assert pg_app.engine.dialect.name == "postgresql"
    tables = set(inspect(pg_app.engine).get_table_names())
    assert {"partners", "accounts", "transfers", "partner_keys", "audit_entries"} <= tables
    assert not (pg_app.settings.data_dir / "blindpost.db").exists()


def test_upload_download_round_trip(pg_app: App) -> None:
    identity = partner_with_key(pg_app, "uni")
    account(pg_app, "clerk", Role.STAFF)
    account(pg_app, "lee", Role.PARTNER, partner="uni")
    upload = pg_app.transfers.begin_upload(actor(pg_app, "clerk"), partner="uni", name="x.csv")
    upload.write(b"rows" * 50_000)
    upload.commit()
    download = pg_app.transfers.open_download(actor(pg_app, "lee"), "x.csv.age")
    ciphertext = download.read_at(0, download.size)
    download.close()
    assert envelope.decrypt_bytes(ciphertext, [identity]) == b"rows" * 50_000
    assert audit_events(pg_app, "file:download:complete")


def test_replay_and_lockout_state_lives_in_the_database(pg_app: App, clock: FakeClock) -> None:
    partner_with_key(pg_app, "uni")
    new, key = account(pg_app, "lee", Role.PARTNER, partner="uni")
    secret = new.totp_uri.split("secret=")[1].split("&")[0]
    code = totp.current_code(secret, now=clock())

    def sign_in(app: App, code: str) -> None:
        attempt = app.auth.begin(source="192.0.2.1")
        app.auth.accept_public_key(attempt, username="lee", key_blob=key.blob)
        app.auth.accept_code(attempt, username="lee", code=code)

    sign_in(pg_app, code)
    # A second App is another worker or node: it must see the used code.
    other = App(pg_app.settings, clock=clock)
    with pytest.raises(AuthenticationError, match="replayed"):
        sign_in(other, code)
    other.close()


@pytest.mark.parametrize("statement", [
    "UPDATE audit_entries SET tag = 'forged'",
    "DELETE FROM audit_entries",
    "TRUNCATE audit_entries",
])
def test_audit_table_is_append_only(pg_app: App, statement: str) -> None:
    assert audit_events(pg_app, "account:create")
    with pytest.raises(DBAPIError), pg_app.engine.begin() as connection:
        connection.execute(text(statement))
    assert audit_events(pg_app, "account:create")


def test_concurrent_appends_are_gap_free(pg_app: App) -> None:
    errors: list[BaseException] = []

    def add_partners(worker: int) -> None:
        try:
            for n in range(10):
                pg_app.partners.add(actor=actor(pg_app, "root-admin"), slug=f"p{worker}-{n}")
        except BaseException as exc:  # Reported below; a thread cannot fail the test itself.
            errors.append(exc)

    threads = [threading.Thread(target=add_partners, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with pg_app.engine.connect() as connection:
        indices = list(connection.execute(text("SELECT idx FROM audit_entries ORDER BY idx"))
                       .scalars())
    assert indices == list(range(len(indices)))
    assert len(audit_events(pg_app, "partner:create")) == 60


def test_retention_days_become_seconds_on_postgresql(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    try:
        check_retention_migration(engine)
    finally:
        engine.dispose()
