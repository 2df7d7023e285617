"""The text of ``/.portal-enrolment`` (:mod:`gateway.portal_enrolment`): written by the
gateway, read by ``blindpost portal-code``, so it lives apart from both, with no
dependency a client-only install lacks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

# No 0/O, 1/I: a code is read off a terminal and typed into a form.
ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
GROUPS, GROUP = 4, 4
CODE = re.compile(rf"[{ALPHABET}]{{{GROUP}}}(?:-[{ALPHABET}]{{{GROUP}}}){{{GROUPS - 1}}}")
_PLACEHOLDER = "-".join([ALPHABET[0] * GROUP] * GROUPS)
_TIME = "%Y-%m-%d %H:%M UTC"


@dataclass(frozen=True)
class IssuedCode:
    """A code as shown to its holder, once."""

    username: str
    code: str
    expires_at: datetime


def normalise(typed: str) -> str:
    """A typed code in its canonical form (upper case, dashes between groups)."""
    letters = re.sub(r"[\s-]", "", typed).upper()
    return "-".join(letters[i:i + GROUP] for i in range(0, len(letters), GROUP))


def render(issued: IssuedCode) -> str:
    """The text of ``/.portal-enrolment``: its length depends on the account name only,
    so a ``stat`` before the read (which issues the code) tells the right size."""
    return (f"Blindpost portal enrolment code for {issued.username}\n\n"
            f"    {issued.code}\n\n"
            "Type it on the portal's sign-in page, with your username and one-time code, to\n"
            "register your first passkey. It works once, until "
            f"{issued.expires_at.strftime(_TIME)};\n"
            "reading this file again replaces it.\n")


def rendered_size(username: str) -> int:
    """The size of :func:`render`'s text for ``username`` (UTF-8 bytes)."""
    sample = IssuedCode(username, _PLACEHOLDER, datetime(2000, 1, 1))  # noqa: DTZ001 - only its length counts.
    return len(render(sample).encode("utf-8"))


def parse(text: str) -> IssuedCode:
    """The code in a ``/.portal-enrolment`` text, with its account and expiry; ValueError
    if the text is not one."""
    found = CODE.search(text)
    account = re.search(r"^Blindpost portal enrolment code for (\S+)$", text, re.MULTILINE)
    until = re.search(r"until (\d{4}-\d\d-\d\d \d\d:\d\d UTC)", text)
    if found is None or account is None or until is None:
        raise ValueError("the gateway's answer holds no enrolment code")
    expires = datetime.strptime(until.group(1), _TIME).replace(tzinfo=UTC)
    return IssuedCode(account.group(1), found.group(0), expires)
