"""What the gateway names, checked before it reaches a local path or the terminal.

The client does not trust the server with its file system or its terminal. A
compromised gateway may list ``../../.bashrc.age``, send the transfer id
``x/../../…`` (which once became part of a partial file's name), put terminal escape
sequences in a name or an error message, or send a listing without end. Every name,
id and hash the server sends passes one of these checks before it is used, and every
text of the server's is printed through :func:`gateway.terminal.shown`. A refusal says what is wrong
and shows the value escaped.
"""

from __future__ import annotations

import re
import unicodedata

from gateway.errors import RemoteError
from gateway.terminal import shown

AGE_SUFFIX = ".age"
# The gateway's own limit for a stored name (suffix included), and NAME_MAX of the
# common local file systems.
MAX_NAME_BYTES = 255
# Transfer ids are UUIDs; this admits any short id made of letters, digits, - and _,
# nothing that a path or a terminal treats specially.
_TRANSFER_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Control, format (bidi overrides such as U+202E), surrogate, private-use and
# unassigned characters: none belongs in a file name a person reads.
_INVISIBLE = frozenset(("Cc", "Cf", "Cs", "Co", "Cn"))


class UnsafeNameError(RemoteError):
    """The gateway sent a name, id or hash this client will not use."""


def _refuse(what: str, value: str, problem: str) -> UnsafeNameError:
    return UnsafeNameError(f"refusing the {what} '{shown(value)}' from the gateway: "
                           f"{problem}; nothing was fetched")


def plain_name(name: str) -> str:
    """The local name for the gateway's ``NAME.age``; refuses any name that is not plain."""
    problem = _name_problem(name)
    if problem:
        raise _refuse("file name", name, problem)
    return name[:-len(AGE_SUFFIX)]


def _name_problem(name: str) -> str | None:
    base = name[:-len(AGE_SUFFIX)] if name.endswith(AGE_SUFFIX) else ""
    if not base:
        return "not a NAME.age"
    if "/" in base or "\\" in base:
        return "it contains a path separator"
    if base in (".", "..") or base.startswith("."):
        return "a hidden name or a path step"
    if any(unicodedata.category(ch) in _INVISIBLE for ch in base):
        return "it contains control, format or unassigned characters"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"longer than {MAX_NAME_BYTES} bytes"
    return None


def transfer_id(value: str) -> str:
    """``value`` if it is a plain transfer id (letters, digits, ``-``, ``_``; at most 64)."""
    if _TRANSFER_ID.fullmatch(value) is None:
        raise _refuse("transfer id", value, "an id is 1 to 64 letters, digits, '-' or '_'")
    return value


def ciphertext_sha256(value: str) -> str:
    """``value`` if it is a SHA-256 in lowercase hex."""
    if _SHA256.fullmatch(value) is None:
        raise _refuse("ciphertext SHA-256", value, "not 64 lowercase hex digits")
    return value
