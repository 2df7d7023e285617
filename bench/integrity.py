"""Signed and current state (not a test): what seals and currency add to a sign-in and an upload.

Run: ``.venv/bin/python bench/integrity.py [--accounts 10000] [--rounds 300]
[--entries 1000000]``.

An installation on SQLite with ``--accounts`` partner accounts (each with an SSH key and a
TOTP enrolment) and as many recipient keys. Then, in the same run, sign-ins (public key,
then code, the real ``AuthService``) and small uploads (the real ``TransferService``), each
timed with the seal checks on and with them turned off: the difference is what signed
state costs. Then the same with current state (gateway/ledger.py: following the log,
recording each sealed row, the TOTP step and restrictions) turned on and off. Then the
log is grown to ``--entries`` entries, and a node's start is timed: from its snapshot
(the normal case) and, as the reference, replaying the whole log through verification;
with the memory the followed state takes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from gateway import envelope, integrity, totp
from gateway.actors import Actor
from gateway.app import App
from gateway.audit import AuditTag
from gateway.audit.log import AuditLog
from gateway.config import load_settings
from gateway.datadir import initialise
from gateway.db.models import Account, KeyState, Partner, PartnerKey, Role, SSHKey, TOTPSecret
from gateway.ledger import Ledger
from gateway.sshkeys import parse_public_key

OPERATOR = Actor.local_operator()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _key() -> Any:
    public = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return parse_public_key(public.decode() + " bench")


def _account_actor(app: App, username: str) -> Actor:
    info = app.accounts.get(OPERATOR, username)
    return Actor.account(username=info.username, account_id=info.id, role=info.role,
                         partner_id=info.partner_id, source="192.0.2.1")


def build(app: App, accounts: int) -> dict[str, tuple[str, bytes]]:
    """``accounts`` partner accounts (SSH key, TOTP) and as many recipient keys, in bulk.

    Written through the gateway's own sessions, so the flush hooks seal every row; in
    large transactions, since only the size of the tables matters here.
    """
    app.accounts.add(OPERATOR, username="second-admin", role=Role.ADMIN)
    root, second = _account_actor(app, "root-admin"), _account_actor(app, "second-admin")
    app.partners.add(OPERATOR, slug="p0")
    for _ in range(2):
        recipient = str(envelope.generate_identity(post_quantum=False).recipient)
        app.keys.approve(second, key_id=app.keys.propose(root, partner="p0",
                                                         recipient=recipient).id)
    users: dict[str, tuple[str, bytes]] = {}
    now = app.clock()
    for chunk in range(0, accounts, 1000):
        with app.transaction() as session:
            partner = Partner(slug=f"bulk{chunk}", name="bulk", retention_seconds=7 * 86400,
                              max_downloads=None, disabled=False, created_at=now)
            session.add(partner)
            session.flush()
            for index in range(chunk, min(chunk + 1000, accounts)):
                username, ssh, secret = f"u{index}", _key(), totp.new_secret()
                account = Account(username=username, role=Role.PARTNER, partner_id=partner.id,
                                  disabled=False, created_at=now)
                session.add(account)
                session.flush()
                session.add(SSHKey(account_id=account.id, key_type=ssh.key_type,
                                   key_data=ssh.data_b64, fingerprint=ssh.fingerprint,
                                   comment="", created_at=now))
                session.add(TOTPSecret(account_id=account.id, last_step=None, created_at=now,
                                       secret=integrity.encrypt_totp(
                                           app.state_keys, account_id=account.id,
                                           secret=secret)))
                recipient = envelope.generate_identity(post_quantum=False).recipient
                session.add(PartnerKey(partner_id=partner.id, recipient=str(recipient),
                                       kind=recipient.kind, fingerprint=recipient.fingerprint,
                                       label="", state=KeyState.PROPOSED,
                                       proposed_by=root.account_id, proposed_at=now))
                users[username] = (secret, ssh.blob)
    app.accounts.add(OPERATOR, username="clerk", role=Role.STAFF, ssh_keys=[_key()])
    return users


@contextmanager
def seals_off() -> Iterator[None]:
    """Turn the seal checks into no-ops (the reference: the gateway without them)."""
    saved = integrity.Integrity.verify
    integrity.Integrity.verify = lambda _self, _row: None  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        integrity.Integrity.verify = saved  # type: ignore[method-assign]


@contextmanager
def current_state_off(app: App) -> Iterator[None]:
    """The reference: the gateway without current state (no following, no recording)."""
    saved = {name: getattr(Ledger, name) for name in
             ("stale", "totp_step", "locked_until", "guesses", "downloads", "served")}
    record, record_rows = AuditLog.record, app._record_state_rows

    def record_all_but_steps(self: AuditLog, session: Any, **kwargs: Any) -> int:
        return 0 if kwargs["tag"] is AuditTag.TOTP_USE else record(self, session, **kwargs)

    Ledger.stale = lambda *_a, **_k: None  # type: ignore[method-assign,assignment,return-value]
    Ledger.totp_step = lambda *_a, **_k: -1  # type: ignore[method-assign,assignment,return-value]
    Ledger.locked_until = lambda *_a, **_k: None  # type: ignore[method-assign,assignment,return-value]
    Ledger.guesses = Ledger.downloads = Ledger.served = (  # type: ignore[method-assign,assignment]
        lambda *_a, **_k: 0)
    AuditLog.record = record_all_but_steps  # type: ignore[method-assign]
    app._record_state_rows = lambda *_a: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(Ledger, name, value)
        AuditLog.record = record  # type: ignore[method-assign]
        app._record_state_rows = record_rows  # type: ignore[method-assign]


def paired_with(action: Callable[[], object], rounds: int,
                off: Callable[[], Any]) -> tuple[float, float, float]:
    """Median ms with a feature, without (inside ``off()``), and the median of the
    per-round differences. Rounds alternate on and off, so drift in the machine's load
    cancels out."""
    on_times, off_times = [], []
    for _ in range(rounds):
        on_times.append(_once(action))
        with off():
            off_times.append(_once(action))
    differences = [a - b for a, b in zip(on_times, off_times, strict=True)]
    return (statistics.median(on_times), statistics.median(off_times),
            statistics.median(differences))


def grow_log(app: App, entries: int) -> None:
    """Append events until the log holds ``entries``, in large transactions."""
    actor = Actor.system("bench")
    with app.read() as session:
        size = app.audit.size(session)
    while size < entries:
        with app.transaction() as session:
            for _ in range(min(5000, entries - size)):
                app.audit.record(session, tag=AuditTag.LOGIN_FAILURE, actor=actor,
                                 subject="account:nobody", details={"reason": "bench"})
            size = app.audit.size(session)


def start_up(app_settings: Any, clock: Clock, *, snapshot: bool) -> tuple[float, float]:
    """Seconds for a new process's App to follow the log, and the MiB its state takes."""
    import tracemalloc
    fresh = App(app_settings, clock=clock)
    try:
        if not snapshot:
            fresh.settings.state_snapshot_path.unlink(missing_ok=True)
        fresh.state_keys  # noqa: B018  # Loaded before the clock starts, as at a start.
        tracemalloc.start()
        started = time.perf_counter()
        fresh.ledger.catch_up()
        seconds = time.perf_counter() - started
        current = tracemalloc.take_snapshot().statistics("filename")
        tracemalloc.stop()
        held = sum(stat.size for stat in current) / 2**20
        return seconds, held
    finally:
        fresh.close()


def _once(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def paired(action: Callable[[], object], rounds: int) -> tuple[float, float, float]:
    """Median ms with seal checks, without, and the median of the per-round differences."""
    return paired_with(action, rounds, seals_off)


def count_checks(action: Callable[[], object]) -> int:
    """How many seals one ``action`` checks."""
    saved, calls = integrity.Integrity.verify, [0]

    def counting(self: integrity.Integrity, row: Any) -> None:
        calls[0] += 1
        saved(self, row)

    integrity.Integrity.verify = counting  # type: ignore[method-assign]
    try:
        action()
    finally:
        integrity.Integrity.verify = saved  # type: ignore[method-assign]
    return calls[0]


def timed(action: Callable[[], object], rounds: int) -> float:
    """Median milliseconds of ``action``."""
    return statistics.median(_once(action) for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--tiny", action="store_true",
                        help="seconds, not minutes: the suite runs it so it cannot rot")
    options = parser.parse_args()
    if options.tiny:
        options.accounts, options.rounds, options.entries = 50, 3, 500
    with tempfile.TemporaryDirectory() as directory:
        data_dir = Path(directory) / "var"
        initialise(data_dir, admin="root-admin", environ={})
        clock = Clock()
        app = App(load_settings(data_dir=data_dir, environ={}), clock=clock)
        started = time.perf_counter()
        users = build(app, options.accounts)
        print(f"built {len(users)} accounts, {len(users)} recipient keys and SSH keys "
              f"in {time.perf_counter() - started:.0f} s")
        names = list(users)
        state = {"n": 0}

        def sign_in() -> None:
            clock.now += timedelta(seconds=totp.STEP_SECONDS)
            username = names[state["n"] % len(names)]
            state["n"] += 1
            secret, blob = users[username]
            attempt = app.auth.begin(source="192.0.2.9")
            app.auth.accept_public_key(attempt, username=username, key_blob=blob)
            app.auth.accept_code(attempt, username=username,
                                 code=totp.current_code(secret, now=clock()))

        clerk = _account_actor(app, "clerk")

        def upload() -> None:
            # A new name each time, as extracts are named: replacing a file changes its
            # row, which current state checkpoints at once (priced apart, below).
            state["n"] += 1
            handle = app.transfers.begin_upload(clerk, partner="p0",
                                                name=f"bench-{state['n']}.csv")
            handle.write(b"x" * 1024)
            handle.commit()

        for label, action in (("sign-in", sign_in), ("upload", upload)):
            on, off, extra = paired(action, options.rounds)
            print(f"{label:8} median {on:7.3f} ms with seal checks, {off:7.3f} ms without; "
                  f"median paired difference {extra:+.3f} ms; "
                  f"{count_checks(action)} seal checks each")
        with app.read() as session:
            account = session.scalars(select(Account).where(Account.username == names[0])
                                      ).one()
            check = timed(lambda: app.integrity.verify(account), options.rounds * 10)
            totp_row = account.totp
            assert totp_row is not None
            decrypt = timed(lambda: integrity.decrypt_totp(
                app.state_keys, account_id=account.id, stored=totp_row.secret),
                options.rounds * 10)
        print(f"one seal check {check * 1000:.1f} µs; one TOTP decryption {decrypt * 1000:.1f} µs")
        for label, action in (("sign-in", sign_in), ("upload", upload)):
            on, off, extra = paired_with(action, options.rounds,
                                         lambda: current_state_off(app))
            print(f"{label:8} median {on:7.3f} ms with current state, {off:7.3f} ms without; "
                  f"median paired difference {extra:+.3f} ms")
        started = time.perf_counter()
        grow_log(app, options.entries)
        app.ledger.catch_up()
        app.ledger.save_snapshot()
        print(f"grew the log to {options.entries} entries in "
              f"{time.perf_counter() - started:.0f} s")
        settings = app.settings
        app.close()
        from_snapshot, held = start_up(settings, clock, snapshot=True)
        replayed, _ = start_up(settings, clock, snapshot=False)
        print(f"node start-up: {from_snapshot:.2f} s from its snapshot, {replayed:.2f} s "
              f"replaying the whole log (reference; ratio {replayed / from_snapshot:.1f}x); "
              f"the followed state holds {held:.1f} MiB")


if __name__ == "__main__":
    main()
