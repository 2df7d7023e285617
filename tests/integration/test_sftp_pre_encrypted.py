"""Pre-encrypted (*.age) uploads over the real OpenSSH ``sftp`` client (issue 21): a real
age header followed by plaintext is refused wherever the plaintext is, with nothing stored
and the refusal audited; files from ``age`` and ``blindpost encrypt`` are stored as they are.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.db.models import Role
from gateway.randomness import TEXT_RUN
from tests.unit.sftp_server.harness import (
    Installation,
    User,
    audit_events,
    openssh_sftp,
    require_tool,
)

pytestmark = pytest.mark.integration
MIB = 1 << 20
CSV = b"".join(b"%d,P%07d,1986-04-%02d,F,E11.%d\n" % (i, i * 7919, i % 28 + 1, i % 10)
               for i in range(120_000))


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    installation = Installation(tmp_path_factory.mktemp("pre"))
    installation.add_partner("acme")  # Classical, so that the age CLI can encrypt to it.
    installation.start()
    yield installation
    installation.close()


@pytest.fixture(scope="module")
def clerk(inst: Installation) -> User:
    return inst.add_user("clerk", Role.STAFF)


def _age(inst: Installation, plaintext: Path, output: Path) -> None:
    subprocess.run([require_tool("age"), "-r",
                    str(inst.identities["acme"].recipient), "-o", str(output), str(plaintext)],
                   check=True)


def _real_header(inst: Installation) -> bytes:
    """The header of a real age file for the partner: all a forger needs."""
    (inst.root / "empty").write_bytes(b"")
    _age(inst, inst.root / "empty", inst.root / "empty.age")
    data = (inst.root / "empty.age").read_bytes()
    return data[:data.index(b"\n", data.index(b"\n--- ") + 1) + 1]


def _crafted(layout: str) -> tuple[bytes, int]:
    """8 MiB of random payload; plaintext where no sample of the old check looked, each
    piece fenced by a control byte so that it starts where it is put. Returns the payload
    and where its first plaintext begins."""
    payload = bytearray(os.urandom(8 * MIB))
    if layout == "middle":
        starts, length = [3 * MIB], 2 * MIB
    elif layout == "striped":  # 4 KiB of CSV every 64 KiB, after the first two windows.
        starts = list(range(128 * 1024 + 1000, len(payload) - 64 * 1024, 64 * 1024))
        length = 4096
    else:  # The thinnest stripes the every-byte test always finds, at every alignment.
        starts = [128 * 1024 + 1000 + number * (64 * 1024 + 1) for number in range(100)]
        length = TEXT_RUN
    for number, start in enumerate(starts):
        payload[start - 1] = 0x01
        text = (CSV * 2)[number * 8192 % MIB:]
        payload[start:start + length] = text[:length]
        payload[start + length] = 0x02
    return bytes(payload), starts[0]


def _stored_nothing(inst: Installation) -> None:
    assert list(inst.app.store.list_objects()) == []
    partial = inst.settings.store_dir / "partial"
    assert not partial.exists() or list(partial.iterdir()) == []


@pytest.mark.parametrize("layout", ["middle", "striped", f"stripes of {TEXT_RUN} bytes"])
def test_plaintext_behind_a_real_header_is_refused(inst: Installation, clerk: User,
                                                   layout: str) -> None:
    name = f"{layout.split(maxsplit=1)[0]}.csv.age"
    payload, first = _crafted(layout)
    (inst.root / name).write_bytes(_real_header(inst) + payload)
    result = openssh_sftp(inst, clerk, [f"put {name} /acme/"], code=inst.code(clerk))
    assert result.returncode != 0
    assert "must be age ciphertext" in result.stderr, result.stderr
    _stored_nothing(inst)
    aborted = audit_events(inst.app, "file:upload:aborted")[-1]
    assert aborted["actor"] == "clerk" and aborted["details"]["name"] == name
    reason = aborted["details"]["reason"]
    assert f"payload at byte {first} is not" in reason and "without a control byte" in reason
    assert not [e for e in audit_events(inst.app, "file:upload:complete")
                if e["details"]["name"] == name]


def test_files_from_age_and_blindpost_encrypt_are_stored_as_they_are(
        inst: Installation, clerk: User) -> None:
    plaintext = inst.root / "extract.csv"
    plaintext.write_bytes(CSV + os.urandom(MIB))
    _age(inst, plaintext, inst.root / "by-age.csv.age")
    # The blindpost command of this environment, as a staff member runs it.
    blindpost = Path(sys.executable).parent / "blindpost"
    subprocess.run([str(blindpost), "encrypt", "-r",
                    str(inst.identities["acme"].recipient), "-o",
                    str(inst.root / "by-blindpost.csv.age"), str(plaintext)], check=True)
    result = openssh_sftp(inst, clerk, ["put by-age.csv.age /acme/",
                                        "put by-blindpost.csv.age /acme/"],
                          code=inst.code(clerk))
    assert result.returncode == 0, result.stderr
    stored = {e["details"]["name"]: e["details"]
              for e in audit_events(inst.app, "file:upload:complete")}
    for name in ("by-age.csv.age", "by-blindpost.csv.age"):
        local = (inst.root / name).read_bytes()
        assert stored[name]["sha256"] == hashlib.sha256(local).hexdigest()
        assert stored[name]["encrypted_here"] is False
        assert stored[name]["payload_check"].startswith("every byte screened")
