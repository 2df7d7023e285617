"""Twenty OpenSSH ``sftp`` sessions at once on one SFTP worker, under CPU load, over SQLite
and over PostgreSQL.

A registry's partners download, and its staff upload, twenty at a time. On a busy
machine such a burst once left every sign-in waiting on SQLite's write lock for the
30 s busy timeout, and clients saw "Connection closed": the thread holding the write
lock waited for the ledger's lock, whose holder waited for a pooled connection, and
every pooled connection was held by a thread waiting for the write lock (see
``Ledger.catch_up``). Each session here must succeed, and the audit log must verify and
record each transfer exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway import totp
from gateway.audit import verify_database
from gateway.db.engine import snapshot
from gateway.db.models import Role
from tests.unit.sftp_server.harness import (
    Installation,
    User,
    askpass_script,
    audit_events,
    require_tool,
)

pytestmark = pytest.mark.integration
SESSIONS = 20
SIZE = 256 * 1024


@contextmanager
def cpu_load(processes: int = os.cpu_count() or 2) -> Iterator[None]:
    """A busy loop on every core, as ``stress --cpu N`` would run, for the block's length."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
               for _ in range(processes)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def start_sftp(inst: Installation, user: User, commands: Sequence[str], *,
               code: str, known_hosts: Path) -> subprocess.Popen[str]:
    """OpenSSH's ``sftp`` in batch mode as ``user``, left running (the code through
    SSH_ASKPASS, standard error kept for the assertion)."""
    work = inst.root / user.username
    work.mkdir(exist_ok=True)
    batch = work / "batch.txt"
    batch.write_text("\n".join(commands) + "\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work),
           "SSH_ASKPASS": str(askpass_script(work, code)), "SSH_ASKPASS_REQUIRE": "force",
           "DISPLAY": ":0"}
    return subprocess.Popen(
        [require_tool("sftp"), "-o", "BatchMode=no", "-b", str(batch), "-P", str(inst.port),
         "-i", str(user.key_path), "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
         "-F", "/dev/null", "-o", f"UserKnownHostsFile={known_hosts}",
         "-o", "StrictHostKeyChecking=yes", f"{user.username}@127.0.0.1"],
        env=env, cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)


def discard(inst: Installation, user: User) -> Path:
    """A link to /dev/null for ``user``'s download, never /dev/null itself: after downloads
    failed as root, /dev/null was found a regular file (an ``sftp`` client can unlink what
    it downloads to); unlinked, the link goes alone."""
    link = inst.root / f"null-{user.username}"
    link.symlink_to(os.devnull)
    return link


def run_all(inst: Installation, jobs: list[tuple[User, list[str]]]) -> list[str]:
    """Start every session at once under CPU load; return the failures' standard error.

    Every user signs in with the code of the same fresh time step (each account's own
    step, so none is a replay)."""
    inst.clock.advance(seconds=totp.STEP_SECONDS)
    codes = [totp.current_code(user.secret, now=inst.clock()) for user, _ in jobs]
    # Written once: known_hosts() rewrites the file, which clients already started read.
    known_hosts = inst.known_hosts()
    with cpu_load():
        processes = [start_sftp(inst, user, commands, code=code, known_hosts=known_hosts)
                     for (user, commands), code in zip(jobs, codes, strict=True)]
        errors = [process.communicate(timeout=120)[1] for process in processes]
    return [f"{user.username}: {error.strip()}" for (user, _), process, error
            in zip(jobs, processes, errors, strict=True) if process.returncode != 0]


def assert_log_verifies(inst: Installation) -> None:
    with snapshot(inst.app.engine) as session:
        verify_database(session, verifier=inst.app.audit.verifier,
                        entry_keys=inst.app.state_keys)


@pytest.fixture(params=["sqlite", "postgresql"])
def inst(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Installation]:
    """One worker on SQLite, and on the suite's PostgreSQL server (scale-out)."""
    environ = ({"BLINDPOST_DATABASE_URL": request.getfixturevalue("postgres_url")}
               if request.param == "postgresql" else {})
    # Every client comes from 127.0.0.1, and all sign in at once.
    installation = Installation(tmp_path, environ=environ,
                                sftp_max_connections_per_source=100,
                                sftp_max_unauthenticated_per_source=100)
    installation.add_partner("acme")
    installation.start()
    yield installation
    installation.close()


def test_twenty_concurrent_downloads_under_load_all_complete(inst: Installation) -> None:
    clerk = inst.add_user("clerk", Role.STAFF)
    partners = [inst.add_user(f"p{n}", Role.PARTNER, partner="acme") for n in range(SESSIONS)]
    source = inst.root / "extract.csv"
    source.write_bytes(os.urandom(SIZE))
    assert run_all(inst, [(clerk, [f"put {source} /acme/extract.csv"])]) == []

    failures = run_all(inst, [(user, [f"get extract.csv.age {discard(inst, user)}"])
                              for user in partners])

    assert failures == []
    complete = audit_events(inst.app, "file:download:complete")
    assert sorted(e["actor"] for e in complete) == sorted(u.username for u in partners)
    size = inst.app.transfers.inbox(inst.actor(partners[0]))[0].size
    assert {e["details"]["served"] for e in complete} == {size}
    assert audit_events(inst.app, "file:download:incomplete") == []
    assert inst.app.ledger.downloads(complete[0]["subject"].partition(":")[2]) == SESSIONS
    assert_log_verifies(inst)


def test_twenty_concurrent_uploads_under_load_all_arrive(inst: Installation) -> None:
    staff = [inst.add_user(f"clerk{n}", Role.STAFF) for n in range(SESSIONS)]
    lee = inst.add_user("lee", Role.PARTNER, partner="acme")
    source = inst.root / "extract.csv"
    source.write_bytes(os.urandom(SIZE))

    failures = run_all(inst, [(user, [f"put {source} /acme/from-{user.username}.csv"])
                              for user in staff])

    assert failures == []
    uploads = audit_events(inst.app, "file:upload:complete")
    assert sorted(e["actor"] for e in uploads) == sorted(u.username for u in staff)
    assert sorted(f.name for f in inst.app.transfers.inbox(inst.actor(lee))) == sorted(
        f"from-{user.username}.csv.age" for user in staff)
    assert audit_events(inst.app, "file:upload:aborted") == []
    assert_log_verifies(inst)
