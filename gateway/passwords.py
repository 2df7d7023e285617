"""Console passwords: argon2id hashes, rehashed when the parameters change, and the rules
a new password must meet."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gateway.errors import UsageError

MIN_LENGTH = 12
MAX_LENGTH = 256
# argon2-cffi's defaults are argon2id with RFC 9106's low-memory profile.
_hasher = PasswordHasher()
# Checked when the account does not exist, so a miss takes as long as a wrong password.
# Made on the first check rather than at import: a hash costs about half a second, which
# every command importing this module (`user list`, `files`) would otherwise pay.
_DUMMY_HASH: str | None = None


def _dummy_hash() -> str:
    global _DUMMY_HASH  # noqa: PLW0603  # One hash per process, made when first needed.
    if _DUMMY_HASH is None:
        _DUMMY_HASH = _hasher.hash("blindpost: no such account")
    return _DUMMY_HASH


def hash_password(password: str) -> str:
    """The argon2id hash of ``password``."""
    return _hasher.hash(password)


def verify(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored`` (a missing hash matches nothing, slowly)."""
    # Made before looking at ``stored``: the first check of a process then takes as long
    # whether the account exists or not.
    dummy = _dummy_hash()
    try:
        return _hasher.verify(stored or dummy, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """Whether ``stored`` was made with other parameters than today's."""
    return _hasher.check_needs_rehash(stored)


def check_new(password: str, *, username: str, current: str | None) -> str:
    """Return ``password`` if it may become ``username``'s password, else raise."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise UsageError(f"a password needs {MIN_LENGTH} to {MAX_LENGTH} characters; "
                         "a phrase of several words is easiest to remember")
    if username.lower() in password.lower():
        raise UsageError("the password must not contain the username")
    if len(set(password)) < 5:
        raise UsageError("the password repeats too few characters")
    if current is not None and verify(current, password):
        raise UsageError("choose a new password, not the one you signed in with")
    return password
