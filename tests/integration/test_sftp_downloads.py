"""Download limits over real SFTP sessions count bytes served, not handles (issue 15, point 1).

The attack: with a limit of one download, read all but the last byte on one handle and
the last byte on another (or on another connection), close both, repeat. Neither handle
read "the whole file", so nothing was counted and nothing audited as a download.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from paramiko import Message
from paramiko.sftp import CMD_DATA, CMD_READ
from paramiko.sftp_client import int64

from gateway import envelope
from gateway.db.models import Role
from sftp_server.handles import MAX_READ_LENGTH
from tests.unit.sftp_server.harness import Installation, audit_events, paramiko_sftp

pytestmark = pytest.mark.integration
NAME = "/extract.csv.age"


@pytest.fixture
def inst(tmp_path: Path) -> Iterator[Installation]:
    installation = Installation(tmp_path)
    installation.add_partner("acme", max_downloads=1)
    installation.add_user("clerk", Role.STAFF)
    installation.add_user("lee", Role.PARTNER, partner="acme")
    installation.start()
    yield installation
    installation.close()


def _upload(inst: Installation, plaintext: bytes) -> int:
    with paramiko_sftp(inst, inst.users["clerk"]) as sftp, \
            sftp.open("/acme/extract.csv", "wb") as handle:
        handle.write(plaintext)
    return inst.app.transfers.inbox(inst.actor(inst.users["lee"]))[0].size


def _read(sftp: paramiko.SFTPClient, start: int, end: int) -> bytes:
    with sftp.open(NAME, "rb") as handle:
        handle.seek(start)
        return handle.read(end - start)


def _decrypts(inst: Installation, ciphertext: bytes, plaintext: bytes) -> None:
    assert envelope.decrypt_bytes(ciphertext, [inst.identities["acme"]]) == plaintext


def test_split_reads_are_one_download_and_the_next_open_is_refused(
        inst: Installation) -> None:
    plaintext = os.urandom(300_000)
    size = _upload(inst, plaintext)
    lee = inst.users["lee"]
    with paramiko_sftp(inst, lee) as sftp:
        head = _read(sftp, 0, size - 1)
    with paramiko_sftp(inst, lee) as sftp:
        tail = _read(sftp, size - 1, size)
        _decrypts(inst, head + tail, plaintext)
        with pytest.raises(FileNotFoundError):
            _read(sftp, 0, size - 1)
        assert sftp.listdir("/") == []
    assert [e["details"]["bytes"] for e in audit_events(inst.app, "file:download:incomplete")
            ] == [size - 1]
    assert [e["details"]["bytes"] for e in audit_events(inst.app, "file:download:complete")
            ] == [1]


def test_a_dropped_download_resumes_with_the_missing_bytes(inst: Installation) -> None:
    plaintext = os.urandom(300_000)
    size = _upload(inst, plaintext)
    lee = inst.users["lee"]
    with paramiko_sftp(inst, lee) as sftp:
        handle = sftp.open(NAME, "rb")
        head = handle.read(size // 2)
    # The connection ended with the file still open: the server closed the handle.
    with paramiko_sftp(inst, lee) as sftp:
        _decrypts(inst, head + _read(sftp, size // 2, size), plaintext)
        assert sftp.listdir("/") == []
    assert len(audit_events(inst.app, "file:download:complete")) == 1


def test_reads_still_queued_when_the_connection_drops_are_not_served(
        inst: Installation) -> None:
    """A client asks for the whole file ahead, as fast clients do, and the connection drops
    after a part arrived: the reads the server had yet to answer serve nothing, so the
    download is given back and the file can be fetched in full once."""
    plaintext = os.urandom(8 << 20)
    size = _upload(inst, plaintext)
    lee, chunk = inst.users["lee"], 32 * 1024
    with paramiko_sftp(inst, lee) as sftp:
        handle = sftp.open(NAME, "rb")
        for number, offset in enumerate(range(0, size, chunk)):
            # Raw READ requests, never answered here: the server stalls once the
            # client's window (2 MiB) is full, with the rest of them still queued.
            body = Message()
            body.add_byte(bytes([CMD_READ]))
            body.add_int(1_000_000 + number)
            body.add_string(handle.handle)
            body.add_int64(offset)
            body.add_int(chunk)
            sftp.sock.sendall(struct.pack(">I", len(body.asbytes())) + body.asbytes())
        # The first answer has begun to arrive: the server is serving when the line drops.
        assert sftp.sock.recv(4)
    deadline = time.monotonic() + 30
    while not inst.app.transfers.inbox(inst.actor(lee)):
        assert time.monotonic() < deadline, "the dropped download was counted as complete"
        time.sleep(0.05)
    [dropped] = audit_events(inst.app, "file:download:incomplete")
    assert 0 < dropped["details"]["bytes"] < size // 2
    with paramiko_sftp(inst, lee) as sftp:
        _decrypts(inst, _read(sftp, 0, size), plaintext)
        assert sftp.listdir("/") == []


# The data in the first SSH packet of a reply to paramiko's client (32 KiB packets, of
# which paramiko's channel keeps 64 bytes free, the reply's header taking 13).
FIRST_DATA_PIECE = (32 << 10) - 64 - 13


def test_reads_of_every_length_around_the_first_piece_arrive_whole(inst: Installation) -> None:
    """The server sends a read's header with as much of its data as the first SSH packet
    takes, then the rest (``send_data``): reads shorter, as long and longer than that
    piece, and the longest, read the file back exactly, then the end of file."""
    plaintext = os.urandom(1 << 20)
    size = _upload(inst, plaintext)
    lengths = [1, FIRST_DATA_PIECE - 1, FIRST_DATA_PIECE, FIRST_DATA_PIECE + 1,
               MAX_READ_LENGTH, 32 * 1024]
    pieces, offset = [], 0
    with paramiko_sftp(inst, inst.users["lee"]) as sftp:
        handle = sftp.open(NAME, "rb")
        while offset < size:
            kind, msg = sftp._request(CMD_READ, handle.handle, int64(offset),
                                      lengths[len(pieces) % len(lengths)])
            assert kind == CMD_DATA
            pieces.append(msg.get_binary())
            offset += len(pieces[-1])
        with pytest.raises(EOFError):  # paramiko's client turns SSH_FX_EOF into it.
            sftp._request(CMD_READ, handle.handle, int64(offset), 1)
    assert {len(piece) for piece in pieces[:len(lengths)]} == set(lengths)
    _decrypts(inst, b"".join(pieces), plaintext)
