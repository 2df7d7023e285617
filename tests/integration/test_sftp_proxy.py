"""The PROXY protocol on a running server: real client addresses from a trusted balancer.

The test plays the load balancer: it opens the TCP connection from 127.0.0.1 and sends a
v2 header naming the client before paramiko speaks SSH through the same socket.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from gateway.db.models import Role
from sftp_server.proxy import v2_header
from tests.unit.sftp_server.harness import Installation, User, audit_events

pytestmark = pytest.mark.integration
CLIENT = "198.51.100.7"


@pytest.fixture
def inst(tmp_path: Path) -> Iterator[Installation]:
    installation = Installation(tmp_path, sftp_proxy_protocol_from="127.0.0.1/32",
                                source_throttle_threshold=2)
    installation.add_partner("uni")
    installation.start()
    yield installation
    installation.close()


def sign_in(inst: Installation, user: User, code: str, *, header: bytes | None) -> bool:
    """Public key, then ``code``, after ``header``; whether the sign-in succeeded."""
    sock = socket.create_connection(("127.0.0.1", inst.port), timeout=30)
    if header is not None:
        sock.sendall(header)
    transport = paramiko.Transport(sock)
    try:
        transport.connect()
        transport.auth_publickey(user.username, user.pkey)
        transport.auth_interactive(user.username, lambda _t, _i, prompts: [code] * len(prompts))
    except paramiko.AuthenticationException:
        return False
    finally:
        transport.close()
    return True


def test_audit_and_lockout_use_the_address_in_the_header(inst: Installation) -> None:
    lee = inst.add_user("lee", Role.PARTNER, partner="uni")
    header = v2_header(CLIENT, "127.0.0.1", 50123, inst.port)
    assert sign_in(inst, lee, inst.code(lee), header=header)
    assert audit_events(inst.app, "auth:login:success")[-1]["details"]["source"] == CLIENT
    for _ in range(inst.settings.lockout_threshold):
        assert not sign_in(inst, lee, "000000", header=header)
    # Wrong codes after the key lock the account; names that do not exist slow the source.
    ghost = User("ghost", Role.PARTNER, lee.secret, lee.key_path, lee.public_key)
    for _ in range(inst.settings.source_throttle_threshold):
        assert not sign_in(inst, ghost, "000000", header=header)
    # Each is counted when the server sees its connection end.
    deadline = time.monotonic() + 10
    while len(audit_events(inst.app, "auth:lockout")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {event["subject"] for event in audit_events(inst.app, "auth:lockout")} == {
        f"source:{CLIENT}", "account:lee"}
    failures = audit_events(inst.app, "auth:login:failure")
    assert {event["details"]["source"] for event in failures} == {CLIENT}


def test_a_trusted_balancer_must_send_a_header(inst: Installation) -> None:
    lee = inst.add_user("lee", Role.PARTNER, partner="uni")
    with pytest.raises((paramiko.SSHException, EOFError, ConnectionResetError)):
        sign_in(inst, lee, inst.code(lee), header=None)
    assert audit_events(inst.app, "auth:login:success") == []


def test_headers_from_untrusted_peers_are_not_believed(tmp_path: Path) -> None:
    inst = Installation(tmp_path)
    try:
        inst.add_partner("uni")
        lee = inst.add_user("lee", Role.PARTNER, partner="uni")
        inst.start()
        # The header is not SSH: the server reads it as a broken banner and hangs up
        # (the client sees the end of the stream or a reset, depending on timing).
        with pytest.raises((paramiko.SSHException, EOFError, ConnectionResetError)):
            sign_in(inst, lee, inst.code(lee),
                    header=v2_header(CLIENT, "127.0.0.1", 50123, inst.port))
        assert sign_in(inst, lee, inst.code(lee), header=None)
        sources = {event["details"].get("source") for event in
                   audit_events(inst.app, "auth:login:success")}
        assert sources == {"127.0.0.1"}
    finally:
        inst.close()
