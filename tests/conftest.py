"""Fixtures shared by the whole suite: a fresh data directory per test, a fake clock."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import settings

from gateway.app import App
from gateway.config import load_settings
from gateway.datadir import initialise
from tests.postgres import create_database, postgres_server
from tests.s3 import moto_server

# Property tests check behaviour, not speed: a per-example deadline only makes them flaky on
# a busy machine (benchmarks in bench/ measure speed).
settings.register_profile("blindpost", deadline=None)
settings.load_profile("blindpost")


class FakeClock:
    """A clock tests move by hand, so nothing sleeps."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture(scope="session")
def postgres_base_url() -> Iterator[str]:
    """A private PostgreSQL server shared by the session (tests get their own database)."""
    with postgres_server() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_base_url: str) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return create_database(postgres_base_url, f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A local S3 endpoint (moto server) shared by the session; tests make their own buckets."""
    with moto_server() as url:
        yield url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An initialised data directory with one admin, ``root-admin``."""
    target = tmp_path / "var"
    initialise(target, admin="root-admin", environ={})
    return target


@pytest.fixture
def app(data_dir: Path, clock: FakeClock) -> Iterator[App]:
    instance = App(load_settings(data_dir=data_dir, environ={}), clock=clock)
    yield instance
    instance.close()
