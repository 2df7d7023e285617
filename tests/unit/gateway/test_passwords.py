"""Console password hashing: the dummy hash that evens out a check of a missing account
is made on the first check, not at import, and is made whichever way that check goes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from argon2 import PasswordHasher

from gateway import passwords

CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "_hasher", CHEAP)
    monkeypatch.setattr(passwords, "_DUMMY_HASH", None)


def test_importing_makes_no_hash() -> None:
    # A hash with the production parameters costs about half a second; every command
    # that imports the accounts layer used to pay it.
    probe = "from gateway import passwords; print(passwords._DUMMY_HASH)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "None"


@pytest.mark.usefixtures("fresh")
def test_the_first_check_makes_the_dummy_even_for_an_existing_account() -> None:
    stored = CHEAP.hash("correct horse battery")
    assert passwords.verify(stored, "correct horse battery")
    assert passwords._DUMMY_HASH is not None


@pytest.mark.usefixtures("fresh")
def test_a_missing_account_matches_nothing() -> None:
    assert not passwords.verify(None, "blindpost: no such account")
    assert passwords._DUMMY_HASH is not None
    assert not passwords.verify("", "anything at all")
