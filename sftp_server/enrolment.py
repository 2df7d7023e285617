"""What a key holder enrolling their second factor over SSH sees.

Two channels reach an OpenSSH user during sign-in, with different rules (tested against
OpenSSH 9.2): the keyboard-interactive *instruction* is printed with every non-ASCII
byte escaped and is cut at about 1 KiB, so it carries the secret in plain ASCII; a
*banner* is printed as UTF-8 on a UTF-8 terminal, so it carries the QR code, drawn with
half blocks (two module rows per line) for the usual light-on-dark terminal.
"""

from __future__ import annotations

import segno

from gateway.auth import PendingEnrolment

_UPPER, _LOWER, _FULL = "\u2580", "\u2584", "\u2588"


def _grouped(secret: str) -> str:
    return " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))


def _until(enrolment: PendingEnrolment) -> str:
    return enrolment.until.strftime("%Y-%m-%d %H:%M UTC")


def instructions(username: str, enrolment: PendingEnrolment) -> str:
    """The keyboard-interactive instruction: ASCII only, well under 1 KiB."""
    return (f"Set up one-time codes for {username} now (possible until {_until(enrolment)}).\n"
            "Add this account to an authenticator app: scan the QR code above, or type\n"
            f"this secret (time-based, 6 digits, every 30 seconds):\n"
            f"    {_grouped(enrolment.secret)}\n"
            "Then enter the code the app shows. Keep the app: every sign-in needs a code.")


def qr_lines(uri: str) -> list[str]:
    """``uri`` as a QR code in half blocks; light modules are drawn, dark ones left blank."""
    rows = [[not dark for dark in row]
            for row in segno.make(uri, error="l").matrix_iter(scale=1, border=2)]
    if len(rows) % 2:
        rows.append([True] * len(rows[0]))
    lines = []
    for top, bottom in zip(rows[::2], rows[1::2], strict=True):
        lines.append("".join(_FULL if t and b else _UPPER if t else _LOWER if b else " "
                             for t, b in zip(top, bottom, strict=True)))
    return lines


def banner(username: str, enrolment: PendingEnrolment) -> str:
    """The banner shown once the key verified: the QR code and the secret."""
    return "\n".join([f"Blindpost: enrol one-time codes for {username}", "",
                      *qr_lines(enrolment.uri), "",
                      f"Secret: {_grouped(enrolment.secret)}", ""])
