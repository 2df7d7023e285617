"""Download limits over real SFTP sessions count bytes served, not handles (issue 15, point 1).

The attack: with a limit of one download, read all but the last byte on one handle and
the last byte on another (or on another connection), close both, repeat. Neither handle
read "the whole file", so nothing was counted and nothing audited as a download.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from gateway import envelope
from gateway.db.models import Role
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
