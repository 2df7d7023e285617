"""Reading what verification needs from a leaf without decoding it.

The log writes every leaf in one form: RFC 8785 canonical JSON of the event, its keys in
the order ``actor, details, index, subject, tag, time, v``, details holding plain values
and lists of them. :func:`leaf_fields` recognises that form with one regular expression
and returns the index, tag and time it declares; decoding the JSON costs several times
as much, and verification reads a million leaves.

The expression accepts only text that is valid JSON and decodes to an object whose
top-level ``index``, ``tag`` and ``time`` are the captured values (a string pattern
without escapes decodes to itself, and the top-level keys are fixed, so none repeats).
Anything else - another key order, whitespace, an escaped tag, a time the log would not
write - returns ``None``, and the verifier decodes that leaf in full to judge it: the
pattern saves time on the usual form, it never decides a finding.

Only the standard library is used: an offline verifier on a client-only install runs
this too.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

# A JSON string: unescaped runs, and the escapes JSON allows. Possessive quantifiers and
# atomic groups: a leaf that does not match fails at once instead of backtracking.
_CHAR = r'[^"\\\x00-\x1f]'
_STRING = rf'"{_CHAR}*+(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{{4}}){_CHAR}*+)*+"'
_NUMBER = r"-?(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?(?:[eE][-+]?[0-9]++)?"
_SCALAR = rf"(?>{_STRING}|{_NUMBER}|true|false|null)"
_VALUE = rf"(?>{_SCALAR}|\[(?:{_SCALAR}(?:,{_SCALAR})*+)?\])"
_DETAILS = rf"\{{(?:{_STRING}:{_VALUE}(?:,{_STRING}:{_VALUE})*+)?\}}"
# The time exactly as format_time writes it for years 1000 to 9999.
_TIME = r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z"
_LEAF = re.compile(
    rf'\{{"actor":{_STRING},"details":{_DETAILS},"index":(0|[1-9][0-9]*+),'
    rf'"subject":{_STRING},"tag":"({_CHAR}*+)","time":"({_TIME})","v":1\}}')


def leaf_fields(leaf: str) -> tuple[str, str, str] | None:
    """The ``(index digits, tag, time)`` a leaf in the log's usual form declares, else None."""
    found = _LEAF.fullmatch(leaf)
    return None if found is None else (found[1], found[2], found[3])


def column_time_text(leaf_time: str) -> str:
    """The time column's text (``YYYY-MM-DD HH:MM:SS.ffffff``) for a time
    :func:`leaf_fields` returned: SQLite stores the column so, and PostgreSQL renders it
    so when asked."""
    return f"{leaf_time[:10]} {leaf_time[11:26]}"


def column_datetime(text: Any) -> datetime:
    """The aware time of an entry's time column text, as the ORM would return it.

    Raises :class:`ValueError` or :class:`TypeError` when the column holds no time.
    """
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
