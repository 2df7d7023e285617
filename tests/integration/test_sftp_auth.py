"""Sign-in over SSH: both paramiko server-mode traps, and every refusal, each audited.

The attacks use a hand-built client: paramiko's transport for key exchange and
encryption, and raw SSH_MSG_USERAUTH_* messages, so the client can send what a
well-behaved client never would (a code after only an unsigned probe, a forged
signature, an answer to a challenge that was never issued).
"""

from __future__ import annotations

import queue
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest
from paramiko.auth_handler import AuthHandler
from paramiko.common import (
    MSG_SERVICE_ACCEPT,
    MSG_USERAUTH_BANNER,
    MSG_USERAUTH_FAILURE,
    MSG_USERAUTH_INFO_REQUEST,
    MSG_USERAUTH_SUCCESS,
    cMSG_SERVICE_REQUEST,
    cMSG_USERAUTH_INFO_RESPONSE,
    cMSG_USERAUTH_REQUEST,
)

from gateway.actors import Actor
from gateway.db.models import Role
from tests.unit.gateway.factories import usable_admin
from tests.unit.sftp_server.harness import (
    Installation,
    User,
    audit_events,
    openssh_sftp,
    paramiko_sftp,
    write_key_pair,
)

pytestmark = pytest.mark.integration
MSG_USERAUTH_PK_OK = MSG_USERAUTH_INFO_REQUEST  # Both are message number 60.


class _Recorder(AuthHandler):
    """Client-side auth handler that only queues what the server sends."""

    def __init__(self, transport: paramiko.Transport) -> None:
        super().__init__(transport)
        self.inbox: queue.Queue[tuple[int, paramiko.Message]] = queue.Queue()

    @property
    def _client_handler_table(self) -> dict[int, object]:
        def put(kind: int) -> object:
            return lambda message: self.inbox.put((kind, message))
        table = {kind: put(kind) for kind in (MSG_SERVICE_ACCEPT, MSG_USERAUTH_SUCCESS,
                                              MSG_USERAUTH_FAILURE, MSG_USERAUTH_PK_OK)}
        table[MSG_USERAUTH_BANNER] = lambda message: None
        return table


class RawClient:
    """An SSH client that sends hand-made authentication messages."""

    def __init__(self, port: int) -> None:
        self.transport = paramiko.Transport(socket.create_connection(("127.0.0.1", port)))
        self.transport.start_client(timeout=10)
        self.recorder = _Recorder(self.transport)
        self.transport.auth_handler = self.recorder
        self.send(cMSG_SERVICE_REQUEST, "ssh-userauth")
        assert self.reply()[0] == MSG_SERVICE_ACCEPT

    def send(self, kind: bytes, *fields: object) -> None:
        message = paramiko.Message()
        message.add_byte(kind)
        for value in fields:
            if isinstance(value, bool):
                message.add_boolean(value)
            elif isinstance(value, int):
                message.add_int(value)
            else:
                message.add_string(value)
        self.transport._send_message(message)

    def reply(self, timeout: float = 10) -> tuple[int, paramiko.Message]:
        return self.recorder.inbox.get(timeout=timeout)

    def closed_within(self, seconds: float) -> bool:
        self.transport.join(seconds)
        return not self.transport.is_active()

    def probe(self, user: str, key: paramiko.PKey) -> int:
        """The unsigned "would this key do?" query."""
        self.send(cMSG_USERAUTH_REQUEST, user, "ssh-connection", "publickey", False,
                   key.get_name(), key.asbytes())
        return self.reply()[0]

    def signed(self, user: str, key: paramiko.PKey, *, signer: paramiko.PKey | None = None,
               ) -> tuple[int, bool]:
        """A public-key request for ``key``, signed by ``signer`` (a forgery if different)."""
        blob = self.recorder._get_session_blob(key, "ssh-connection", user, key.get_name())
        signature = (signer or key).sign_ssh_data(blob, key.get_name())
        self.send(cMSG_USERAUTH_REQUEST, user, "ssh-connection", "publickey", True,
                   key.get_name(), key.asbytes(), signature.asbytes())
        kind, message = self.reply()
        partial = False
        if kind == MSG_USERAUTH_FAILURE:
            message.get_list()
            partial = message.get_boolean()
        return kind, partial

    def keyboard_interactive(self, user: str) -> int:
        self.send(cMSG_USERAUTH_REQUEST, user, "ssh-connection", "keyboard-interactive",
                   "", "")
        return self.reply()[0]

    def answer(self, *responses: str) -> int:
        self.send(cMSG_USERAUTH_INFO_RESPONSE, len(responses), *responses)
        return self.reply()[0]

    def instructions(self, *responses: str) -> str:
        """Answer a challenge that is asked again; return the new challenge's instruction."""
        self.send(cMSG_USERAUTH_INFO_RESPONSE, len(responses), *responses)
        kind, message = self.reply()
        assert kind == MSG_USERAUTH_INFO_REQUEST
        message.get_text()  # The name.
        return str(message.get_text())

    def password(self, user: str, password: str) -> int:
        self.send(cMSG_USERAUTH_REQUEST, user, "ssh-connection", "password", False, password)
        return self.reply()[0]

    def close(self) -> None:
        self.transport.close()


@pytest.fixture
def inst(tmp_path: Path) -> Iterator[Installation]:
    installation = Installation(tmp_path, sftp_auth_timeout_seconds=3)
    installation.add_partner("acme")
    installation.start()
    yield installation
    installation.close()


@pytest.fixture
def lee(inst: Installation) -> User:
    return inst.add_user("lee", Role.PARTNER, partner="acme")


@pytest.fixture
def raw(inst: Installation) -> Iterator[RawClient]:
    client = RawClient(inst.port)
    yield client
    client.close()


def _failures(inst: Installation) -> list[dict[str, object]]:
    return [event["details"] for event in audit_events(inst.app, "auth:login:failure")]


def _no_success(inst: Installation) -> bool:
    return not audit_events(inst.app, "auth:login:success")


# -- trap 1: check_auth_publickey runs before (or without) any signature check --------

def test_unsigned_probe_then_code_is_refused(inst: Installation, lee: User,
                                              raw: RawClient) -> None:
    assert raw.probe("lee", lee.pkey) == MSG_USERAUTH_PK_OK
    assert raw.keyboard_interactive("lee") == MSG_USERAUTH_FAILURE
    assert raw.password("lee", inst.code(lee)) == MSG_USERAUTH_FAILURE
    assert _no_success(inst)
    assert _failures(inst)[-1]["reason"] == "one-time code without a verified public key"


def test_forged_signature_then_code_is_refused(inst: Installation, lee: User,
                                                raw: RawClient, tmp_path: Path) -> None:
    write_key_pair(tmp_path / "attacker", "attacker")
    attacker = paramiko.Ed25519Key.from_private_key_file(str(tmp_path / "attacker"))
    kind, partial = raw.signed("lee", lee.pkey, signer=attacker)
    assert (kind, partial) == (MSG_USERAUTH_FAILURE, False)
    assert raw.keyboard_interactive("lee") == MSG_USERAUTH_FAILURE
    assert raw.password("lee", inst.code(lee)) == MSG_USERAUTH_FAILURE
    assert _no_success(inst)


# -- trap 2: paramiko hands over INFO_RESPONSE with no challenge outstanding ----------

def test_unsolicited_info_response_is_refused_and_disconnected(
        inst: Installation, lee: User, raw: RawClient) -> None:
    assert raw.signed("lee", lee.pkey) == (MSG_USERAUTH_FAILURE, True)
    raw.send(cMSG_USERAUTH_INFO_RESPONSE, 1, inst.code(lee))
    assert raw.closed_within(5)
    _wait_for(lambda: bool(_failures(inst)))
    assert _no_success(inst)
    assert _failures(inst)[-1]["reason"] == "keyboard-interactive response without a challenge"


def test_info_response_after_challenge_was_cancelled_is_refused(
        inst: Installation, lee: User, raw: RawClient) -> None:
    assert raw.signed("lee", lee.pkey) == (MSG_USERAUTH_FAILURE, True)
    assert raw.keyboard_interactive("lee") == MSG_USERAUTH_INFO_REQUEST
    # RFC 4256: a new request abandons the challenge; answering it afterwards is refused.
    assert raw.probe("lee", lee.pkey) == MSG_USERAUTH_FAILURE
    raw.send(cMSG_USERAUTH_INFO_RESPONSE, 1, inst.code(lee))
    assert raw.closed_within(5)
    assert _no_success(inst)


def test_a_wrong_answer_is_asked_again_with_the_reason(inst: Installation, lee: User,
                                                       raw: RawClient) -> None:
    assert raw.signed("lee", lee.pkey) == (MSG_USERAUTH_FAILURE, True)
    assert raw.keyboard_interactive("lee") == MSG_USERAUTH_INFO_REQUEST
    assert raw.instructions("000000") == "wrong code. Enter the code your app shows now."
    code = inst.code(lee)
    assert raw.answer(code) == MSG_USERAUTH_SUCCESS
    assert _failures(inst)[-1]["reason"] == "wrong code"


# -- the ways in, and the ways not in ------------------------------------------------

def test_key_then_code_by_keyboard_interactive_signs_in(inst: Installation, lee: User,
                                                        raw: RawClient) -> None:
    assert raw.signed("lee", lee.pkey) == (MSG_USERAUTH_FAILURE, True)
    assert raw.keyboard_interactive("lee") == MSG_USERAUTH_INFO_REQUEST
    assert raw.answer(inst.code(lee)) == MSG_USERAUTH_SUCCESS
    success = audit_events(inst.app, "auth:login:success")[-1]["details"]
    assert success["source"] == "127.0.0.1"
    assert success["method"] == "publickey+totp"


def test_key_then_code_as_password_signs_in(inst: Installation, lee: User,
                                            raw: RawClient) -> None:
    assert raw.signed("lee", lee.pkey) == (MSG_USERAUTH_FAILURE, True)
    assert raw.password("lee", inst.code(lee)) == MSG_USERAUTH_SUCCESS


def test_key_alone_is_not_enough(inst: Installation, lee: User, raw: RawClient) -> None:
    assert raw.signed("lee", lee.pkey) == (MSG_USERAUTH_FAILURE, True)
    raw.close()
    _wait_for(lambda: bool(_failures(inst)))
    assert _failures(inst)[-1]["reason"] == "disconnected before signing in"
    assert _no_success(inst)


def test_password_alone_is_refused_and_audited(inst: Installation, lee: User,
                                               raw: RawClient) -> None:
    assert raw.password("lee", inst.code(lee)) == MSG_USERAUTH_FAILURE
    assert _failures(inst)[-1]["reason"] == "one-time code without a verified public key"
    assert _failures(inst)[-1]["source"] == "127.0.0.1"


def test_sign_in_must_finish_within_the_grace_time(inst: Installation, lee: User,
                                                   raw: RawClient) -> None:
    assert raw.signed("lee", lee.pkey) == (MSG_USERAUTH_FAILURE, True)
    assert raw.closed_within(8)
    assert _failures(inst)[-1]["reason"] == "authentication timed out"


# -- whatever name is claimed, the attempt is audited and counted ---------------------

HUGE_NAME = "x" * 4000 + "\n       7  2026-11-02 09:00:00  auth:login:success       lee"


def test_a_huge_claimed_name_is_audited_counted_and_marked(tmp_path: Path) -> None:
    """Names past the log's field size were neither audited nor counted (issue 15); a
    connection counts once against its source, however many names it tries (issue 14)."""
    inst = Installation(tmp_path, sftp_auth_timeout_seconds=3, source_throttle_threshold=3)
    inst.start()
    try:
        for connection in range(3):
            raw = RawClient(inst.port)
            for _ in range(2):
                assert raw.password(HUGE_NAME, "123456") == MSG_USERAUTH_FAILURE
            raw.close()
            held = audit_events(inst.app, "auth:lockout")
            assert [e["subject"] for e in held] == (["source:127.0.0.1"] if connection == 2
                                                    else [])
        events = audit_events(inst.app, "auth:login:failure")
        assert len(events) == 6
        for event in events:
            assert event["actor"].startswith("xxxx") and event["actor"].endswith("…")
            assert len(event["actor"]) <= 200 and "\n" not in event["actor"]
            assert event["details"]["claimed_length"] == len(HUGE_NAME)
            assert event["details"]["client"].startswith("SSH-2.0-paramiko_")
    finally:
        inst.close()


def test_a_huge_name_on_an_abandoned_probe_is_audited(inst: Installation, lee: User,
                                                      raw: RawClient) -> None:
    assert raw.probe(HUGE_NAME, lee.pkey) == MSG_USERAUTH_FAILURE
    raw.close()
    _wait_for(lambda: bool(_failures(inst)))
    event = audit_events(inst.app, "auth:login:failure")[-1]
    assert event["actor"].endswith("…") and event["details"]["claimed_length"] == len(HUGE_NAME)
    assert event["details"]["reason"] == "no registered public key offered"


# -- refusals with the real OpenSSH client, each audited ---------------------------

def _refused(inst: Installation, user: User, code: str, *, key: Path | None = None) -> str:
    """Run a login that must fail; return the reason of the audit entry it produced.

    Some refusals are audited when the connection closes, just after the client exits.
    """
    before = len(_failures(inst))
    result = openssh_sftp(inst, user, ["ls"], code=code, key=key)
    assert result.returncode != 0, result.stdout
    _wait_for(lambda: len(_failures(inst)) > before)
    return str(_failures(inst)[-1]["reason"])


def test_openssh_no_code(inst: Installation, lee: User) -> None:
    assert _refused(inst, lee, "") == "wrong code"


def test_openssh_wrong_code(inst: Installation, lee: User) -> None:
    good = inst.code(lee)
    assert _refused(inst, lee, f"{(int(good) + 1) % 1_000_000:06d}") == "wrong code"


def test_openssh_replayed_code(inst: Installation, lee: User) -> None:
    code = inst.code(lee)
    assert openssh_sftp(inst, lee, ["ls"], code=code).returncode == 0
    assert _refused(inst, lee, code) == "replayed code"


def test_openssh_unknown_key(inst: Installation, lee: User, tmp_path: Path) -> None:
    write_key_pair(tmp_path / "stranger", "stranger")
    reason = _refused(inst, lee, inst.code(lee), key=tmp_path / "stranger")
    assert reason == "no registered public key offered"


def test_openssh_disabled_account(inst: Installation, lee: User) -> None:
    inst.app.accounts.disable(Actor.local_operator(), username="lee")
    assert _refused(inst, lee, inst.code(lee)) == "account disabled"


def test_openssh_disabled_partner(inst: Installation, lee: User) -> None:
    inst.app.partners.disable(Actor.local_operator(), slug="acme")
    assert _refused(inst, lee, inst.code(lee)) == "partner disabled"


def test_lockout_after_repeated_failures(inst: Installation, lee: User) -> None:
    for _ in range(inst.settings.lockout_threshold):
        _refused(inst, lee, "000000")
    assert audit_events(inst.app, "auth:lockout")
    assert _refused(inst, lee, inst.code(lee)).endswith("locked out")
    inst.clock.advance(minutes=inst.settings.lockout_minutes + 1)
    assert openssh_sftp(inst, lee, ["ls"], code=inst.code(lee)).returncode == 0


def test_admin_signs_in_but_gets_no_sftp(inst: Installation) -> None:
    # An admin takes two admins to make (issue 20); it then enrols its code.
    public = write_key_pair(inst.root / "id_ops-admin", "ops-admin@test")
    secret = usable_admin(inst.app, "ops-admin", ssh_keys=[public])
    admin = User("ops-admin", Role.ADMIN, secret, inst.root / "id_ops-admin", public)
    with pytest.raises(paramiko.SSHException), paramiko_sftp(inst, admin):
        pass
    denied = audit_events(inst.app, "access:denied")[-1]
    assert (denied["subject"], denied["details"]["path"]) == ("inbox:read", "sftp:session")


def _wait_for(condition: Callable[[], bool], seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
