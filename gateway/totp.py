"""Time-based one-time codes (RFC 6238): secrets, provisioning and checking.

Checks follow warehouse's rules: 20-byte secrets, one step of clock tolerance either way,
constant-time comparison, and a code for a time step at or before the last accepted one is
a replay and is refused.
"""

from __future__ import annotations

import hmac
from datetime import datetime

import pyotp

from gateway.errors import AuthenticationError

STEP_SECONDS = 30
DIGITS = 6
TOLERANCE_STEPS = 1
ISSUER = "Blindpost"


class InvalidCodeError(AuthenticationError):
    """The code is malformed or matches no time step in the tolerance window."""


class ReplayedCodeError(AuthenticationError):
    """The code matches a time step that was already used."""


def new_secret() -> str:
    """A fresh base32 secret of 20 random bytes (160 bits, as RFC 4226 recommends)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, *, account: str, issuer: str = ISSUER) -> str:
    """The ``otpauth://`` URI an authenticator app scans."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=account, issuer_name=issuer)


def current_code(secret: str, *, now: datetime) -> str:
    """The code for ``now`` (tests and the first-login helper use it)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).at(now)


def time_step(now: datetime) -> int:
    return int(now.timestamp()) // STEP_SECONDS


def check_code(secret: str, code: str, *, now: datetime, last_step: int | None) -> int:
    """Return the time step ``code`` belongs to, or raise.

    Every candidate step is compared, whatever matched first, so the time taken does not
    tell which step (if any) matched.
    """
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        raise InvalidCodeError("invalid one-time code")
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    current = time_step(now)
    matched: int | None = None
    for step in range(current - TOLERANCE_STEPS, current + TOLERANCE_STEPS + 1):
        expected = totp.generate_otp(step)
        if hmac.compare_digest(expected.encode(), code.encode()) and matched is None:
            matched = step
    if matched is None:
        raise InvalidCodeError("invalid one-time code")
    if last_step is not None and matched <= last_step:
        raise ReplayedCodeError("one-time code already used; wait for the next code")
    return matched
