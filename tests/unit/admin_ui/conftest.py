"""Fixtures of the console tests: people signed in through the pages, and API tokens."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from argon2 import PasswordHasher

from gateway import passwords
from gateway.app import App
from gateway.db.models import Role
from tests.conftest import FakeClock
from tests.unit.admin_ui.console_support import Person, enrolled

# Production argon2id parameters cost half a second a hash here; these tests sign in dozens
# of people. Cheap parameters keep the same code paths (tests of rehashing use others).
CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashes() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(passwords, "_hasher", CHEAP)
        patch.setattr(passwords, "_DUMMY_HASH", CHEAP.hash("blindpost: no such account"))
        yield


@pytest.fixture
def alice(app: App, clock: FakeClock) -> Iterator[Person]:
    person = enrolled(app, clock, "alice", Role.ADMIN)
    yield person
    person.client.close()


@pytest.fixture
def bob(app: App, clock: FakeClock) -> Iterator[Person]:
    person = enrolled(app, clock, "bob", Role.ADMIN)
    yield person
    person.client.close()


@pytest.fixture
def audrey(app: App, clock: FakeClock) -> Iterator[Person]:
    person = enrolled(app, clock, "audrey", Role.AUDITOR)
    yield person
    person.client.close()
