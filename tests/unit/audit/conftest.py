"""Fixtures for the audit tests: a migrated SQLite database, a signing key, a log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit import AuditLog, NoteSigner
from gateway.audit.siem import JsonlSink
from gateway.db import make_engine, make_sessionmaker, upgrade
from tests.conftest import FakeClock
from tests.unit.audit.audit_support import make_signer


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    instance = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    upgrade(instance)
    yield instance
    instance.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


@pytest.fixture
def signer(tmp_path: Path) -> NoteSigner:
    return make_signer(tmp_path)


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def log(signer: NoteSigner, clock: FakeClock, jsonl: Path) -> AuditLog:
    return AuditLog(signer=signer, clock=clock, checkpoint_every=4, checkpoint_seconds=300,
                    sinks=[JsonlSink(jsonl)])
