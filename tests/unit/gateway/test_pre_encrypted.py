"""Pre-encrypted uploads: what the gateway checks, what it refuses, what it audits."""

from __future__ import annotations

import pytest

from gateway import envelope, pre_encrypted
from gateway.app import App
from gateway.db.models import Role
from gateway.errors import PolicyError
from gateway.transfers import Upload
from tests.unit.gateway.factories import account, actor, audit_events, partner_with_key

CLASSIC = envelope.generate_identity(post_quantum=False).recipient
HYBRID = envelope.generate_identity(post_quantum=True).recipient


@pytest.fixture
def uni(app: App) -> envelope.Identity:
    identity = partner_with_key(app, "uni", post_quantum=True)
    account(app, "clerk", Role.STAFF)
    return identity


def _begin(app: App, name: str = "x.csv.age") -> Upload:
    return app.transfers.begin_upload(actor(app, "clerk"), partner="uni", name=name)


def _info(*types: str) -> envelope.HeaderInfo:
    return envelope.HeaderInfo(armored=False, stanza_types=types)


def test_header_check_accepts_exactly_the_approved_kind_and_count() -> None:
    pre_encrypted.check_header(_info("mlkem768x25519"), [HYBRID])
    pre_encrypted.check_header(_info("X25519", "X25519"), [CLASSIC, CLASSIC])
    # rage's grease stanza opens with no key, so it neither counts nor is refused.
    pre_encrypted.check_header(_info("X25519", "tCp4-grease"), [CLASSIC])


@pytest.mark.parametrize(("types", "message"), [
    (("X25519",), "X25519 stanzas, but the partner's approved keys are mlkem768x25519"),
    (("scrypt",), "scrypt stanzas"),
    (("mlkem768x25519", "X25519"), "X25519 stanzas"),
    (("mlkem768x25519", "mlkem768x25519"), "2 recipient stanzas, but the partner has 1"),
])
def test_header_check_refuses_with_the_reason(types: tuple[str, ...], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        pre_encrypted.check_header(_info(*types), [HYBRID])


def test_upload_encrypted_to_another_key_kind_is_refused(app: App, uni: envelope.Identity
                                                         ) -> None:
    upload = _begin(app)
    with pytest.raises(PolicyError, match="X25519 stanzas"):
        upload.write(envelope.encrypt_bytes(b"rows", [CLASSIC]))
    aborted = audit_events(app, "file:upload:aborted")[-1]["details"]
    assert "X25519 stanzas" in aborted["reason"]
    assert app.transfers.inbox(actor(app, "clerk"), "uni") == []


def test_upload_with_an_extra_recipient_is_refused(app: App, uni: envelope.Identity) -> None:
    upload = _begin(app)
    with pytest.raises(PolicyError, match="2 recipient stanzas"):
        upload.write(envelope.encrypt_bytes(b"rows", [uni.recipient, HYBRID]))


def test_pre_encrypted_upload_is_audited_honestly(app: App, uni: envelope.Identity) -> None:
    upload = _begin(app)
    upload.declare_recipients([uni.recipient.fingerprint])
    upload.write(envelope.encrypt_bytes(b"rows", [uni.recipient]))
    entry = upload.commit()
    details = audit_events(app, "file:upload:complete")[-1]["details"]
    assert details["encryption"] == "pre-encrypted by the uploader"
    assert details["encrypted_here"] is False
    assert "recipient_keys" not in details
    assert details["stanzas"] == ["mlkem768x25519"]
    assert details["declared_recipients"] == [uni.recipient.fingerprint]
    assert details["declared_key_ids"] == [1]
    assert details["declared_kinds"] == ["mlkem768x25519"]
    assert details["sha256"] == entry.sha256


def test_undeclared_pre_encrypted_upload_names_no_keys(app: App, uni: envelope.Identity
                                                       ) -> None:
    upload = _begin(app)
    upload.write(envelope.encrypt_bytes(b"rows", [uni.recipient]))
    upload.commit()
    details = audit_events(app, "file:upload:complete")[-1]["details"]
    assert details["encryption"] == "pre-encrypted by the uploader"
    assert "declared_recipients" not in details


def test_upload_encrypted_here_names_its_keys(app: App, uni: envelope.Identity) -> None:
    upload = _begin(app, "x.csv")
    upload.write(b"rows")
    upload.commit()
    details = audit_events(app, "file:upload:complete")[-1]["details"]
    assert details["encryption"] == "encrypted by the gateway"
    assert details["recipient_keys"] == [1]


@pytest.mark.parametrize("declared", [[], ["SHA256:someone-else"], ["same", "same"]])
def test_declaring_other_keys_aborts_the_upload(app: App, uni: envelope.Identity,
                                                declared: list[str]) -> None:
    upload = _begin(app)
    declared = [uni.recipient.fingerprint if d == "same" else d for d in declared]
    with pytest.raises(PolicyError, match="not the partner's approved keys"):
        upload.declare_recipients(declared)
    assert upload.finished
    assert "approved keys" in audit_events(app, "file:upload:aborted")[-1]["details"]["reason"]


def test_only_pre_encrypted_uploads_declare(app: App, uni: envelope.Identity) -> None:
    upload = _begin(app, "x.csv")
    with pytest.raises(Exception, match="only a pre-encrypted"):
        upload.declare_recipients([uni.recipient.fingerprint])
