"""Several uploads at once share a small receive budget: each channel's window stays
within its share, none stalls, and every file arrives intact.

The gateway's budget is 1 MiB for the process, at most 1 MiB per channel: one session
alone gets 1 MiB, four at once 256 KiB each. Every grant the server makes is recorded
with the share before and after it (the share changes only as channels open and close,
so the grant was computed from one of the two).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from gateway.db.models import Role
from sftp_server.receive_budget import ChannelWindow, ReceiveBudget
from tests.unit.sftp_server.harness import (
    Installation,
    assert_delivered,
    paramiko_sftp,
    upload_at_once,
)

pytestmark = pytest.mark.integration
KIB = 1 << 10
MIB = 1 << 20
SESSIONS = 4
SIZE = 3 * MIB


@pytest.fixture
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    installation = Installation(tmp_path_factory.mktemp("budget"), sftp_receive_budget_mib=1,
                                sftp_channel_window_kib=1024)
    installation.add_partner("acme")
    installation.add_user("clerk", Role.STAFF)
    installation.add_user("lee", Role.PARTNER, partner="acme")
    installation.start()
    yield installation
    installation.close()


class Spy:
    """Records the server's budgets and every grant: (bytes granted, held after it, share
    before, share after)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.budgets: list[ReceiveBudget] = []
        self.grants: list[tuple[int, int, int, int]] = []
        self._lock = threading.Lock()
        opening, granting = ReceiveBudget.open, ChannelWindow._grant

        def open_window(budget: ReceiveBudget, *, granted: int) -> ChannelWindow:
            with self._lock:
                if budget not in self.budgets:
                    self.budgets.append(budget)
            return opening(budget, granted=granted)

        def grant(window: ChannelWindow) -> int:
            before = window._budget.share
            room = granting(window)
            with self._lock:
                self.grants.append((room, window.held, before, window._budget.share))
            return room

        monkeypatch.setattr(ReceiveBudget, "open", open_window)
        monkeypatch.setattr(ChannelWindow, "_grant", grant)


def test_concurrent_uploads_stay_within_their_shares(inst: Installation,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(monkeypatch)
    files = {f"part-{n}.bin": os.urandom(SIZE) for n in range(SESSIONS)}
    with ExitStack() as stack:
        # Signed in one after the other (each login takes a fresh TOTP step), so all
        # four channels are open before the first byte of any upload is sent.
        clients = [stack.enter_context(paramiko_sftp(inst, inst.users["clerk"]))
                   for _ in files]
        [budget] = spy.budgets
        assert budget.channels == SESSIONS
        assert budget.share == 256 * KIB
        opened = len(spy.grants)
        upload_at_once(clients, files, "acme", timeout=30)
    # A grant never leaves a channel holding more than its share. While all four were
    # open, the first session's 1 MiB (granted when it was alone) was not granted back
    # as it was read, until it held less than 256 KiB.
    assert all(held <= max(before, after) for room, held, before, after in spy.grants if room)
    during = [(room, held) for room, held, before, after in spy.grants[opened:]
              if before == after == 256 * KIB]
    assert max(held for room, held in during if room) <= 256 * KIB
    assert any(not room and held > 256 * KIB for room, held in during)
    # Each session's window went back to the budget (the server notices the close in
    # its own time).
    deadline = time.monotonic() + 10
    while budget.channels and time.monotonic() < deadline:
        time.sleep(0.02)
    assert budget.channels == 0
    assert_delivered(inst, inst.users["lee"], files, "acme")


def test_a_lone_session_is_raised_from_the_opening_window_to_its_share(
        inst: Installation) -> None:
    """Channels open with 256 KiB; an SFTP session alone gets the whole share (1 MiB here)
    before it sends a request."""
    with paramiko_sftp(inst, inst.users["clerk"]) as client:
        credit = client.sock.out_window_size
    # Less only what the client sent so far (its INIT and nothing else).
    assert 1 * MIB - 1 * KIB < credit <= 1 * MIB
