"""Text from elsewhere (a server's names and messages) made safe to print on a terminal.

A terminal obeys escape sequences in what it prints: a hostile gateway's file name or
error message could retitle the window, move the cursor over earlier lines, or
(on some terminals) write files. Whatever a remote party wrote reaches the terminal
through :func:`shown` or :func:`shown_lines`.
"""

from __future__ import annotations

# Remote text printed in one line is cut to this many characters.
MAX_SHOWN = 200
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def shown(text: str, *, limit: int = MAX_SHOWN) -> str:
    """``text`` as a terminal may show it: every character that is not printable
    (escape sequences, line breaks, bidi marks) as a backslash escape, at most
    ``limit`` characters of it, ``…`` marking a cut.

    What it returns is printable, so showing it again changes nothing: text may pass
    here where it enters and again where it is printed.
    """
    cut = len(text) > limit
    escaped = "".join(ch if ch.isprintable() else _escape(ch) for ch in text[:limit])
    return escaped + ("…" if cut else "")


def shown_lines(text: str) -> str:
    """Like :func:`shown` line by line, for messages whose line breaks are their own."""
    return "\n".join(shown(line, limit=10 * MAX_SHOWN) for line in text.split("\n"))


def _escape(ch: str) -> str:
    if ch in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[ch]
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
