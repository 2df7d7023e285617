"""Admission: overall, per-source and still-signing-in limits, across worker rows."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from gateway.config import load_settings
from sftp_server.admission import RETURNING_SECONDS, Admission, Limits, LimitTable

LIMITS = Limits(total=6, per_source=4, unauthenticated_per_source=2, unauthenticated_total=4)


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def _table(workers: int = 2) -> LimitTable:
    return LimitTable.create(multiprocessing.get_context("spawn"), workers, b"k" * 16)


def test_limits_from_settings(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, environ={}, overrides={
        "sftp_max_connections": 200, "sftp_max_connections_per_source": 3})
    assert Limits.from_settings(settings) == Limits(200, 3, 3, 150)


def test_unauthenticated_connections_are_capped_per_source_then_signed_in_ones_fit() -> None:
    admission = Admission(_table(), row=0, limits=LIMITS)
    first, second = admission.admit("192.0.2.1"), admission.admit("192.0.2.1")
    assert first and second and admission.admit("192.0.2.1") is None
    first.release()
    second.signed_in()
    # The address has signed in: it is returning, and only the per-source limit holds.
    rest = [admission.admit("192.0.2.1") for _ in range(3)]
    assert all(rest)
    assert admission.admit("192.0.2.1") is None  # The per-source limit, 4.
    rest[0].release()
    rest[0].release()  # Twice is once.
    assert admission.admit("192.0.2.1") is not None


def test_the_reserve_is_for_addresses_that_signed_in_recently() -> None:
    table, clock = _table(), Clock()
    workers = [Admission(table, row=row, limits=LIMITS, clock=clock) for row in (0, 1)]
    returning = workers[0].admit("198.51.100.7")
    assert returning is not None
    returning.signed_in()
    returning.release()
    # Four connections still signing in, from two addresses and two workers: the share
    # for such connections (6 less a reserve of 2) is full.
    held = [workers[n % 2].admit(f"203.0.113.{n % 2}") for n in range(4)]
    assert all(held)
    assert workers[1].admit("203.0.113.9") is None
    assert workers[1].admit("198.51.100.7") is not None
    clock.now += RETURNING_SECONDS
    assert workers[0].admit("198.51.100.7") is None


def test_a_dead_workers_row_is_forgotten() -> None:
    table = _table()
    admission = Admission(table, row=1, limits=LIMITS)
    for n in range(4):
        assert admission.admit(f"203.0.113.{n}")
    assert admission.admit("203.0.113.9") is None
    table.reset_row(1)
    assert admission.admit("203.0.113.9") is not None
