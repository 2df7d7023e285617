"""The channel receive buffer that keeps packets uncopied, against paramiko's own."""

from __future__ import annotations

import inspect
import re
import threading

import paramiko
import pytest
from paramiko.buffered_pipe import PipeTimeout

from gateway.client.receive import CHANNEL_USES, BlockPipe, install_if_fresh


def test_it_offers_what_paramikos_channel_uses_of_its_buffer() -> None:
    used = set(re.findall(r"in_buffer\.(\w+)", inspect.getsource(paramiko.Channel)))
    assert used == CHANNEL_USES, "paramiko's Channel changed how it uses in_buffer"
    assert all(callable(getattr(BlockPipe, name)) for name in used)


def test_blocks_come_out_whole_and_uncopied_in_order() -> None:
    pipe = BlockPipe()
    first, second = b"a" * 1000, b"b" * 10
    pipe.feed(first)
    pipe.feed(second)
    assert len(pipe) == 1010
    assert pipe.read(1 << 20) is first
    assert pipe.read(4) == b"bbbb"
    assert pipe.read(100) == b"b" * 6
    with pytest.raises(PipeTimeout):
        pipe.read(10, timeout=0.01)


def test_event_and_close_behave_as_paramikos() -> None:
    pipe = BlockPipe()
    event = threading.Event()
    pipe.set_event(event)
    assert not event.is_set()
    pipe.feed(b"x")
    assert event.is_set() and pipe.read_ready()
    assert pipe.empty() == b"x"
    assert not event.is_set()
    waiting = threading.Thread(target=lambda: results.append(pipe.read(10, timeout=5)))
    results: list[bytes] = []
    waiting.start()
    pipe.close()
    waiting.join()
    assert results == [b""]
    assert event.is_set()


def test_a_part_read_leaves_the_rest_in_place() -> None:
    # The gateway reads an SFTP packet's length (4 bytes) from the front of a block.
    pipe = BlockPipe()
    pipe.feed(b"abcdefgh")
    pipe.feed(b"ij")
    assert pipe.read(4) == b"abcd"
    assert len(pipe) == 6
    assert pipe.read(2) == b"ef"
    assert pipe.read(100) == b"gh"
    pipe.feed(b"kl")
    assert pipe.read(1) == b"i"
    assert pipe.empty() == b"jkl"
    assert len(pipe) == 0


def test_only_a_channel_that_received_nothing_gets_a_block_pipe() -> None:
    fresh, used = paramiko.Channel(1), paramiko.Channel(2)
    used.in_buffer.feed(b"early")
    assert install_if_fresh(fresh) and isinstance(fresh.in_buffer, BlockPipe)
    assert not install_if_fresh(used)
    assert used.in_buffer.read(10) == b"early"
    assert not install_if_fresh(fresh)
