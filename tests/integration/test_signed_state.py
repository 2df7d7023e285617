"""Signed state end to end, with the real OpenSSH client: injected rows grant nothing.

The attacker writes the gateway's database (as a SQL injection would) but cannot read
keys/: it adds its own SSH key to a partner account and signs in with the account's real
code; it adds its own recipient key as approved and waits for the next upload.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from gateway import envelope
from gateway.db.models import Role
from tests.unit.gateway.factories import OPERATOR
from tests.unit.sftp_server.harness import (
    Installation,
    audit_events,
    openssh_sftp,
    write_key_pair,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def inst(tmp_path: Path) -> Iterator[Installation]:
    installation = Installation(tmp_path)
    installation.add_partner("acme")
    installation.start()
    installation.add_user("clerk", Role.STAFF)
    installation.add_user("lee", Role.PARTNER, partner="acme")
    yield installation
    installation.close()


def _inject(inst: Installation, statement: str, **params: object) -> None:
    with inst.app.engine.begin() as connection:
        connection.execute(text(statement), params)


def test_an_injected_ssh_key_with_the_real_code_is_refused(inst: Installation) -> None:
    lee = inst.users["lee"]
    attacker_key = inst.root / "attacker"
    public = write_key_pair(attacker_key, "attacker")
    _inject(inst, "INSERT INTO ssh_keys (account_id, key_type, key_data, fingerprint, comment, "
            "created_at) SELECT id, 'ssh-ed25519', :data, :fp, '', CURRENT_TIMESTAMP "
            "FROM accounts WHERE username = 'lee'", data=public.data_b64,
            fp=public.fingerprint)
    refused = openssh_sftp(inst, lee, ["ls"], code=inst.code(lee), key=attacker_key)
    assert refused.returncode != 0
    assert "Permission denied" in refused.stderr
    violation = audit_events(inst.app, "integrity:violation")[-1]
    assert violation["details"]["table"] == "ssh_keys"
    # The account's own key still works.
    assert openssh_sftp(inst, lee, ["ls"], code=inst.code(lee)).returncode == 0


def test_an_injected_recipient_receives_nothing(inst: Installation) -> None:
    attacker = envelope.generate_identity(post_quantum=False)
    _inject(inst, "INSERT INTO partner_keys (partner_id, recipient, kind, fingerprint, label, "
            "state, proposed_by, proposed_at, approved_by, approved_at) SELECT partner_id, "
            ":recipient, kind, 'SHA256:attacker', '', 'approved', proposed_by, proposed_at, "
            "approved_by, approved_at FROM partner_keys", recipient=str(attacker.recipient))
    (inst.root / "extract.csv").write_bytes(b"PATIENT-4711,preeclampsia\n" * 1000)
    clerk = inst.users["clerk"]
    upload = openssh_sftp(inst, clerk, ["put extract.csv /acme/"], code=inst.code(clerk))
    assert upload.returncode != 0
    assert 'dest open "/acme/extract.csv": Permission denied' in upload.stderr
    assert inst.app.transfers.inbox(inst.actor(clerk), "acme") == []
    stored = [p for p in (inst.data_dir / "store").rglob("*") if p.is_file()]
    assert stored == []  # Nothing was kept: not encrypted to the attacker, not in clear.
    violation = audit_events(inst.app, "integrity:violation")[-1]
    assert violation["details"]["table"] == "partner_keys"
    refusal = audit_events(inst.app, "access:denied")[-1]
    assert "integrity check failed for partner_keys" in refusal["details"]["reason"]


def _keep(inst: Installation, table: str, where: str) -> list[dict[str, object]]:
    with inst.app.engine.connect() as connection:
        return [dict(row._mapping) for row in
                connection.execute(text(f"SELECT * FROM {table} WHERE {where}"))]


def _put_back(inst: Installation, table: str, rows: list[dict[str, object]]) -> None:
    for row in rows:
        assignments = ", ".join(f"{name} = :{name}" for name in row)
        _inject(inst, f"UPDATE {table} SET {assignments} WHERE id = :id", **row)


def test_a_revoked_key_put_back_receives_nothing(inst: Installation) -> None:
    """The stolen-laptop case: the partner's key is revoked; the attacker writes back the
    row as it was while approved, seal and all, and waits for the next upload."""
    second = envelope.generate_identity(post_quantum=False)
    key = inst.app.keys.propose(inst.account_actor("root-admin"), partner="acme",
                                recipient=str(second.recipient))
    inst.app.keys.approve(inst.account_actor("second-admin"), key_id=key.id)
    stolen = _keep(inst, "partner_keys", f"id = {key.id}")
    inst.app.keys.revoke(inst.account_actor("root-admin"), key_id=key.id)
    _put_back(inst, "partner_keys", stolen)
    (inst.root / "extract.csv").write_bytes(b"PATIENT-4711,preeclampsia\n" * 1000)
    clerk = inst.users["clerk"]
    upload = openssh_sftp(inst, clerk, ["put extract.csv /acme/"], code=inst.code(clerk))
    assert upload.returncode != 0
    assert inst.app.transfers.inbox(inst.actor(clerk), "acme") == []
    assert [p for p in (inst.data_dir / "store").rglob("*") if p.is_file()] == []
    violation = audit_events(inst.app, "integrity:violation")[-1]
    assert (violation["details"]["table"], violation["details"]["row"]) == (
        "partner_keys", str(key.id))
    assert "not current" in violation["details"]["reason"]


def test_a_disabled_account_put_back_signs_in_nowhere(inst: Installation) -> None:
    lee = inst.users["lee"]
    enabled = _keep(inst, "accounts", "username = 'lee'")
    inst.app.accounts.disable(OPERATOR, username="lee")
    _put_back(inst, "accounts", enabled)
    refused = openssh_sftp(inst, lee, ["ls"], code=inst.code(lee))
    assert refused.returncode != 0
    violation = audit_events(inst.app, "integrity:violation")[-1]
    assert violation["details"]["table"] == "accounts"
    assert "not current" in violation["details"]["reason"]


def test_a_reset_secret_put_back_takes_no_old_code(inst: Installation) -> None:
    lee = inst.users["lee"]
    old = _keep(inst, "totp_secrets", "account_id = (SELECT id FROM accounts WHERE "
                "username = 'lee')")
    inst.app.accounts.reset_totp(OPERATOR, username="lee")
    with inst.app.engine.begin() as connection:
        for row in old:
            assignments = ", ".join(f"{name} = :{name}" for name in row)
            connection.execute(text(f"UPDATE totp_secrets SET {assignments} "
                                    "WHERE account_id = :account_id"), row)
    refused = openssh_sftp(inst, lee, ["ls"], code=inst.code(lee))  # The old secret's code.
    assert refused.returncode != 0
    violation = audit_events(inst.app, "integrity:violation")[-1]
    assert violation["details"]["table"] == "totp_secrets"
