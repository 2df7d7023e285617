"""Issue 24 with the real OpenSSH client: a file holding a column outside the partner's
data-sharing agreement, or more records than it allows, or of unknown structure, is
refused with the names in the message, and nothing is stored; a file within it is
stored with its data elements recorded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway import envelope
from gateway.db.models import Role, Transfer
from tests.integration.test_clients import Client
from tests.unit.sftp_server.harness import (
    Installation,
    User,
    audit_events,
    openssh_sftp,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    installation = Installation(tmp_path_factory.mktemp("agreements"))
    installation.add_partner("acme")
    change = installation.app.agreements.propose(
        installation.account_actor("root-admin"), partner="acme",
        columns=["hcn", "birth_date", "postal_code"], max_records=2)
    installation.app.authority.approve(installation.account_actor("second-admin"),
                                       change_id=change.id)
    installation.start()
    yield installation
    installation.close()


@pytest.fixture(scope="module")
def clerk(inst: Installation) -> User:
    return inst.add_user("clerk", Role.STAFF)


def _stored(inst: Installation) -> dict[str, tuple[str | None, str | None, int | None]]:
    with inst.app.read() as session:
        return {row.name: (row.data_format, row.data_elements, row.record_count)
                for row in session.scalars(select(Transfer))}


def _objects(inst: Installation) -> int:
    return sum(1 for p in (inst.settings.store_dir / "objects").rglob("*") if p.is_file())


@pytest.mark.parametrize(("name", "data", "message"), [
    ("forbidden.csv", b"HCN;first_name;Sex\r\n1;A;F\r\n",
     "columns outside the data-sharing agreement with acme: first_name, Sex"),
    ("many.csv", b"hcn,dob\n1,2\n3,4\n5,6\n", "3 records, over the 2 per file"),
    ("bundle.zip", b"PK\x03\x04" + bytes(range(256)) * 8, "structure cannot be read"),
], ids=["forbidden-column", "over-limit", "opaque"])
def test_a_file_outside_the_agreement_is_refused(inst: Installation, clerk: User, name: str,
                                                 data: bytes, message: str) -> None:
    before = _objects(inst)
    (inst.root / name).write_bytes(data)
    result = openssh_sftp(inst, clerk, [f"-put {name} /acme/"], code=inst.code(clerk))
    assert message in result.stderr, result.stderr
    assert name + ".age" not in _stored(inst)
    assert _objects(inst) == before
    aborted = [e for e in audit_events(inst.app, "file:upload:aborted")
               if e["details"]["name"] == name + ".age"]
    assert aborted and message in aborted[-1]["details"]["reason"]


def test_a_file_within_the_agreement_is_stored_with_its_elements(inst: Installation,
                                                                 clerk: User) -> None:
    (inst.root / "ok.tsv").write_bytes(b"\xef\xbb\xbfHealth Card Number\tDOB\r\n1\t2\r\n")
    result = openssh_sftp(inst, clerk, ["put ok.tsv /acme/"], code=inst.code(clerk))
    assert result.returncode == 0, result.stderr
    form, elements, records = _stored(inst)["ok.tsv.age"]
    assert (form, json.loads(elements or "null"), records) == (
        "tsv", ["birth_date", "health_card_number"], 1)


def test_send_checks_the_agreement_before_encrypting_and_declares_the_contents(
        inst: Installation, clerk: User, tmp_path: Path) -> None:
    sender = Client(inst, clerk, tmp_path / "clerk")
    (sender.home / "wide.csv").write_bytes(b"hcn,first_name,Sex\n1,A,F\n")
    (sender.home / "fine.csv").write_bytes(b"hcn,dob\n1,2\n3,4\n")
    before = _objects(inst)
    refused = sender.json("send", "acme", "wide.csv")
    assert refused["exit"] == 1
    assert "pinned the data-sharing agreement of acme on first use" in str(refused["stderr"])
    [result] = refused["files"]  # type: ignore[misc]
    assert "columns outside the data-sharing agreement with acme: first_name, Sex" in \
        result["error"]
    assert "wide.csv.age" not in _stored(inst) and _objects(inst) == before
    assert not [e for e in audit_events(inst.app, "file:upload:aborted")
                if e["details"]["name"] == "wide.csv.age"], "refused before anything was sent"
    sent = sender.json("send", "acme", "fine.csv")
    assert sent["exit"] == 0, sent
    form, elements, records = _stored(inst)["fine.csv.age"]
    assert (form, json.loads(elements or "null"), records) == (
        "csv", ["birth_date", "health_card_number"], 2)
    [event] = [e for e in audit_events(inst.app, "file:upload:complete")
               if e["details"]["name"] == "fine.csv.age"]
    assert event["details"]["data_read_by"] == "sender"
    # A looser agreement published later is not trusted by the pin.
    wider = inst.app.agreements.propose(inst.account_actor("root-admin"), partner="acme",
                                        columns=["hcn", "birth_date", "postal_code", "sex"],
                                        max_records=2)
    inst.app.authority.approve(inst.account_actor("second-admin"), change_id=wider.id)
    loosened = sender.run("send", "acme", "fine.csv")
    assert loosened.returncode == 1
    assert "allows more than the one pinned here (columns sex)" in loosened.stderr
    assert "blindpost trust acme" in loosened.stderr
    declined = sender.run("trust", "acme", stdin="n\n", connect=False)
    assert declined.returncode == 1
    assert "agreement with acme at [127.0.0.1]:" in declined.stdout
    assert "now allows more: columns sex" in declined.stdout
    accepted = sender.run("trust", "acme", stdin="y\n", connect=False)
    assert accepted.returncode == 0, accepted.stderr
    assert "pinned the data-sharing agreement of acme" in accepted.stdout
    again = sender.json("send", "acme", "fine.csv")
    assert again["exit"] == 0, again


def test_a_pre_encrypted_upload_without_a_declaration_is_opaque(inst: Installation,
                                                                clerk: User) -> None:
    ciphertext = envelope.encrypt_bytes(b"hcn\n1\n", [inst.identities["acme"].recipient])
    (inst.root / "direct.csv.age").write_bytes(ciphertext)
    result = openssh_sftp(inst, clerk, ["-put direct.csv.age /acme/"], code=inst.code(clerk))
    assert "structure cannot be read (pre-encrypted without a declaration" in result.stderr
    assert "direct.csv.age" not in _stored(inst)
