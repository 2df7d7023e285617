"""The published recipient list: render on the gateway, parse and check on the client."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import envelope, recipient_list
from gateway.errors import UsageError
from gateway.recipient_list import PublishedKey

CLASSIC = [envelope.generate_identity(post_quantum=False).recipient for _ in range(3)]
HYBRID = envelope.generate_identity(post_quantum=True).recipient
WHEN = datetime(2026, 11, 2, 9, 0, 5, tzinfo=UTC)


def _key(recipient: envelope.Recipient, key_id: int = 3) -> PublishedKey:
    return PublishedKey(str(recipient), recipient.fingerprint, key_id, WHEN, "alice", "bob")


def test_render_is_the_documented_format() -> None:
    text = recipient_list.render("uni-research", [_key(HYBRID)])
    assert text == ("# blindpost recipients v1\n# partner: uni-research\n"
                    f"{HYBRID} {HYBRID.fingerprint} key=3 approved=2026-11-02T09:00:05Z "
                    "proposed-by=alice approved-by=bob\n")


@given(st.lists(st.sampled_from(CLASSIC), unique=True),
       st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True))
def test_round_trip(recipients: list[envelope.Recipient], partner: str) -> None:
    keys = [_key(r, n) for n, r in enumerate(recipients, start=1)]
    parsed = recipient_list.parse(recipient_list.render(partner, keys))
    assert parsed == recipient_list.RecipientList(partner, tuple(keys))
    assert parsed.recipients() == recipients


def test_unknown_fields_are_ignored() -> None:
    text = recipient_list.render("uni", [_key(CLASSIC[0])]).replace(
        "approved-by=bob", "approved-by=bob label=laptop")
    assert recipient_list.parse(text).keys == (_key(CLASSIC[0]),)


def _line(recipient: envelope.Recipient) -> str:
    return recipient_list.render("uni", [_key(recipient)]).splitlines()[2]


@pytest.mark.parametrize(("text", "message"), [
    ("", "not a blindpost recipients v1 list"),
    ("# blindpost recipients v2\n# partner: uni\n", "not a blindpost recipients v1 list"),
    ("# blindpost recipients v1\n", "not a blindpost recipients v1 list"),
    ("# blindpost recipients v1\nuni\n", "second line must name the partner"),
    ("# blindpost recipients v1\n# partner: \n", "second line must name the partner"),
    (f"# blindpost recipients v1\n# partner: uni\n{CLASSIC[0]}\n",
     "line 3: expected a recipient and fingerprint"),
    (f"# blindpost recipients v1\n# partner: uni\n{CLASSIC[0]} {CLASSIC[1].fingerprint} key=1 "
     "approved=2026-11-02T09:00:05Z proposed-by=a approved-by=b\n", "not the recipient's own"),
    ("# blindpost recipients v1\n# partner: uni\n" + _line(CLASSIC[0]).replace(
        " key=3", ""), "line 3: missing key"),
    ("# blindpost recipients v1\n# partner: uni\n" + _line(CLASSIC[0]).replace(
        "key=3", "key=three"), "malformed key id or time"),
    ("# blindpost recipients v1\n# partner: uni\n" + _line(CLASSIC[0]).replace(
        "key=3", "key3"), "malformed field"),
    ("# blindpost recipients v1\n# partner: uni\n" + _line(CLASSIC[0]) + "\n"
     + _line(CLASSIC[0]) + "\n", "listed twice"),
    ("# blindpost recipients v1\n# partner: uni\nage1zzz SHA256:x key=1\n", "line 3: "),
    ("# blindpost recipients v1\n# partner: uni\n" + "x" * (1 << 20), "larger than 1 MiB"),
])
def test_malformed_lists_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        recipient_list.parse(text)


def test_a_partner_without_keys_has_an_empty_list() -> None:
    assert recipient_list.parse(recipient_list.render("uni", [])).keys == ()
