"""Everyday sign-in with the real OpenSSH client in batch mode: lockouts that stop guessing
but not colleagues, allow-lists, machine accounts, self-enrolment, and what the user is
told (and when).

OpenSSH's ``sftp`` prints none of the server's own messages; what reaches the user is
``ssh``'s standard error: keyboard-interactive instructions, banners, the disconnect
message and the session's stderr. Each test reads what the user really sees there.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pyotp
import pytest
from click.testing import CliRunner
from paramiko.common import (
    MSG_USERAUTH_FAILURE,
    MSG_USERAUTH_INFO_REQUEST,
    cMSG_USERAUTH_INFO_RESPONSE,
    cMSG_USERAUTH_REQUEST,
)
from sqlalchemy import select

from gateway.accounts import parse_allow_from
from gateway.cli.program import main
from gateway.db.models import AuthThrottle, Role
from tests.integration.test_sftp_auth import RawClient
from tests.unit.sftp_server.harness import (
    OPERATOR,
    Installation,
    User,
    audit_events,
    openssh_sftp,
    paramiko_sftp,
    write_key_pair,
)

pytestmark = pytest.mark.integration
LOCKED = re.compile(r"Received disconnect from 127\.0\.0\.1 port \d+:14: account locked until "
                    r"\d{4}-\d\d-\d\d \d\d:\d\d UTC")


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    installation = Installation(tmp_path_factory.mktemp("ops"), source_throttle_threshold=3)
    installation.add_partner("acme")
    installation.add_partner("nokey", with_key=False)
    installation.start()
    yield installation
    installation.close()


@pytest.fixture(scope="module")
def clerk(inst: Installation) -> User:
    return inst.add_user("clerk", Role.STAFF)


def _fresh_user(inst: Installation, name: str) -> User:
    return inst.add_user(name, Role.PARTNER, partner="acme")


def _wrong(inst: Installation, user: User) -> str:
    return f"{(int(inst.code(user)) + 1) % 1_000_000:06d}"


def _account_failures(inst: Installation, username: str) -> int:
    with inst.app.read() as session:
        failures = session.scalar(select(AuthThrottle.failures).where(
            AuthThrottle.scope == "account", AuthThrottle.key == username))
    return failures or 0


def _wait_for(condition: Callable[[], bool], seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_a_wrong_code_on_one_connection_counts_once(inst: Installation) -> None:
    amy = _fresh_user(inst, "amy")
    before = len(audit_events(inst.app, "auth:login:failure"))
    # OpenSSH's default: three keyboard-interactive prompts, then three password prompts.
    result = openssh_sftp(inst, amy, ["ls"], code=_wrong(inst, amy), prompts=3)
    assert result.returncode != 0
    failures = [e for e in audit_events(inst.app, "auth:login:failure")[before:]
                if e["actor"] == "amy"]
    assert [e["details"]["reason"] for e in failures] == ["wrong code"] * 3
    assert _account_failures(inst, "amy") == 1
    assert "wrong code. Enter the code your app shows now." in result.stderr
    assert ("wrong code; too many codes on one connection - connect again when your app "
            "shows a new code") in result.stderr


def _lock(inst: Installation, user: User) -> None:
    for _ in range(inst.settings.lockout_threshold):
        assert openssh_sftp(inst, user, ["ls"], code=_wrong(inst, user)).returncode != 0
    _wait_for(lambda: any(e["subject"] == f"account:{user.username}"
                          for e in audit_events(inst.app, "auth:lockout")))


def test_a_lockout_is_told_after_the_key_and_lifted_by_unlock(
        inst: Installation, clerk: User, tmp_path: Path, caplog: pytest.LogCaptureFixture
        ) -> None:
    caplog.set_level(logging.INFO)
    bea = _fresh_user(inst, "bea")
    _lock(inst, bea)
    # Before the key verified nothing is said: an unregistered key learns nothing.
    write_key_pair(tmp_path / "stranger", "stranger")
    stranger = openssh_sftp(inst, bea, ["ls"], code=inst.code(bea), key=tmp_path / "stranger")
    assert stranger.returncode != 0
    assert "Permission denied (publickey)" in stranger.stderr
    assert "locked" not in stranger.stderr
    # With the key, its holder is told why and until when.
    holder = openssh_sftp(inst, bea, ["ls"], code=inst.code(bea))
    assert holder.returncode != 0
    assert LOCKED.search(holder.stderr), holder.stderr
    # A colleague at the same address signs in all along.
    assert openssh_sftp(inst, clerk, ["ls"], code=inst.code(clerk)).returncode == 0
    # The server's log says what happened in Blindpost's words.
    messages = [record.getMessage() for record in caplog.records]
    assert not [m for m in messages if "Auth rejected" in m or "invalid signature" in m]
    assert any(m.startswith("sign-in refused for bea from 127.0.0.1: account locked out")
               for m in messages)
    assert any(m.startswith("account:bea blocked until") for m in messages)
    assert any(m.startswith("key of clerk verified from 127.0.0.1") for m in messages)
    unlocked = CliRunner().invoke(main, ["--data-dir", str(inst.data_dir), "user", "unlock",
                                         "bea"])
    assert unlocked.exit_code == 0, unlocked.output
    assert "unlocked account bea (it was locked until" in unlocked.output
    assert audit_events(inst.app, "account:unlock")[-1]["subject"] == "account:bea"
    assert openssh_sftp(inst, bea, ["ls"], code=inst.code(bea)).returncode == 0


def test_a_source_held_back_still_lets_proven_keys_in(inst: Installation, clerk: User,
                                                      tmp_path: Path) -> None:
    write_key_pair(tmp_path / "guess", "guess")
    bind = ["-o", "BindAddress=127.0.0.3"]
    for name in ("root", "admin", "test", "oracle"):
        probe = User(name, Role.STAFF, "", tmp_path / "guess", clerk.public_key)
        assert openssh_sftp(inst, probe, ["ls"], code="", extra=bind).returncode != 0
    _wait_for(lambda: any(e["subject"] == "source:127.0.0.3"
                          for e in audit_events(inst.app, "auth:lockout")))
    assert not [e for e in audit_events(inst.app, "auth:lockout")
                if e["subject"] in ("account:root", "account:admin", "account:test")]
    result = openssh_sftp(inst, clerk, ["ls"], code=inst.code(clerk), extra=bind)
    assert result.returncode == 0, result.stderr
    unblocked = CliRunner().invoke(main, ["--data-dir", str(inst.data_dir), "source",
                                          "unblock", "127.0.0.3"])
    assert unblocked.exit_code == 0 and "unblocked 127.0.0.3" in unblocked.output


def test_an_allow_list_refuses_another_address(inst: Installation) -> None:
    cai = _fresh_user(inst, "cai")
    inst.app.accounts.set_allow_from(OPERATOR, username="cai",
                                     allow_from=parse_allow_from("127.0.0.1"))
    elsewhere = openssh_sftp(inst, cai, ["ls"], code=inst.code(cai),
                             extra=["-o", "BindAddress=127.0.0.2"])
    assert elsewhere.returncode != 0
    assert ("signing in from 127.0.0.2 is not allowed for this account; use one of its "
            "allowed networks") in elsewhere.stderr
    assert "One-time code" not in elsewhere.stderr  # Refused before the code is asked.
    assert openssh_sftp(inst, cai, ["ls"], code=inst.code(cai)).returncode == 0


def test_a_machine_account_uploads_with_its_key_alone_from_its_network(
        inst: Installation, clerk: User, tmp_path: Path) -> None:
    public = write_key_pair(tmp_path / "job", "job")
    new = inst.app.accounts.add(inst.account_actor("root-admin"), username="nightly",
                                role=Role.STAFF, ssh_keys=[public], machine=True,
                                allow_from=parse_allow_from("127.0.0.1/32"))
    assert new.machine_grant is not None
    inst.app.machines.approve(inst.account_actor("second-admin"), grant_id=new.machine_grant)
    job = User("nightly", Role.STAFF, "", tmp_path / "job", public)
    (inst.root / "nightly.csv").write_bytes(b"id,value\n1,2\n")
    # No code is ever asked: the askpass program would fail the test if it ran.
    askpass = tmp_path / "no-askpass.sh"
    askpass.write_text("#!/bin/sh\necho asked >&2\nexit 1\n")
    askpass.chmod(0o700)
    result = openssh_sftp(inst, job, ["put nightly.csv /acme/", "-get /acme/nightly.csv.age",
                                      "-rm /acme/nightly.csv.age"], code="", askpass=askpass)
    assert result.returncode == 0, result.stderr
    assert "asked" not in result.stderr
    assert not (inst.root / "nightly.csv.age").exists()
    assert [e.name for e in inst.app.transfers.inbox(inst.actor(clerk), "acme")
            if e.name == "nightly.csv.age"]
    assert "blindpost: permission denied" in result.stderr
    login = [e for e in audit_events(inst.app, "auth:login:success") if e["actor"] == "nightly"]
    assert (login[-1]["details"]["method"], login[-1]["details"]["session"]) == (
        "publickey", "machine")
    upload = audit_events(inst.app, "file:upload:complete")[-1]
    assert upload["details"]["session"] == "machine"
    elsewhere = openssh_sftp(inst, job, ["ls"], code="", askpass=askpass,
                             extra=["-o", "BindAddress=127.0.0.2"])
    assert elsewhere.returncode != 0
    assert "signing in from 127.0.0.2 is not allowed" in elsewhere.stderr


def _enrolling_askpass(root: Path, now: float) -> Path:
    """An askpass that reads the secret from the instructions ssh printed, as a person
    with an authenticator app would, and answers with the code at the server's time."""
    script = root / "enrol-askpass.py"
    script.write_text(
        f"#!{sys.executable}\n"
        "import os, re, pyotp\n"
        "shown = open(os.environ['SFTP_STDERR']).read()\n"
        "secret = re.findall(r'\\n    ((?:[A-Z2-7]{4} ){7}[A-Z2-7]{4})\\r?\\n', shown)[-1]\n"
        "secret = secret.replace(' ', '')\n"
        f"open({str(root / 'enrolled-secret')!r}, 'w').write(secret)\n"
        f"print(pyotp.TOTP(secret).at({now}))\n")
    script.chmod(0o700)
    return script


def test_self_enrolment_end_to_end(inst: Installation, tmp_path: Path) -> None:
    public = write_key_pair(tmp_path / "dee", "dee")
    new = inst.app.accounts.add(OPERATOR, username="dee", role=Role.PARTNER, partner="acme",
                                ssh_keys=[public], enrol_by_ssh=True)
    assert new.totp_uri is None
    dee = User("dee", Role.PARTNER, "", tmp_path / "dee", public)
    inst.clock.advance(seconds=30)
    askpass = _enrolling_askpass(tmp_path, inst.clock().timestamp())
    result = openssh_sftp(inst, dee, ["ls"], code="", askpass=askpass,
                          env={"LANG": "C.UTF-8"})
    assert result.returncode == 0, result.stderr
    assert "Set up one-time codes for dee now" in result.stderr
    assert "\u2588" in result.stderr  # The QR code, in the banner.
    assert audit_events(inst.app, "account:totp:enrol")[-1]["subject"] == "account:dee"
    assert inst.app.accounts.get(OPERATOR, "dee").enrolment == "enrolled"
    # From now on a normal key + code sign-in; the secret is not shown again.
    inst.clock.advance(seconds=30)
    secret = (tmp_path / "enrolled-secret").read_text()
    again = openssh_sftp(inst, dee, ["ls"], code=pyotp.TOTP(secret).at(inst.clock()))
    assert again.returncode == 0, again.stderr
    assert "Set up one-time codes" not in again.stderr


def test_the_enrolment_window_expires(inst: Installation, tmp_path: Path) -> None:
    public = write_key_pair(tmp_path / "eve", "eve")
    inst.app.accounts.add(OPERATOR, username="eve", role=Role.PARTNER, partner="acme",
                          ssh_keys=[public], enrol_by_ssh=True)
    eve = User("eve", Role.PARTNER, "", tmp_path / "eve", public)
    inst.clock.advance(hours=inst.settings.enrolment_hours, seconds=1)
    result = openssh_sftp(inst, eve, ["ls"], code="000000")
    assert result.returncode != 0
    assert "the window to enrol this account's one-time codes closed at" in result.stderr
    assert "Set up one-time codes" not in result.stderr


def test_paramiko_put_confirms_the_upload(inst: Installation, clerk: User,
                                          tmp_path: Path) -> None:
    local = tmp_path / "confirm.csv"
    local.write_bytes(b"a,b\n" * 1000)
    with paramiko_sftp(inst, clerk) as client:
        attrs = client.put(str(local), "/acme/confirm.csv")  # confirm=True by default
        assert attrs.st_size == local.stat().st_size
        stored = client.stat("/acme/confirm.csv.age")
        assert stored.st_size is not None and stored.st_size > local.stat().st_size
    with paramiko_sftp(inst, clerk) as client:
        # Another session sees what is stored for the name: the .age file.
        assert client.stat("/acme/confirm.csv").st_size == stored.st_size


def test_an_upload_refusal_reaches_the_openssh_user(inst: Installation, clerk: User) -> None:
    (inst.root / "x.csv").write_bytes(b"1\n")
    result = openssh_sftp(inst, clerk, ["ls /", "-put x.csv /nokey/"], code=inst.code(clerk))
    assert result.returncode == 0, result.stderr
    assert "nokey" not in result.stdout.replace("put x.csv /nokey/", "")
    assert ("blindpost: partner 'nokey' has no approved encryption key; uploads are refused "
            "until an admin approves one") in result.stderr


def test_codes_per_connection_are_capped_for_both_methods(inst: Installation) -> None:
    """Issue 15 (5): five codes sent at once on one connection, keyboard-interactive and
    password mixed, the last one right: three are checked, then the connection is cut."""
    fay = _fresh_user(inst, "fay")
    before = len(audit_events(inst.app, "auth:login:failure"))
    raw = RawClient(inst.port)
    try:
        assert raw.signed("fay", fay.pkey) == (MSG_USERAUTH_FAILURE, True)
        assert raw.keyboard_interactive("fay") == MSG_USERAUTH_INFO_REQUEST
        right = inst.code(fay)
        raw.send(cMSG_USERAUTH_INFO_RESPONSE, 1, "000001")
        for code in ("000002", "000003", "000004", right):
            try:
                raw.send(cMSG_USERAUTH_REQUEST, "fay", "ssh-connection", "password", False,
                         code)
            except (OSError, EOFError, paramiko.SSHException):
                break
        assert raw.closed_within(5)
    finally:
        raw.close()
    _wait_for(lambda: len([e for e in audit_events(inst.app, "auth:login:failure")[before:]
                           if e["actor"] == "fay"]) >= 3)
    checked = [e for e in audit_events(inst.app, "auth:login:failure")[before:]
               if e["actor"] == "fay"]
    assert [e["details"]["reason"] for e in checked] == ["wrong code"] * 3
    assert not [e for e in audit_events(inst.app, "auth:login:success") if e["actor"] == "fay"]


def test_a_partner_is_told_why_a_file_is_gone(inst: Installation, clerk: User) -> None:
    """Issue 23: not a bare "not found" for a file the gateway withdrew or let expire."""
    upload = inst.app.transfers.begin_upload(inst.actor(clerk), partner="acme", name="gone.csv")
    upload.write(b"id,value\n1,2\n")
    entry = upload.commit()
    inst.app.transfers.withdraw_file(OPERATOR, file_id=entry.id)
    lee = _fresh_user(inst, "gone-lee")
    result = openssh_sftp(inst, lee, ["-get gone.csv.age", "-get never-sent.csv.age"],
                          code=inst.code(lee))
    assert ("blindpost: gone.csv.age is gone: it was withdrawn; ask the sender if it should "
            "be sent again") in result.stderr, result.stderr
    # A name the gateway never stored for this partner says nothing more than the status.
    assert "blindpost: never-sent" not in result.stderr
