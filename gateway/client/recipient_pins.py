"""Partner keys pinned on a staff machine, and changes waiting for ``blindpost trust``.

``blindpost send`` pins a partner's published keys on first use. When the gateway later
publishes a different set, ``send`` refuses and records the new set as *pending*; only
``blindpost trust PARTNER``, after showing what changed and asking, makes it the pin.
A gateway that swapped a partner's key for an attacker's therefore cannot redirect files
without a person noticing.

Both files have one key a line (``#`` comments allowed)::

    GATEWAY PARTNER FINGERPRINT key=ID approved=TIME proposed-by=NAME approved-by=NAME

``GATEWAY`` is the known_hosts name (``host`` or ``[host]:port``). Pins are fingerprints:
a fingerprint is the SHA-256 of the recipient, so pinning it pins the recipient.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gateway.client.files import write_private_text
from gateway.errors import UsageError
from gateway.recipient_list import PublishedKey, RecipientList, timestamp

HEADER = ("# Partner keys pinned by `blindpost send`; change them with `blindpost trust`.\n"
          "# gateway partner fingerprint key=ID approved=TIME proposed-by=NAME "
          "approved-by=NAME\n")


@dataclass(frozen=True)
class PinnedKey:
    """A partner key as pinned: its fingerprint and what the gateway said about it."""

    fingerprint: str
    key_id: str
    approved_at: str
    proposed_by: str
    approved_by: str

    @classmethod
    def of(cls, key: PublishedKey) -> PinnedKey:
        return cls(key.fingerprint, str(key.key_id), timestamp(key.approved_at),
                   key.proposed_by, key.approved_by)

    def describe(self) -> str:
        return (f"{self.fingerprint}  (key {self.key_id}, approved {self.approved_at} by "
                f"{self.approved_by}, proposed by {self.proposed_by})")

    def line(self, gateway: str, partner: str) -> str:
        return (f"{gateway} {partner} {self.fingerprint} key={self.key_id} "
                f"approved={self.approved_at} proposed-by={self.proposed_by} "
                f"approved-by={self.approved_by}")


Pins = dict[tuple[str, str], tuple[PinnedKey, ...]]


def pins_of(recipients: RecipientList) -> tuple[PinnedKey, ...]:
    return tuple(PinnedKey.of(key) for key in recipients.keys)


@dataclass(frozen=True)
class Change:
    """How a partner's published keys differ from the pinned ones."""

    gateway: str
    partner: str
    added: tuple[PinnedKey, ...]
    removed: tuple[PinnedKey, ...]

    def describe(self) -> list[str]:
        lines = [f"keys of {self.partner} at {self.gateway}:"]
        lines += [f"  removed  {key.describe()}" for key in self.removed]
        lines += [f"  added    {key.describe()}" for key in self.added]
        return lines


def compare(gateway: str, partner: str, pinned: Iterable[PinnedKey],
            published: Iterable[PinnedKey]) -> Change | None:
    """The change from ``pinned`` to ``published``, or None if they name the same keys."""
    old = {key.fingerprint: key for key in pinned}
    new = {key.fingerprint: key for key in published}
    if old.keys() == new.keys():
        return None
    return Change(gateway, partner,
                  tuple(key for fp, key in new.items() if fp not in old),
                  tuple(key for fp, key in old.items() if fp not in new))


class PinFile:
    """A file of pinned (or pending) keys per gateway and partner."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Pins:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        pins: dict[tuple[str, str], list[PinnedKey]] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip() and not line.startswith("#"):
                gateway, partner, key = self._parse(number, line)
                pins.setdefault((gateway, partner), []).append(key)
        return {where: tuple(keys) for where, keys in pins.items()}

    def _parse(self, number: int, line: str) -> tuple[str, str, PinnedKey]:
        words = line.split()
        fields = dict(word.partition("=")[::2] for word in words[3:])
        try:
            return words[0], words[1], PinnedKey(
                words[2], fields["key"], fields["approved"], fields["proposed-by"],
                fields["approved-by"])
        except (IndexError, KeyError):
            raise UsageError(f"{self.path} line {number}: malformed; fix or remove "
                             "the line") from None

    def replace(self, gateway: str, partner: str, keys: tuple[PinnedKey, ...] | None) -> None:
        """Set (or with None, forget) the keys of one partner at one gateway."""
        pins = self.load()
        pins.pop((gateway, partner), None)
        if keys is not None:
            pins[(gateway, partner)] = keys
        lines = [key.line(g, p) for (g, p), ks in sorted(pins.items()) for key in ks]
        write_private_text(self.path, HEADER + "".join(line + "\n" for line in lines))
