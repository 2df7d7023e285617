"""Pinned partner keys: comparison, and the pin file's round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.client.recipient_pins import PinFile, PinnedKey, compare
from gateway.errors import UsageError

A = PinnedKey("SHA256:" + "a" * 43, "1", "2026-11-02T09:00:00Z", "alice", "bob")
B = PinnedKey("SHA256:" + "b" * 43, "2", "2026-11-03T09:00:00Z", "alice", "carol")


def test_same_fingerprints_are_no_change_whatever_the_metadata() -> None:
    relabelled = PinnedKey(A.fingerprint, "9", "2027-01-01T00:00:00Z", "x", "y")
    assert compare("gw", "uni", [A], [relabelled]) is None


def test_change_names_added_and_removed_keys() -> None:
    change = compare("[gw]:2222", "uni", [A], [B])
    assert change is not None
    assert change.added == (B,)
    assert change.removed == (A,)
    text = "\n".join(change.describe())
    assert f"removed  {A.fingerprint}  (key 1, approved 2026-11-02T09:00:00Z by bob" in text
    assert f"added    {B.fingerprint}  (key 2, approved 2026-11-03T09:00:00Z by carol" in text


def test_pin_file_round_trip_and_forget(tmp_path: Path) -> None:
    pins = PinFile(tmp_path / "cfg" / "known_recipients")
    assert pins.load() == {}
    pins.replace("[gw]:2222", "uni", (A, B))
    pins.replace("gw2", "lab", (A,))
    assert pins.load() == {("[gw]:2222", "uni"): (A, B), ("gw2", "lab"): (A,)}
    assert (pins.path.stat().st_mode & 0o777) == 0o600
    assert (pins.path.parent.stat().st_mode & 0o777) == 0o700
    pins.replace("gw2", "lab", None)
    assert list(pins.load()) == [("[gw]:2222", "uni")]


def test_malformed_pin_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "known_recipients"
    path.write_text("# comment\ngw uni SHA256:x key=1\n")
    with pytest.raises(UsageError, match="known_recipients line 2: malformed"):
        PinFile(path).load()
