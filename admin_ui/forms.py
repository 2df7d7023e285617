"""Reading form and query values into the types the services take (one clear error each)."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.errors import UsageError


def optional_int(value: str, *, field: str) -> int | None:
    """An integer, or None for an empty field."""
    value = value.strip()
    if not value:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise UsageError(f"{field}: expected a whole number, got {value[:20]!r}")
    return int(value)


def optional_time(value: str | None, *, field: str) -> datetime | None:
    """An ISO 8601 date or time (UTC unless it says otherwise), or None when empty."""
    if value is None or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise UsageError(f"{field}: expected a date or time such as 2026-11-01 or "
                         f"2026-11-01T08:00, got {value[:40]!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
