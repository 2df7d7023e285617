"""The receive budget's arithmetic: shares as channels open and close, grants withheld
while a channel holds more than its share and resumed when it reads, never below the
minimum, and a count that stays right under concurrent opens and closes."""

from __future__ import annotations

import threading

import paramiko
import pytest
from paramiko.common import cMSG_CHANNEL_WINDOW_ADJUST

from sftp_server.paramiko_fence import budget_channel_window
from sftp_server.receive_budget import ReceiveBudget

KIB = 1 << 10
MIB = 1 << 20


def _budget(total: int = 4 * MIB) -> ReceiveBudget:
    return ReceiveBudget(total, minimum=256 * KIB, maximum=2 * MIB)


def test_share_is_the_budget_divided_clamped_to_the_bounds() -> None:
    budget = _budget()
    assert budget.share == 2 * MIB  # none open: a new channel may get the maximum
    windows = [budget.open(granted=256 * KIB) for _ in range(3)]
    assert budget.share == 4 * MIB // 3
    windows += [budget.open(granted=256 * KIB) for _ in range(29)]
    assert budget.channels == 32
    assert budget.share == 256 * KIB  # 128 KiB each would be below the minimum
    for window in windows[:31]:
        window.close()
    assert budget.channels == 1
    assert budget.share == 2 * MIB  # one channel alone: the maximum, not all 4 MiB


def test_close_twice_gives_the_share_back_once() -> None:
    budget = _budget()
    first, _second = budget.open(granted=0), budget.open(granted=0)
    first.close()
    first.close()
    assert budget.channels == 1


def test_a_fresh_channel_is_topped_up_to_its_share() -> None:
    budget = _budget()
    window = budget.open(granted=256 * KIB)
    assert window.top_up() == 2 * MIB - 256 * KIB
    assert window.held == 2 * MIB
    assert window.top_up() == 0


def test_reads_are_granted_back_while_the_share_stands() -> None:
    budget = _budget()
    window = budget.open(granted=2 * MIB)
    # Below a tenth of the share, nothing yet (one message per packet would cost).
    assert window.consumed(100 * KIB) == 0
    assert window.consumed(200 * KIB) == 300 * KIB
    assert window.held == 2 * MIB


def test_grants_are_withheld_when_the_share_shrinks_and_resume() -> None:
    budget = _budget()
    first = budget.open(granted=256 * KIB)
    first.top_up()
    assert first.held == 2 * MIB
    others = [budget.open(granted=256 * KIB) for _ in range(7)]
    assert budget.share == 512 * KIB
    # The 2 MiB granted cannot be taken back: reads are not granted back until what
    # the channel holds is below its share.
    assert first.consumed(1 * MIB) == 0
    assert first.consumed(512 * KIB) == 0
    assert first.held == 512 * KIB
    assert first.consumed(128 * KIB) == 128 * KIB
    assert first.held == 512 * KIB
    # The share grows back as the others close; the next read grants up to it.
    for other in others:
        other.close()
    assert first.consumed(64 * KIB) == 2 * MIB - 512 * KIB + 64 * KIB
    assert first.held == 2 * MIB


def test_a_channel_holding_nothing_is_always_granted_at_least_the_minimum() -> None:
    budget = ReceiveBudget(1 * MIB, minimum=256 * KIB, maximum=1 * MIB)
    windows = [budget.open(granted=0) for _ in range(100)]
    assert budget.share == 256 * KIB
    assert windows[0].top_up() == 256 * KIB
    assert windows[0].consumed(256 * KIB) == 256 * KIB


def test_a_closed_window_grants_nothing() -> None:
    budget = _budget()
    window = budget.open(granted=0)
    window.close()
    assert window.consumed(1 * MIB) == 0
    assert window.top_up() == 0


def test_bounds_out_of_order_are_refused() -> None:
    with pytest.raises(ValueError, match="out of order"):
        ReceiveBudget(MIB, minimum=2 * MIB, maximum=MIB)


def test_concurrent_opens_and_closes_keep_the_count() -> None:
    budget = _budget()
    start = threading.Barrier(8)
    shares: list[int] = []

    def churn() -> None:
        start.wait()
        for _ in range(500):
            window = budget.open(granted=0)
            shares.append(budget.share)
            window.close()

    threads = [threading.Thread(target=churn) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert budget.channels == 0
    assert budget.share == 2 * MIB
    assert all(256 * KIB <= share <= 2 * MIB for share in shares)


class _Transport:
    """What a channel's ``recv`` needs of its transport: somewhere to send a message."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int, int]] = []

    def _send_user_message(self, message: paramiko.Message) -> None:
        message.rewind()
        self.sent.append((message.get_byte()[0], message.get_int(), message.get_int()))


def _channel(window: int) -> tuple[paramiko.Channel, _Transport]:
    channel = paramiko.Channel(3)
    transport = _Transport()
    channel.transport = transport
    channel.remote_chanid = 9
    channel.active = True
    channel.in_window_size = window
    return channel, transport


def test_a_budgeted_channel_grants_what_its_share_allows() -> None:
    """On a real paramiko channel: topped up at once, reads granted back only while the
    channel holds less than its share, nothing once EOF arrived."""
    budget = _budget()
    channel, transport = _channel(256 * KIB)
    window = budget.open(granted=channel.in_window_size)
    budget_channel_window(channel, window)
    assert transport.sent == [(cMSG_CHANNEL_WINDOW_ADJUST[0], 9, 2 * MIB - 256 * KIB)]
    others = [budget.open(granted=0) for _ in range(3)]  # the share drops to 1 MiB
    # Holding 1.5 MiB after this read, above its 1 MiB share: nothing is granted back.
    channel.in_buffer.feed(b"x" * (512 * KIB))
    assert len(channel.recv(512 * KIB)) == 512 * KIB
    assert len(transport.sent) == 1
    # Holding 768 KiB: granted back up to the share.
    channel.in_buffer.feed(b"x" * (768 * KIB))
    assert len(channel.recv(768 * KIB)) == 768 * KIB
    assert transport.sent[1:] == [(cMSG_CHANNEL_WINDOW_ADJUST[0], 9, 256 * KIB)]
    assert window.held == 1 * MIB
    for other in others:
        other.close()
    channel.eof_received = True
    channel.in_buffer.feed(b"x" * (512 * KIB))
    channel.recv(512 * KIB)
    assert len(transport.sent) == 2
