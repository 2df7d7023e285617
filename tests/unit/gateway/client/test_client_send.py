"""send's check of the published keys against the pins: first use, change, change back."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway import envelope, recipient_list
from gateway.client.recipient_pins import PinFile
from gateway.client.send import RecipientsChangedError, partner_recipients
from gateway.errors import PolicyError, RemoteError

WHEN = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


class Published:
    """Serves /.recipients/<partner> like the gateway (the rest is not needed)."""

    def __init__(self, partner: str, *recipients: envelope.Recipient) -> None:
        self.text = recipient_list.render(partner, [
            recipient_list.PublishedKey(str(r), r.fingerprint, n, WHEN, "alice", "bob")
            for n, r in enumerate(recipients, start=1)])

    def read_small(self, path: str, *, limit: int) -> bytes:
        assert path.startswith("/.recipients/")
        return self.text.encode()


def _check(tmp_path: Path, served: Published, partner: str = "uni") -> list[str]:
    notices: list[str] = []
    partner_recipients(served, gateway="[gw]:2222", partner=partner,  # type: ignore[arg-type]
                       pins=PinFile(tmp_path / "known"), pending=PinFile(tmp_path / "pending"),
                       notice=notices.append)
    return notices


def test_first_use_pins_then_a_change_waits_for_trust(tmp_path: Path) -> None:
    old, new = (envelope.generate_identity(post_quantum=False).recipient for _ in range(2))
    assert "pinned the keys of uni on first use" in _check(tmp_path, Published("uni", old))[0]
    assert _check(tmp_path, Published("uni", old)) == []
    with pytest.raises(RecipientsChangedError) as refused:
        _check(tmp_path, Published("uni", new))
    change = refused.value.change
    assert [k.fingerprint for k in change.removed] == [old.fingerprint]
    assert [k.fingerprint for k in change.added] == [new.fingerprint]
    assert ("[gw]:2222", "uni") in PinFile(tmp_path / "pending").load()
    # The gateway serves the pinned keys again: the recorded change is dropped, so a
    # later `trust` cannot accept it by mistake.
    assert _check(tmp_path, Published("uni", old)) == []
    assert PinFile(tmp_path / "pending").load() == {}


def test_a_list_for_another_partner_or_without_keys_is_refused(tmp_path: Path) -> None:
    key = envelope.generate_identity(post_quantum=False).recipient
    with pytest.raises(RemoteError, match="sent the keys of 'lab'"):
        _check(tmp_path, Published("lab", key))
    with pytest.raises(PolicyError, match="has no approved key yet"):
        _check(tmp_path, Published("uni"))


@pytest.mark.parametrize("head", [b"\x1f\x8b\x08binary\n", b"name,age\n"])
def test_what_a_file_holds_is_read_as_a_whole_scan_says(tmp_path: Path, head: bytes) -> None:
    # read_contents stops at the header of an opaque file; the result must not change.
    from gateway.client.agreement_pins import READ_BLOCK, read_contents
    from gateway.data_elements import ContentScan

    path = tmp_path / "extract"
    body = head + b"x,1\n" * (READ_BLOCK // 2)
    path.write_bytes(body)
    scan = ContentScan()
    scan.feed(body)
    assert read_contents(path) == scan.finish()
