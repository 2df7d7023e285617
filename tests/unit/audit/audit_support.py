"""Helpers shared by the audit tests (imported by name: the test folders are not packages)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from gateway.actors import Actor, ActorKind
from gateway.audit import AuditLog, AuditTag, NoteSigner, generate_signing_key_file, load_signer
from tests.conftest import FakeClock

ORIGIN = "registry.example/blindpost"


def named(name: str) -> Actor:
    """An actor that adds nothing to an event but its name."""
    return Actor(ActorKind.ACCOUNT, name)


def make_signer(directory: Path, name: str = ORIGIN) -> NoteSigner:
    """Create a key file under ``directory`` and load it as a signer."""
    path = directory / "keys" / "audit_ed25519"
    generate_signing_key_file(path)
    return load_signer(path, name=name)


def fill(log: AuditLog, sessions: sessionmaker[Session], count: int, *,
         clock: FakeClock | None = None) -> None:
    """Record ``count`` events, one transaction each."""
    for number in range(count):
        with sessions.begin() as session:
            log.record(session, tag=AuditTag.DOWNLOAD_COMPLETE, actor=named("partner-a"),
                       subject=f"file:{number}", details={"bytes": 1000 + number,
                                                          "source": "192.0.2.7"})
        if clock is not None:
            clock.advance(seconds=1)
