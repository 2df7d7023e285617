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

import hashlib
import re
from collections.abc import Container, Iterable
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


def usual_leaf_hashes(first: int, times: Iterable[Any], tags: Iterable[Any],
                      texts: Iterable[Any], known_tags: Container[str]) -> list[bytes] | None:
    """The leaf hashes of consecutive entries from index ``first`` whose leaves are all
    in the usual form and agree with their columns, or None at the first that is not so.

    ``times``, ``tags`` and ``texts`` are the entries' time column text, tag column and
    leaf text, in index order. The leaf of entry ``first + n`` must declare that index,
    a tag in ``known_tags`` equal to its tag column and the time of its time column:
    what the verifier's entry-by-entry path checks, without decoding a leaf. This is the
    step of verification that costs most per entry, and the one that may run in a second
    process (:mod:`gateway.audit.leaf_worker`); None only says "check these entry by
    entry", never what is wrong.
    """
    hashes: list[bytes] = []
    match, sha256 = _LEAF.fullmatch, hashlib.sha256
    expected = first
    for when, tag, text in zip(times, tags, texts, strict=True):
        found = match(text) if isinstance(text, str) else None
        if found is None:
            return None
        index, leaf_tag, leaf_time = found.groups()
        # The pattern admits only canonical digits, so comparing text is comparing
        # numbers, and a leaf declaring a number of thousands of digits costs nothing.
        if (index != str(expected) or leaf_tag != tag or leaf_tag not in known_tags
                or when != f"{leaf_time[:10]} {leaf_time[11:26]}"):
            return None
        hashes.append(sha256(b"\x00" + text.encode()).digest())
        expected += 1
    return hashes


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
