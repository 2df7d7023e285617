"""Who sees and touches what: partner isolation, staff never read, traversal battery.

Every refusal leaves an ``access:denied`` audit entry naming the path and the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

from gateway.db.models import Role
from tests.unit.sftp_server.harness import (
    Installation,
    audit_events,
    openssh_sftp,
    paramiko_sftp,
)

pytestmark = pytest.mark.integration
Action = Callable[[paramiko.SFTPClient], object]


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    """One installation for the module: acme and beta with one file each, nokey without key."""
    installation = Installation(tmp_path_factory.mktemp("access"))
    for slug in ("acme", "beta"):
        installation.add_partner(slug)
    installation.add_partner("nokey", with_key=False)
    installation.start()
    clerk = installation.add_user("clerk", Role.STAFF)
    installation.add_user("lee", Role.PARTNER, partner="acme")
    installation.add_user("bo", Role.PARTNER, partner="beta")
    with paramiko_sftp(installation, clerk) as client:
        for slug, name in (("acme", "a.csv"), ("beta", "b.csv")):
            with client.open(f"/{slug}/{name}", "wb") as remote:
                remote.write(b"row\n" * 100)
    yield installation
    installation.close()


@pytest.fixture(scope="module")
def lee(inst: Installation) -> Iterator[paramiko.SFTPClient]:
    with paramiko_sftp(inst, inst.users["lee"]) as client:
        yield client


@pytest.fixture(scope="module")
def clerk(inst: Installation) -> Iterator[paramiko.SFTPClient]:
    with paramiko_sftp(inst, inst.users["clerk"]) as client:
        yield client


def _denied(inst: Installation, client: paramiko.SFTPClient, action: Action,
            error: type[Exception] = OSError) -> dict[str, Any]:
    """Run ``action``; it must fail with ``error`` and leave one ``access:denied`` entry."""
    before = len(audit_events(inst.app, "access:denied"))
    with pytest.raises(error):
        action(client)
    events = audit_events(inst.app, "access:denied")
    assert len(events) == before + 1, "the refusal was not audited exactly once"
    return events[-1]


# -- partner isolation ---------------------------------------------------------------

def test_partner_sees_only_its_own_inbox(lee: paramiko.SFTPClient) -> None:
    assert lee.listdir("/") == ["a.csv.age"]
    assert lee.listdir("/..") == ["a.csv.age"]


def test_partner_cannot_list_or_read_another_partners_files(
        inst: Installation, lee: paramiko.SFTPClient) -> None:
    assert "/beta" in _denied(inst, lee, lambda c: c.listdir("/beta"))["details"]["path"]
    _denied(inst, lee, lambda c: c.open("/beta/b.csv.age", "rb"))
    event = _denied(inst, lee, lambda c: c.open("b.csv.age", "rb"), FileNotFoundError)
    assert event["details"]["reason"] == "no such file"
    assert event["actor"] == "lee"


def test_partner_cannot_write(inst: Installation, lee: paramiko.SFTPClient) -> None:
    _denied(inst, lee, lambda c: c.open("new.age", "wb"), PermissionError)
    _denied(inst, lee, lambda c: c.open("a.csv.age", "r+"), PermissionError)


def test_staff_cannot_read_contents(inst: Installation, clerk: paramiko.SFTPClient) -> None:
    # A partner that cannot receive (no approved key) is not offered as a folder.
    assert clerk.listdir("/") == ["acme", "beta"]
    assert clerk.stat("/nokey").st_mode is not None
    assert clerk.listdir("/acme") == ["a.csv.age"]
    event = _denied(inst, clerk, lambda c: c.open("/acme/a.csv.age", "rb"), PermissionError)
    assert "never read" in event["details"]["reason"]
    _denied(inst, clerk, lambda c: c.open("/acme/x.csv", "w+"), PermissionError)


def test_upload_for_partner_without_key_is_refused_clearly(
        inst: Installation, clerk: paramiko.SFTPClient) -> None:
    event = _denied(inst, clerk, lambda c: c.open("/nokey/x.csv", "wb"), PermissionError)
    assert "no approved encryption key" in event["details"]["reason"]
    assert inst.app.transfers.inbox(inst.actor(inst.users["clerk"]), "nokey") == []


def test_refused_with_openssh_too(inst: Installation) -> None:
    """OpenSSH's client stats before it acts; ``ls /beta`` is a lookup of a name a
    partner's flat inbox does not have (no such file, not audited as a refusal)."""
    before = len(audit_events(inst.app, "access:denied"))
    lee = inst.users["lee"]
    result = openssh_sftp(inst, lee, ["-get /beta/b.csv.age", "-get ../../etc/passwd",
                                      "-ls /beta", "-mkdir x", "-rename a.csv.age b",
                                      "-symlink a.csv.age l", "-chmod 777 a.csv.age"],
                          code=inst.code(lee))
    assert result.returncode == 0, result.stderr
    assert 'Can\'t ls: "/beta" not found' in result.stderr
    events = audit_events(inst.app, "access:denied")[before:]
    assert [e["subject"] for e in events] == ["sftp:stat", "sftp:stat", "sftp:mkdir",
                                              "sftp:rename", "sftp:symlink", "sftp:setstat"]
    assert not (inst.root / "passwd").exists()


# -- the traversal battery -----------------------------------------------------------

TRAVERSALS = [
    "../../../../etc/passwd",
    "/../../etc/passwd",
    "/etc/passwd",
    "..\\..\\etc\\passwd",
    "..%2f..%2fetc%2fpasswd",
    "a.csv.age\x00.txt",
    "/acme/../beta/b.csv.age",
    "." * 300,
    "a" * 300,
    "a/" * 3000,
    ".hidden",
]
# Nothing is ever percent-decoded: these are literal (absent) names in the partner's inbox.
ENCODED = ["%2e%2e/%2e%2e/etc/passwd", "%2e%2e%2fbeta%2fb.csv.age", "%2E%2E"]


@pytest.mark.parametrize("path", TRAVERSALS + ENCODED)
def test_partner_traversal_open_is_refused(inst: Installation, lee: paramiko.SFTPClient,
                                           path: str) -> None:
    _denied(inst, lee, lambda c: c.open(path, "rb"))


@pytest.mark.parametrize("path", [p for p in TRAVERSALS if not p.startswith("/acme/")])
def test_staff_traversal_upload_is_refused(inst: Installation, clerk: paramiko.SFTPClient,
                                           path: str) -> None:
    _denied(inst, clerk, lambda c: c.open(path if path.startswith("/") else "/acme/" + path, "wb")
            .write(b"x"))
    assert not Path("/etc/passwd.age").exists()


@pytest.mark.parametrize("operation", [
    lambda c: c.symlink("/acme/a.csv.age", "/acme/link"),
    lambda c: c.symlink("/etc/passwd", "/acme/link.age"),
    lambda c: c.rename("/acme/a.csv.age", "/beta/a.csv.age"),
    lambda c: c.posix_rename("/acme/a.csv.age", "/acme/z.age"),
    lambda c: c.chmod("/acme/a.csv.age", 0o777),
    lambda c: c.utime("/acme/a.csv.age", (0, 0)),
    lambda c: c.mkdir("/acme/sub"),
    lambda c: c.mkdir("/newpartner"),
    lambda c: c.rmdir("/acme"),
    lambda c: c.readlink("/acme/a.csv.age"),
    lambda c: c.remove("/acme"),
    lambda c: c.listdir("/acme/a.csv.age"),
], ids=["symlink", "symlink-out", "rename", "posix-rename", "chmod", "utime", "mkdir",
        "mkdir-root", "rmdir", "readlink", "remove-folder", "dir-under-file"])
def test_staff_other_operations_are_refused(inst: Installation, clerk: paramiko.SFTPClient,
                                            operation: Action) -> None:
    _denied(inst, clerk, operation)


def test_nothing_was_created_by_the_battery(inst: Installation) -> None:
    staff = inst.actor(inst.users["clerk"])
    assert [e.name for e in inst.app.transfers.inbox(staff, "acme")] == ["a.csv.age"]
    assert [e.name for e in inst.app.transfers.inbox(staff, "beta")] == ["b.csv.age"]
    assert not any(inst.app.store.partial_dir.iterdir())
