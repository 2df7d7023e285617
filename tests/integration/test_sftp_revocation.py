"""A partner key revoked while an upload to it runs (issue 15, point 7).

The attack: staff start a large upload, an admin revokes the partner's key because it
leaked, the upload carries on and completes, and the file sits in the inbox encrypted to
the revoked key. The recipients are checked again when the file is committed: the close
is refused with a message saying why, nothing is stored, and the abort is audited.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from paramiko.sftp import CMD_CLOSE

from gateway.db.models import Role
from tests.unit.sftp_server.harness import Installation, audit_events, paramiko_sftp

pytestmark = pytest.mark.integration
MIB = 1 << 20


@pytest.fixture
def inst(tmp_path: Path) -> Iterator[Installation]:
    installation = Installation(tmp_path)
    installation.add_partner("acme")
    installation.add_user("clerk", Role.STAFF)
    installation.add_user("lee", Role.PARTNER, partner="acme")
    installation.start()
    yield installation
    installation.close()


def test_key_revoked_during_an_upload_stops_the_file(inst: Installation) -> None:
    (key,) = inst.app.keys.all(inst.account_actor("root-admin"), partner="acme")
    with paramiko_sftp(inst, inst.users["clerk"]) as sftp:
        handle = sftp.open("/acme/extract.csv", "wb")
        handle.write(os.urandom(MIB))
        handle.flush()
        inst.app.keys.revoke(inst.account_actor("second-admin"), key_id=key.id)
        handle.write(os.urandom(MIB))
        handle.flush()
        # paramiko's client swallows errors on close, so ask for the status directly.
        with pytest.raises(OSError, match=f"recipient key {key.id} of partner 'acme' was "
                                          "revoked during the upload"):
            sftp._request(CMD_CLOSE, handle.handle)
    assert inst.app.transfers.inbox(inst.actor(inst.users["lee"])) == []
    assert list(inst.app.store.list_objects()) == []
    assert list(inst.app.store.partial_dir.iterdir()) == []
    assert audit_events(inst.app, "file:upload:complete") == []
    aborted = audit_events(inst.app, "file:upload:aborted")[-1]
    assert aborted["actor"] == "clerk"
    assert "revoked during the upload" in aborted["details"]["reason"]
    assert aborted["details"]["received"] == 2 * MIB
