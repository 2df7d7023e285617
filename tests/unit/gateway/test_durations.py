"""Durations as operators write them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.durations import format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("15m", 900), ("12h", 43200), ("7d", 604800), ("2w", 1209600),
    ("7", 604800), (" 3D ", 259200), (30, 2592000)])
def test_accepted(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "message"), [
    ("0s", "must be longer than zero"), ("0", "must be longer than zero"),
    ("-3d", "invalid duration '-3d'"), ("7x", "invalid duration '7x'"), ("", "invalid"),
    ("1.5h", "invalid"), ("7 days", "invalid"), ("d", "invalid")])
def test_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [
    (604800, "7d"), (1209600, "14d"), (129600, "36h"), (5400, "90m"), (61, "61s"), (0, "0s")])
def test_rendered_in_the_largest_exact_unit(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=1, max_value=10**9))
def test_round_trip(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds
