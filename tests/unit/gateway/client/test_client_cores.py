"""A second chunk thread only when a core is free."""

from __future__ import annotations

import os

import pytest

from gateway.client import cores


@pytest.mark.parametrize(("cpus", "load", "threads"), [
    (2, 0.2, 2), (2, 1.0, 2), (2, 1.5, 1), (2, 12.0, 1), (1, 0.0, 1), (8, 6.5, 2)])
def test_two_threads_only_with_a_core_to_spare(monkeypatch: pytest.MonkeyPatch, cpus: int,
                                               load: float, threads: int) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cpus)))
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert cores.chunk_threads() == threads
    assert cores.block_bytes(threads) == threads * 256 * 1024


@pytest.mark.parametrize(("cpus", "load", "workers"), [
    (1, 0.0, 1), (2, 12.0, 2), (3, 0.0, 3), (16, 0.0, 4)])
def test_range_workers_one_per_core_whatever_the_load(
        monkeypatch: pytest.MonkeyPatch, cpus: int, load: float, workers: int) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cpus)))
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert cores.range_workers() == workers
