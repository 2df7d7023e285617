"""Real SFTP clients against the real server: staff upload, partner download, decrypt.

Clients: OpenSSH ``sftp`` (code through SSH_ASKPASS), paramiko, and lftp (its own SFTP
implementation over OpenSSH's ``ssh`` as the transport, which does the sign-in).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import envelope
from gateway.db.models import Role
from tests.unit.sftp_server.harness import (
    Installation,
    User,
    askpass_script,
    audit_events,
    openssh_sftp,
    paramiko_sftp,
    require_tool,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def inst(tmp_path: Path) -> Iterator[Installation]:
    installation = Installation(tmp_path)
    installation.add_partner("acme")
    installation.start()
    yield installation
    installation.close()


@pytest.fixture
def clerk(inst: Installation) -> User:
    return inst.add_user("clerk", Role.STAFF)


@pytest.fixture
def lee(inst: Installation) -> User:
    return inst.add_user("lee", Role.PARTNER, partner="acme")


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"sftp failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_openssh_upload_as_staff_download_as_partner_decrypts(
        inst: Installation, clerk: User, lee: User, tmp_path: Path) -> None:
    original = os.urandom(3 * 1024 * 1024 + 12345)
    (tmp_path / "extract.csv").write_bytes(original)
    listing = _ok(openssh_sftp(inst, clerk, ["ls /", "put extract.csv /acme/", "ls -l /acme"],
                               code=inst.code(clerk)))
    assert "/acme" in listing
    assert "extract.csv.age" in listing
    _ok(openssh_sftp(inst, lee, ["ls -l", "get extract.csv.age got.age"], code=inst.code(lee)))
    ciphertext = (tmp_path / "got.age").read_bytes()
    assert ciphertext.startswith(b"age-encryption.org/v1\n")
    assert original not in ciphertext

    age = require_tool("age")
    key_file = inst.age_identity_file("acme")
    subprocess.run([age, "-d", "-i", str(key_file), "-o", str(tmp_path / "by-age"),
                    str(tmp_path / "got.age")], check=True, capture_output=True)
    assert (tmp_path / "by-age").read_bytes() == original
    blindpost = require_tool_in_venv("blindpost")
    subprocess.run([blindpost, "decrypt", "-i", str(key_file), "-o", str(tmp_path / "by-bp"),
                    str(tmp_path / "got.age")], check=True, capture_output=True)
    assert (tmp_path / "by-bp").read_bytes() == original

    download = audit_events(inst.app, "file:download:complete")
    assert download[-1]["details"]["bytes"] == len(ciphertext)
    assert download[-1]["details"]["source"] == "127.0.0.1"
    assert audit_events(inst.app, "file:upload:complete")[-1]["details"]["encrypted_here"]


def require_tool_in_venv(name: str) -> str:
    path = Path(os.environ.get("VIRTUAL_ENV", Path(__file__).parents[2] / ".venv")) / "bin" / name
    if not path.exists():
        raise AssertionError(f"{name} is not installed in the venv; run `make test`")
    return str(path)


def test_openssh_uploads_an_age_file_as_it_is(inst: Installation, clerk: User,
                                              lee: User, tmp_path: Path) -> None:
    identity = inst.identities["acme"]
    sink = io.BytesIO()
    with envelope.Encryptor(sink, [identity.recipient]) as encryptor:
        encryptor.write(b"pre-encrypted on the staff machine")
    (tmp_path / "notes.txt.age").write_bytes(sink.getvalue())
    _ok(openssh_sftp(inst, clerk, ["put notes.txt.age /acme/"], code=inst.code(clerk)))
    _ok(openssh_sftp(inst, lee, ["get notes.txt.age"], code=inst.code(lee)))
    assert (tmp_path / "notes.txt.age").read_bytes() == sink.getvalue()


def test_openssh_plaintext_behind_a_real_age_header_is_refused(
        inst: Installation, clerk: User, lee: User, tmp_path: Path) -> None:
    """The header parses (its MAC cannot be checked here), the rest is a CSV (issue 15)."""
    sink = io.BytesIO()
    with envelope.Encryptor(sink, [inst.identities["acme"].recipient]) as encryptor:
        encryptor.write(b"")
    real = sink.getvalue()
    header = real[:real.index(b"\n", real.index(b"\n--- ") + 1) + 1]
    rows = b"".join(b"%d,P%07d,1986-04-12,F\n" % (i, i * 7919) for i in range(20_000))
    (tmp_path / "extract.csv.age").write_bytes(header + rows)
    result = openssh_sftp(inst, clerk, ["put extract.csv.age /acme/"], code=inst.code(clerk))
    # OpenSSH's client prints only the status; the server's message reaches clients that
    # show it (paramiko, lftp) and the audit log. The check runs beside the writes: the
    # refusal fails a later write, or the close if the client had sent everything by then.
    assert result.returncode != 0
    assert re.search(r'(write remote "/acme/extract.csv.age"|close remote): Failure',
                     result.stderr), result.stderr
    assert inst.app.transfers.inbox(inst.actor(lee)) == []
    assert list(inst.app.store.list_objects()) == []
    assert list(inst.app.store.partial_dir.iterdir()) == []
    reason = audit_events(inst.app, "file:upload:aborted")[-1]["details"]["reason"]
    assert "must be age ciphertext, but its payload at byte 0 is not" in reason
    with (paramiko_sftp(inst, clerk) as sftp,
          pytest.raises(OSError, match="must be age ciphertext"),
          sftp.open("/acme/again.csv.age", "wb") as handle):
        handle.write(header + rows)


def test_openssh_partner_removes_to_withdraw(inst: Installation, clerk: User,
                                             lee: User, tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(b"x" * 1000)
    _ok(openssh_sftp(inst, clerk, ["put a.csv /acme/"], code=inst.code(clerk)))
    _ok(openssh_sftp(inst, lee, ["rm a.csv.age", "ls"], code=inst.code(lee)))
    assert inst.app.transfers.inbox(inst.actor(lee)) == []
    assert audit_events(inst.app, "file:withdraw")


def test_paramiko_client_round_trip(inst: Installation, clerk: User, lee: User) -> None:
    original = os.urandom(700_000)
    with paramiko_sftp(inst, clerk) as client:
        assert client.listdir("/") == ["acme"]
        with client.open("/acme/report.bin", "wb") as remote:
            remote.set_pipelined(True)
            remote.write(original)
    with paramiko_sftp(inst, lee) as client:
        entries = client.listdir_attr("/")
        assert [e.filename for e in entries] == ["report.bin.age"]
        with client.open("report.bin.age", "rb") as remote:
            ciphertext = remote.read()
    assert entries[0].st_size == len(ciphertext)
    identity = inst.identities["acme"]
    assert envelope.decrypt_bytes(ciphertext, [identity]) == original


def test_lftp_upload_and_download(inst: Installation, clerk: User, lee: User,
                                  tmp_path: Path) -> None:
    lftp = require_tool("lftp")
    original = os.urandom(400_000)
    (tmp_path / "data.bin").write_bytes(original)
    _ok(_lftp(lftp, inst, clerk, f"put {tmp_path / 'data.bin'} -o /acme/data.bin"))
    out = tmp_path / "fetched.age"
    _ok(_lftp(lftp, inst, lee, f"ls; get data.bin.age -o {out}"))
    assert envelope.decrypt_bytes(out.read_bytes(), [inst.identities["acme"]]) == original


def _lftp(lftp: str, inst: Installation, user: User,
          commands: str) -> subprocess.CompletedProcess[str]:
    """lftp drives its own SFTP protocol over ``ssh``; the code goes through askpass."""
    ssh = (f"ssh -a -x -F /dev/null -i {user.key_path} -o IdentitiesOnly=yes "
           f"-o IdentityAgent=none -o UserKnownHostsFile={inst.known_hosts()} "
           "-o StrictHostKeyChecking=yes -o BatchMode=no")
    script = (f"set sftp:connect-program '{ssh}'; set net:max-retries 1; "
              f"set cmd:fail-exit yes; open -u {user.username}, "
              f"sftp://127.0.0.1:{inst.port}; {commands}; bye")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(inst.root),
           "SSH_ASKPASS": str(askpass_script(inst.root, inst.code(user))),
           "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}
    return subprocess.run([lftp, "-c", script], env=env, capture_output=True, text=True,
                          timeout=60, check=False, stdin=subprocess.DEVNULL)
