"""The published recipient list: what staff download from ``/.recipients/<partner>``.

Staff encrypt on their own machine (``blindpost send``) to the keys a partner's list
names, after checking them against fingerprints they pinned. The gateway renders the
list from the approved keys; the client parses it. Both sides use this module, which
needs nothing but the envelope (no database), so the client package stays small.

The format, version 1 (UTF-8 text, LF line ends)::

    # blindpost recipients v1
    # partner: uni-research
    age1pq1… SHA256:… key=3 approved=2026-11-02T09:00:00Z proposed-by=alice approved-by=bob

The first line names the format and its version, the second the partner. Every further
line is one approved key new files are encrypted to (during a change of key type, the new
type's keys only): the recipient, its fingerprint (as ``key propose`` shows it),
then ``name=value`` fields separated by single spaces. A reader ignores fields it does
not know, so later versions can add some; it rejects a line whose fingerprint is not
the recipient's own. A partner without approved keys has a list with no key lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway import envelope
from gateway.errors import UsageError

MAGIC = "# blindpost recipients v1"
PARTNER_PREFIX = "# partner: "
# Limits that keep a hostile list from using unbounded memory in the client.
MAX_LIST_BYTES = 1 << 20
_REQUIRED = ("key", "approved", "proposed-by", "approved-by")


@dataclass(frozen=True)
class PublishedKey:
    """One approved key of a partner, as the gateway publishes it."""

    recipient: str
    fingerprint: str
    key_id: int
    approved_at: datetime
    proposed_by: str
    approved_by: str


@dataclass(frozen=True)
class RecipientList:
    """A partner's approved keys, in the order the gateway lists them."""

    partner: str
    keys: tuple[PublishedKey, ...]

    @property
    def fingerprints(self) -> frozenset[str]:
        return frozenset(key.fingerprint for key in self.keys)

    def recipients(self) -> list[envelope.Recipient]:
        """The keys as envelope recipients, ready for an :class:`~envelope.Encryptor`."""
        return [envelope.parse_recipient(key.recipient) for key in self.keys]


def timestamp(moment: datetime) -> str:
    """``2026-11-02T09:00:00Z``: UTC, whole seconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render(partner: str, keys: Iterable[PublishedKey]) -> str:
    """The list as the gateway serves it."""
    lines = [MAGIC, PARTNER_PREFIX + partner]
    lines += [f"{key.recipient} {key.fingerprint} key={key.key_id} "
              f"approved={timestamp(key.approved_at)} proposed-by={key.proposed_by} "
              f"approved-by={key.approved_by}" for key in keys]
    return "\n".join(lines) + "\n"


def parse(text: str) -> RecipientList:
    """Parse and check a published list; raise :class:`UsageError` naming the fault."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_LIST_BYTES:
        raise UsageError("recipient list: larger than 1 MiB")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if len(lines) < 2 or lines[0] != MAGIC:
        raise UsageError("recipient list: not a blindpost recipients v1 list")
    if not lines[1].startswith(PARTNER_PREFIX) or not lines[1][len(PARTNER_PREFIX):]:
        raise UsageError("recipient list: the second line must name the partner")
    keys = tuple(_parse_line(number, line) for number, line in enumerate(lines[2:], start=3))
    if len({key.fingerprint for key in keys}) != len(keys):
        raise UsageError("recipient list: a key is listed twice")
    return RecipientList(lines[1][len(PARTNER_PREFIX):], keys)


def _parse_line(number: int, line: str) -> PublishedKey:
    words = line.split(" ")
    if len(words) < 2:
        raise UsageError(f"recipient list line {number}: expected a recipient and fingerprint")
    recipient, fingerprint, *rest = words
    try:
        parsed = envelope.parse_recipient(recipient)
    except envelope.EnvelopeError as exc:
        raise UsageError(f"recipient list line {number}: {exc.diagnostics()}") from None
    if parsed.fingerprint != fingerprint or str(parsed) != recipient:
        raise UsageError(f"recipient list line {number}: the fingerprint is not the "
                         "recipient's own")
    fields = _fields(number, rest)
    try:
        return PublishedKey(recipient, fingerprint, int(fields["key"]),
                            datetime.strptime(fields["approved"], "%Y-%m-%dT%H:%M:%SZ")
                            .replace(tzinfo=UTC),
                            fields["proposed-by"], fields["approved-by"])
    except ValueError:
        raise UsageError(f"recipient list line {number}: malformed key id or time") from None


def _fields(number: int, words: Sequence[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for word in words:
        name, sep, value = word.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"recipient list line {number}: malformed field {word[:40]!r}")
        fields[name] = value
    missing = [name for name in _REQUIRED if name not in fields]
    if missing:
        raise UsageError(f"recipient list line {number}: missing {', '.join(missing)}")
    return fields
