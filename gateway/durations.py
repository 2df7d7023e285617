"""Durations as operators write them: ``90s``, ``15m``, ``12h``, ``7d``, ``2w``.

A bare number is days, so configuration written when retention was counted in days
keeps its meaning. Durations are held as whole seconds.
"""

from __future__ import annotations

import re

from gateway.errors import UsageError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Largest first; weeks are accepted but shown as days ("14d" reads faster than "2w").
_RENDER_ORDER = ("d", "h", "m", "s")
_PATTERN = re.compile(r"(\d{1,12})\s*([smhdw]?)")
EXAMPLES = "90s, 15m, 12h, 7d or 2w (a bare number is days)"


def parse_duration(text: str | int, *, what: str = "duration") -> int:
    """Return the seconds that ``text`` names; raise :class:`ValueError` saying why not.

    Only positive durations are accepted; callers check their own ceilings.
    """
    if isinstance(text, bool):
        raise ValueError(f"invalid {what} {text!r}: use {EXAMPLES}")
    match = _PATTERN.fullmatch(str(text).strip().lower())
    if match is None:
        raise ValueError(f"invalid {what} {text!r}: use {EXAMPLES}")
    seconds = int(match.group(1)) * UNITS[match.group(2) or "d"]
    if seconds <= 0:
        raise ValueError(f"invalid {what} {text!r}: must be longer than zero")
    return seconds


def format_duration(seconds: int) -> str:
    """``seconds`` in the largest unit that holds it exactly: ``7d``, ``36h``, ``90m``.

    The text parses back to the same number of seconds.
    """
    if seconds <= 0:
        return f"{seconds}s"
    unit = next(u for u in _RENDER_ORDER if seconds % UNITS[u] == 0)
    return f"{seconds // UNITS[unit]}{unit}"


def duration_option(text: str | None, *, what: str) -> int | None:
    """A duration as an operator types it (command line or console), in seconds.

    None for an empty value (keep the current one, or the default); a bad one is a
    :class:`~gateway.errors.UsageError` naming ``what`` (callers check their ceilings).
    """
    if text is None or not text.strip():
        return None
    try:
        return parse_duration(text, what=what)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def parse_retention(text: str | None) -> int | None:
    """A partner's retention as typed, in seconds (see :func:`duration_option`)."""
    return duration_option(text, what="retention")
