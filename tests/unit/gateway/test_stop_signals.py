"""Stop signals arrive through a pipe: no Python code runs in the handler, others don't count."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from gateway.stop_signals import StopSignals


@pytest.fixture
def stop() -> Iterator[StopSignals]:
    previous = signal.getsignal(signal.SIGTERM)
    signals = StopSignals()
    yield signals
    signals.close()
    assert signal.getsignal(signal.SIGTERM) is previous


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_the_wait(stop: StopSignals, signum: signal.Signals) -> None:
    assert stop.wait(0) is False
    os.kill(os.getpid(), signum)
    started = time.monotonic()
    assert stop.wait(10) is True
    assert time.monotonic() - started < 1
    assert stop.name == signum.name
    assert stop.wait(None) is True  # It stays requested.


def test_other_signals_do_not_stop(stop: StopSignals) -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, _frame: seen.append(signum))
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.wait(0.2) is False
        assert seen == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_the_first_signal_is_the_reason(stop: StopSignals) -> None:
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.poll() is True
    assert stop.name == "SIGINT"
