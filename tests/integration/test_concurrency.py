"""Shared state under concurrency, on PostgreSQL and on SQLite.

Threads (and, for the one-time code, separate processes) race for the same state: one
code, one name, one lockout, one inbox name, one download. Exactly one wins each race,
and the losers get the gateway's own errors, never a database traceback.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import event, select

from gateway import envelope, totp
from gateway.app import App
from gateway.audit import verify_database
from gateway.auth import SignInRefusedError
from gateway.config import load_settings
from gateway.datadir import initialise
from gateway.db.engine import snapshot
from gateway.db.models import Account, AuthThrottle, PortalEnrolment, Role, Transfer, TransferState
from gateway.errors import AuthenticationError, ConflictError, GatewayError, UsageError
from gateway.notify.models import NotificationVerification
from gateway.portal_enrolment import REFUSED
from gateway.sshkeys import PublicKey
from tests.conftest import FakeClock
from tests.unit.gateway.factories import (
    OPERATOR,
    account,
    actor,
    audit_events,
    partner_with_key,
)

pytestmark = pytest.mark.integration
THREADS = 8
T = TypeVar("T")


@dataclass
class World:
    app: App
    clock: FakeClock
    settings_env: dict[str, str]
    data_dir: Path
    secret: str
    key: PublicKey


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    env = {}
    if request.param == "postgresql":
        env["BLINDPOST_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    data_dir = tmp_path / "var"
    initialise(data_dir, admin="root-admin", environ=env)
    clock = FakeClock()
    settings = load_settings(data_dir=data_dir, environ=env,
                             overrides={"lockout_threshold": 1000})
    app = App(settings, clock=clock)
    partner_with_key(app, "uni", max_downloads=1)
    new, key = account(app, "lee", Role.PARTNER, partner="uni")
    account(app, "clerk", Role.STAFF)
    secret = new.totp_uri.split("secret=")[1].split("&")[0]
    yield World(app, clock, env, data_dir, secret, key)
    app.close()


def race(count: int, work: Callable[[int], T]) -> list[T | GatewayError]:
    """Run ``work(i)`` in ``count`` threads released at the same instant."""
    barrier = threading.Barrier(count)

    def run(index: int) -> T | GatewayError:
        barrier.wait()
        try:
            return work(index)
        except GatewayError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def test_one_code_signs_in_once_across_threads(world: World) -> None:
    app = world.app
    for _ in range(5):
        world.clock.advance(seconds=totp.STEP_SECONDS)
        code = totp.current_code(world.secret, now=world.clock())
        attempts = [app.auth.begin(source=f"192.0.2.{n}") for n in range(THREADS)]
        for attempt in attempts:
            app.auth.accept_public_key(attempt, username="lee", key_blob=world.key.blob)
        results = race(THREADS, lambda n: app.auth.accept_code(
            attempts[n], username="lee", code=code))  # noqa: B023  # Used within the loop.
        assert sum(not isinstance(r, GatewayError) for r in results) == 1
        refused = [r for r in results if isinstance(r, GatewayError)]
        assert all(isinstance(r, AuthenticationError) and str(r) == "replayed code"
                   for r in refused)


SIGN_IN = """
import sys, time
from datetime import datetime
from pathlib import Path
from gateway.app import App
from gateway.config import load_settings
from gateway.errors import AuthenticationError
data_dir, moment, code, key_hex, go = sys.argv[1:6]
settings = load_settings(data_dir=Path(data_dir), overrides={"lockout_threshold": 1000})
now = datetime.fromisoformat(moment)
app = App(settings, clock=lambda: now)
attempt = app.auth.begin(source="198.51.100.9")
app.auth.accept_public_key(attempt, username="lee", key_blob=bytes.fromhex(key_hex))
print("ready", flush=True)
while not Path(go).exists():
    time.sleep(0.001)
try:
    app.auth.accept_code(attempt, username="lee", code=code)
    print("signed in", flush=True)
except AuthenticationError as exc:
    print(exc, flush=True)
"""


def test_one_code_signs_in_once_across_processes(world: World, tmp_path: Path) -> None:
    for trial in range(3):
        world.clock.advance(seconds=totp.STEP_SECONDS)
        moment = world.clock().isoformat()
        code = totp.current_code(world.secret, now=world.clock())
        go = tmp_path / f"go-{trial}"
        env = {"PATH": "/usr/bin:/bin", **world.settings_env}
        processes = [subprocess.Popen(
            [sys.executable, "-c", SIGN_IN, str(world.data_dir), moment, code,
             world.key.blob.hex(), str(go)], stdout=subprocess.PIPE, text=True, env=env,
            cwd=Path(__file__).parents[2]) for _ in range(2)]
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        go.touch()
        outcomes = sorted(p.communicate(timeout=60)[0].strip() for p in processes)
        assert outcomes == ["replayed code", "signed in"]


@pytest.mark.parametrize("create", ["partner", "account", "key"])
def test_concurrent_creates_one_wins(world: World, create: str) -> None:
    app = world.app
    recipient = str(envelope.generate_identity().recipient)
    admin = actor(app, "root-admin")
    work: Callable[[int], object] = {
        "partner": lambda _: app.partners.add(OPERATOR, slug="same"),
        "account": lambda _: app.accounts.add(OPERATOR, username="same", role=Role.STAFF),
        "key": lambda _: app.keys.propose(admin, partner="uni", recipient=recipient),
    }[create]
    results = race(THREADS, work)
    losers = [r for r in results if isinstance(r, GatewayError)]
    assert len(losers) == THREADS - 1
    expected = {"partner": "partner 'same' already exists",
                "account": "account 'same' already exists",
                "key": "partner 'uni' already has this key"}[create]
    assert all(isinstance(r, ConflictError) and str(r) == expected for r in losers)


def _wrong_code(world: World) -> str:
    right = totp.current_code(world.secret, now=world.clock())
    return "000000" if right != "000000" else "111111"


def test_failures_are_counted_exactly(world: World) -> None:
    app = world.app
    attempts = [app.auth.begin(source="203.0.113.5") for _ in range(THREADS)]
    for attempt in attempts:
        app.auth.accept_public_key(attempt, username="lee", key_blob=world.key.blob)
    wrong = _wrong_code(world)
    race(THREADS, lambda n: app.auth.accept_code(attempts[n], username="lee", code=wrong))
    with app.read() as session:
        counts = {row.scope: row.failures for row in session.scalars(select(AuthThrottle))}
    # Each a connection of its own, after a verified key: one failure each, counted
    # against the account only.
    assert counts == {"account": THREADS}


def test_a_lockout_is_set_and_audited_once(world: World) -> None:
    app = world.app
    app.settings = load_settings(data_dir=world.data_dir, environ=world.settings_env,
                                 overrides={"lockout_threshold": 3})
    attempts = [app.auth.begin(source=f"203.0.113.{n}") for n in range(THREADS)]
    for attempt in attempts:
        app.auth.accept_public_key(attempt, username="lee", key_blob=world.key.blob)
    wrong = _wrong_code(world)
    race(THREADS, lambda n: app.auth.accept_code(attempts[n], username="lee", code=wrong))
    lockouts = [e for e in audit_events(app, "auth:lockout") if e["subject"] == "account:lee"]
    assert len(lockouts) == 1


def test_same_name_uploaded_at_once_supersedes(world: World) -> None:
    app = world.app
    clerk = actor(app, "clerk")
    uploads = [app.transfers.begin_upload(clerk, partner="uni", name="same.csv")
               for _ in range(THREADS)]
    for number, upload in enumerate(uploads):
        upload.write(f"version {number}".encode())
    results = race(THREADS, lambda n: uploads[n].commit())
    assert not [r for r in results if isinstance(r, GatewayError)]
    with app.read() as session:
        states = sorted(row.state for row in session.scalars(select(Transfer)))
    assert states.count(TransferState.AVAILABLE) == 1
    assert states.count(TransferState.SUPERSEDED) == THREADS - 1
    assert len(list(app.store.list_objects())) == 1


def test_a_download_limit_holds_under_parallel_opens(world: World) -> None:
    app = world.app
    upload = app.transfers.begin_upload(actor(app, "clerk"), partner="uni", name="once.csv")
    upload.write(b"rows")
    upload.commit()
    lee = actor(app, "lee")
    results = race(THREADS, lambda _: app.transfers.open_download(lee, "once.csv.age"))
    opened = [r for r in results if not isinstance(r, GatewayError)]
    assert len(opened) == 1


def test_the_log_stays_gap_free(world: World) -> None:
    app = world.app
    race(THREADS, lambda n: app.partners.add(OPERATOR, slug=f"p{n}"))
    with snapshot(app.engine) as session:
        report = verify_database(session, verifier=app.audit.verifier)
    assert report.size > THREADS


def test_an_enrolment_code_enrols_once(world: World) -> None:
    app = world.app
    lee = actor(app, "lee")
    issued = app.portal_enrolment.issue(lee)
    if app.engine.dialect.name == "postgresql":
        # Both sign-ins have read and checked the code before either deletes it: the race
        # the delete itself must decide. (SQLite's BEGIN IMMEDIATE runs them one after
        # the other, so there the second finds no code.)
        both_checked = threading.Barrier(2, timeout=20)

        def hold(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
            if statement.lstrip().upper().startswith("DELETE FROM PORTAL_ENROLMENTS"):
                both_checked.wait()

        event.listen(app.engine, "before_cursor_execute", hold)

    def take(_: int) -> SignInRefusedError | None:
        with app.transaction() as session:
            account = session.scalars(select(Account).where(Account.username == "lee")).one()
            return app.portal_enrolment.take(session, account, issued.code, lee,
                                             world.clock())

    results = race(2, take)
    assert results.count(None) == 1
    refused = next(r for r in results if r is not None)
    # The loser is told what a late or wrong code is told, and it counts as a guess.
    assert isinstance(refused, SignInRefusedError)
    assert (refused.tell, refused.guess) == (REFUSED, True)
    assert len(audit_events(app, "portal:enrolment:use")) == 1
    assert len(audit_events(app, "portal:enrolment:failure")) == 1
    with app.read() as session:
        assert session.get(PortalEnrolment, lee.account_id) is None
    with snapshot(app.engine) as session:
        verify_database(session, verifier=app.audit.verifier)


def test_wrong_address_codes_are_each_counted(world: World) -> None:
    app = world.app
    lee = actor(app, "lee")
    with app.transaction() as session:
        session.add(NotificationVerification(
            account_id=lee.account_id, email="lee@uni.example", attempts=0,
            expires_at=world.clock() + timedelta(minutes=30),
            code_hash=app.state_keys.mac("row", b"not a code anyone types")))
    if app.engine.dialect.name == "postgresql":
        # Both confirmations are about to read the pending code before either writes its
        # count: each must still see the other's wrong guess. (SQLite's BEGIN IMMEDIATE
        # runs them one after the other.)
        both_reading = threading.Barrier(2, timeout=20)

        def hold(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
            if "FROM notification_verifications" in statement:
                both_reading.wait()

        event.listen(app.engine, "before_cursor_execute", hold)

    results = race(2, lambda _: app.notifications.confirm_address(
        lee, username="lee", code="00000000"))
    if app.engine.dialect.name == "postgresql":
        event.remove(app.engine, "before_cursor_execute", hold)
    assert all(isinstance(r, UsageError) for r in results), results
    with app.read() as session:
        row = session.get(NotificationVerification, lee.account_id)
        assert row is not None and row.attempts == 2
    assert len(audit_events(app, "notify:verify:failure")) == 2
