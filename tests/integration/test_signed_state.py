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
