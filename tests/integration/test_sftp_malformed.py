"""Malformed SFTP packets from a signed-in client: precise statuses, no crash, nothing lost.

A raw SFTP speaker on a real, signed-in SSH channel sends what no well-behaved client
would. The server must answer with a status (or close only that session), keep serving
others, and leave the store, database and audit log consistent.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from paramiko.sftp import (
    CMD_EXTENDED,
    CMD_OPEN,
    CMD_OPENDIR,
    CMD_WRITE,
    SFTP_BAD_MESSAGE,
    SFTP_OP_UNSUPPORTED,
)

from gateway.audit import verify_database
from gateway.db.engine import snapshot
from gateway.db.models import Role
from tests.unit.sftp_server.harness import Installation, RawSFTP, paramiko_sftp, sftp_string

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    installation = Installation(tmp_path_factory.mktemp("malformed"))
    installation.add_partner("acme")
    installation.add_user("clerk", Role.STAFF)
    installation.add_user("lee", Role.PARTNER, partner="acme")
    installation.start()
    yield installation
    installation.close()


@pytest.fixture
def raw(inst: Installation) -> Iterator[RawSFTP]:
    client = RawSFTP(inst, "clerk")
    yield client
    client.close()


def test_unknown_packet_type(raw: RawSFTP) -> None:
    raw.send(99, struct.pack(">I", 7))
    assert raw.status() == (7, SFTP_OP_UNSUPPORTED, "unknown request type 99")


def test_unknown_extension(raw: RawSFTP) -> None:
    raw.send(CMD_EXTENDED, struct.pack(">I", 6) + sftp_string(b"evil@example.com"))
    assert raw.status()[:2] == (6, SFTP_OP_UNSUPPORTED)


def test_names_must_be_utf8(raw: RawSFTP) -> None:
    raw.send(CMD_OPENDIR, struct.pack(">I", 8) + sftp_string(b"/acme\xff\xfe"))
    assert raw.status() == (8, SFTP_BAD_MESSAGE, "names must be UTF-8")


def test_truncated_open_is_refused_and_the_session_lives_on(raw: RawSFTP) -> None:
    raw.send(CMD_OPEN, struct.pack(">I", 9) + struct.pack(">I", 1000) + b"/ac")
    request_id, code, _ = raw.status()
    assert request_id == 9
    assert code != 0
    raw.send(99, struct.pack(">I", 10))
    assert raw.status()[:2] == (10, SFTP_OP_UNSUPPORTED)


def test_write_to_a_handle_that_does_not_exist(raw: RawSFTP) -> None:
    raw.send(CMD_WRITE, struct.pack(">I", 11) + sftp_string(b"forged-handle")
             + struct.pack(">Q", 0) + sftp_string(b"data"))
    request_id, code, _ = raw.status()
    assert (request_id, code != 0) == (11, True)


def test_empty_packet_gets_a_status(raw: RawSFTP) -> None:
    raw.send_raw(struct.pack(">I", 0))
    assert raw.status()[1] == SFTP_OP_UNSUPPORTED
    raw.send(99, struct.pack(">I", 12))
    assert raw.status()[:2] == (12, SFTP_OP_UNSUPPORTED)


def test_oversized_packet_closes_only_that_session(inst: Installation) -> None:
    client = RawSFTP(inst, "clerk")
    try:
        # A length far past the advertised limit: the server must not try to buffer it.
        client.send_raw(struct.pack(">I", 0xFFFFFFF0))
        with pytest.raises(EOFError):
            client.receive()
    finally:
        client.close()
    # The server still serves everyone else.
    with paramiko_sftp(inst, inst.users["lee"]) as sftp:
        assert sftp.listdir("/") == []


def test_store_database_and_audit_stay_consistent(inst: Installation) -> None:
    assert list(inst.app.store.partial_dir.iterdir()) == []
    assert list(inst.app.store.list_objects()) == []
    with snapshot(inst.app.engine) as session:
        report = verify_database(session, verifier=inst.app.audit.verifier)
    assert report.size > 0
