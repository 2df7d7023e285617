"""Key types: one type per file, a type switch without purge or gap, shared keys flagged."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from gateway import envelope
from gateway.app import App
from gateway.db.models import KeyState, Role
from gateway.errors import PolicyError
from tests.conftest import FakeClock
from tests.unit.gateway.factories import (
    OPERATOR,
    account,
    actor,
    audit_events,
    partner_with_key,
)


@pytest.fixture
def uni(app: App) -> envelope.Identity:
    identity = partner_with_key(app, "uni", post_quantum=True)
    account(app, "clerk", Role.STAFF)
    account(app, "lee", Role.PARTNER, partner="uni")
    return identity


def _upload(app: App, name: str, data: bytes) -> None:
    upload = app.transfers.begin_upload(actor(app, "clerk"), partner="uni", name=name)
    upload.write(data)
    upload.commit()


def _download(app: App, name: str) -> bytes:
    download = app.transfers.open_download(actor(app, "lee"), name)
    data = download.read_at(0, download.size)
    download.close()
    return data


def test_a_key_of_the_other_type_is_refused_at_proposal_with_the_safe_path(
        app: App, uni: envelope.Identity) -> None:
    classic = envelope.generate_identity(post_quantum=False)
    with pytest.raises(PolicyError) as refused:
        app.keys.propose(actor(app, "root-admin"), partner="uni",
                         recipient=str(classic.recipient))
    message = refused.value.diagnostics()
    assert "hybrid post-quantum mlkem768x25519" in message
    assert "classical X25519" in message
    assert "--switch-type" in message
    assert "Do not revoke the old keys first" in message
    assert all(k.state is not KeyState.PROPOSED for k in app.keys.all(OPERATOR))


def test_a_type_switch_keeps_waiting_files_and_has_no_gap(
        app: App, uni: envelope.Identity, clock: FakeClock) -> None:
    _upload(app, "before.csv", b"old type")
    classic = envelope.generate_identity(post_quantum=False)
    key = app.keys.propose(actor(app, "root-admin"), partner="uni",
                           recipient=str(classic.recipient), switch_type=True)
    details = audit_events(app, "key:propose")[-1]["details"]
    assert (details["switch_from"], details["switch_to"]) == ("mlkem768x25519", "x25519")
    # Until the approval the old key receives: no gap.
    _upload(app, "between.csv", b"still old")
    assert envelope.decrypt_bytes(_download(app, "between.csv.age"), [uni]) == b"still old"
    clock.advance(minutes=1)
    app.keys.approve(actor(app, "second-admin"), key_id=key.id)
    clock.advance(minutes=1)
    approval = audit_events(app, "key:approve")[-1]["details"]
    assert approval["switch_to"] == "x25519" and len(approval["no_new_files_for"]) == 1
    _upload(app, "after.csv", b"new type")
    after = _download(app, "after.csv.age")
    assert after.startswith(b"age-encryption.org/v1\n-> X25519 ")
    assert b"mlkem768x25519" not in after.split(b"\n---")[0]
    assert envelope.decrypt_bytes(after, [classic]) == b"new type"
    # The old key stays approved for the waiting files, and receives nothing new.
    keys = {k.id: k for k in app.keys.all(OPERATOR, partner="uni")}
    old = next(k for k in keys.values() if k.kind == "mlkem768x25519")
    assert old.state is KeyState.APPROVED and not old.receiving
    # Two files were uploaded before the switch: the partner keeps the old private key
    # until the later one expires.
    assert old.waiting_files == 2 and old.waiting_until is not None
    assert keys[key.id].waiting_files == 0
    assert keys[key.id].receiving
    assert old.recipient not in app.keys.published(actor(app, "clerk"), "uni")
    # Revoking it later purges nothing: another key is approved.
    app.keys.revoke(actor(app, "second-admin"), key_id=old.id)
    assert envelope.decrypt_bytes(_download(app, "before.csv.age"), [uni]) == b"old type"
    assert not audit_events(app, "file:purge")


def test_a_key_approved_for_another_partner_is_flagged(app: App,
                                                       uni: envelope.Identity) -> None:
    app.partners.add(OPERATOR, slug="lab")
    key = app.keys.propose(actor(app, "root-admin"), partner="lab",
                           recipient=str(uni.recipient))
    assert key.also_approved_for == ("uni",)
    assert audit_events(app, "key:propose")[-1]["details"]["also_approved_for"] == ["uni"]
    listed = {k.id: k for k in app.keys.all(OPERATOR)}
    assert listed[key.id].also_approved_for == ("uni",)


def test_the_cli_states_the_switch_and_the_shared_key(app: App, uni: envelope.Identity,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.cli import keys as cli_keys
    from gateway.cli.program import main

    monkeypatch.setattr(cli_keys, "open_app", lambda _data_dir: app)
    monkeypatch.setattr(cli_keys, "prove", lambda _app, by, purpose: actor(app, by))
    classic = str(envelope.generate_identity(post_quantum=False).recipient)
    runner = CliRunner()
    refused = runner.invoke(main, ["key", "propose", "uni", classic, "--by", "root-admin"])
    assert refused.exit_code == 1
    assert "--switch-type" in refused.output
    done = runner.invoke(main, ["key", "propose", "uni", classic, "--switch-type",
                                        "--by", "root-admin"])
    assert done.exit_code == 0, done.output
    assert "proposed key" in done.output
    app.partners.add(OPERATOR, slug="lab")
    shared = runner.invoke(main, ["key", "propose", "lab", str(uni.recipient),
                                          "--by", "root-admin"])
    assert shared.exit_code == 0, shared.output
    assert "already approved for uni" in shared.output
