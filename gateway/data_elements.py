"""The data elements of a file: read its header and count its records, keep no value.

A data-sharing agreement names the data elements (columns) a partner may receive. The
gateway sees a plain-SFTP upload's bytes once, while encrypting them, and ``blindpost
send`` sees them on the staff machine before encrypting; both run :class:`ContentScan`
over the bytes as they pass. It keeps the first line (the header) until it is complete,
then only counts line ends: nothing past the header is kept or looked at beyond
``bytes.count``. This module needs no database, so the client package can use it.

What is read:

* **Encoding**: a UTF-8 BOM, a UTF-16 BOM (little or big endian), else UTF-8 when the
  header decodes as UTF-8, else latin-1 (which decodes anything; column names are ASCII
  in practice, so a wrong guess cannot hide a name).
* **Delimiter**: the most frequent of comma, tab, semicolon and pipe outside quotes in the
  header line (a one-column file has none: it is read as one column).
* **Header**: the first line, ended by LF or CRLF outside double quotes, split with the
  :mod:`csv` module (quoted names, doubled quotes). Each name must look like a column
  name (a letter first; letters, digits, space and ``_ - . ( ) / #``; at most 64
  characters): a first line of data values is not taken for names, and the file is
  then of unknown structure. So no value is recorded as a name.
* **Records**: the line ends after the header, plus a last line without one. Counted with
  ``bytes.count`` on each chunk as it passes (C speed). A quoted value that holds a line
  break is counted as more than one record: the count is an upper bound, which is the
  side a limit and an exposure report should err on; an exact count would need a quote
  state machine over every byte, in Python, on the upload path.

Anything else — a zip, a spreadsheet, a PDF, binary data, a first line that is no header
or longer than :data:`HEAD_LIMIT` — is *opaque*: its structure cannot be read.
"""

from __future__ import annotations

import codecs
import csv
import re
from dataclasses import dataclass

from gateway.errors import UsageError

# The header must be complete within this many bytes, else the file is opaque.
HEAD_LIMIT = 64 * 1024
MAX_NAME = 64
DELIMITERS = {",": "csv", "\t": "tsv", ";": "semicolon", "|": "pipe"}
OPAQUE = "opaque"
EMPTY = "empty"
# Formats whose structure is read; everything else is opaque.
READABLE = frozenset({*DELIMITERS.values(), EMPTY})
# Magic numbers of formats that are never delimited text, whatever follows.
_BINARY_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b", b"%PDF", b"\xd0\xcf\x11\xe0",
                 b"BZh", b"\xfd7zXZ", b"7z\xbc\xaf", b"age-encryption.org/",
                 b"-----BEGIN AGE")
_NAME = re.compile(r"[^\W\d_][\w .()/#\"-]*")
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16-le"),
         (codecs.BOM_UTF16_BE, "utf-16-be"))


@dataclass(frozen=True)
class Contents:
    """What a file holds, without a value: its format, column names and record count.

    ``columns`` and ``records`` are ``None`` for an opaque file; ``reason`` says why its
    structure could not be read (never quoting its bytes).
    """

    format: str
    columns: tuple[str, ...] | None
    records: int | None
    encoding: str | None = None
    reason: str | None = None

    @property
    def opaque(self) -> bool:
        return self.format == OPAQUE

    def as_details(self) -> dict[str, object]:
        """As an audit event and a transfer row record it."""
        return {"format": self.format, "columns": list(self.columns or []) if
                self.columns is not None else None, "records": self.records}


class ContentScan:
    """Fed a file's bytes in order; :meth:`finish` says what it holds."""

    def __init__(self) -> None:
        self._head = bytearray()
        self._header: Contents | None = None
        self._header_bytes = 0
        self._newlines = 0
        self._size = 0
        self._last = b""
        self._newline = b"\n"
        self._carry = b""

    @property
    def header(self) -> Contents | None:
        """The format and columns, once the header is read (records not yet counted)."""
        return self._header

    def feed(self, data: bytes | memoryview) -> None:
        """Take the next bytes of the file."""
        if not data:
            return
        self._size += len(data)
        if self._header is None:
            self._head += data
            self._try_header(final=False)
            return
        if self._header.opaque:
            return
        self._count(data if isinstance(data, bytes) else bytes(data))

    def _count(self, data: bytes) -> None:
        # The only work per byte after the header: C-speed counting.
        if len(self._newline) == 1:
            self._newlines += data.count(self._newline)
            self._last = data[-1:]
            return
        # UTF-16: count whole characters, so a line end split between writes is seen.
        joined = self._carry + data
        whole = len(joined) - len(joined) % 2
        self._newlines += joined.count(self._newline, 0, whole)
        self._carry = joined[whole:]
        if whole:
            self._last = joined[whole - 2:whole]

    def finish(self) -> Contents:
        """What the file holds: format, columns and the number of records."""
        if self._header is None:
            if self._size == 0:
                return Contents(EMPTY, (), 0)
            self._try_header(final=True)
        header = self._header
        assert header is not None
        if header.opaque:
            return header
        records = self._newlines
        if self._size > self._header_bytes and self._last != self._newline:
            records += 1  # A last line without its line end.
        return Contents(header.format, header.columns, records, header.encoding)

    def _try_header(self, *, final: bool) -> None:
        head = bytes(self._head)
        encoding, skip = _encoding(head)
        newline = "\n".encode(encoding.replace("-sig", ""))
        end = _header_end(head, skip, newline)
        if end is None and not final and len(head) < HEAD_LIMIT:
            return
        self._head = bytearray()
        self._newline = newline
        if end is None and len(head) >= HEAD_LIMIT:
            self._header = _opaque(f"no header line within the first {HEAD_LIMIT} bytes")
            return
        line_end = end if end is not None else len(head)
        self._header = _parse_header(head, skip, line_end, encoding)
        self._header_bytes = line_end + len(newline) if end is not None else len(head)
        if end is not None:
            self._last = newline
        rest = head[self._header_bytes:]
        if rest and not self._header.opaque:
            self._count(rest)


def _opaque(reason: str) -> Contents:
    return Contents(OPAQUE, None, None, reason=reason)


def _encoding(head: bytes) -> tuple[str, int]:
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name, len(bom)
    return "utf-8", 0


def _header_end(head: bytes, start: int, newline: bytes) -> int | None:
    """The offset of the line end that closes the header (outside double quotes)."""
    quote = '"'.encode("utf-16-le" if newline == b"\n\x00" else
                       "utf-16-be" if newline == b"\x00\n" else "ascii")
    position = start
    while True:
        found = head.find(newline, position)
        if found < 0:
            return None
        if len(newline) == 2 and (found - start) % 2:
            position = found + 1  # Not on a character boundary.
            continue
        if head.count(quote, start, found) % 2 == 0:
            return found
        position = found + len(newline)


def _parse_header(head: bytes, skip: int, end: int, encoding: str) -> Contents:
    raw = head[skip:end]
    if any(raw.startswith(magic) for magic in _BINARY_MAGIC) or (
            b"\x00" in raw and not encoding.startswith("utf-16")):
        return _opaque("a binary or compressed format")
    codec = encoding.replace("-sig", "")
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError:
        if codec != "utf-8":
            return _opaque(f"the header is not valid {codec}")
        codec, text = "latin-1", raw.decode("latin-1")
    text = text.removesuffix("\r")
    if any(ch < " " and ch != "\t" for ch in text):
        return _opaque("the first line holds control characters: not a text header")
    delimiter = _delimiter(text)
    cells = next(csv.reader([text], delimiter=delimiter or ",", quotechar='"', strict=False))
    names = tuple(cell.strip() for cell in cells)
    for number, name in enumerate(names, start=1):
        if len(name) > MAX_NAME or not _NAME.fullmatch(name):
            return _opaque(f"the first line is not a header (cell {number} is not a "
                           "column name)")
    form = DELIMITERS[delimiter] if delimiter else "csv"
    return Contents(form, names, None, "utf-8-sig" if encoding == "utf-8-sig" else codec)


def _delimiter(line: str) -> str | None:
    """The most frequent delimiter outside quotes, or None (one column)."""
    outside = "".join(part for index, part in enumerate(line.split('"')) if index % 2 == 0)
    counts = {delimiter: outside.count(delimiter) for delimiter in DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else None


def declared_contents(form: str, columns: list[str], records: int | None) -> Contents:
    """What a sender's client declared a file holds, checked like a header it read:
    raise :class:`UsageError` for a format, name or count no scan produces."""
    if form not in READABLE and form != OPAQUE:
        raise UsageError(f"declared contents: unknown format {form[:20]!r}")
    if form == OPAQUE:
        return Contents(OPAQUE, None, None, reason="the sender could not read it")
    for number, name in enumerate(columns, start=1):
        if len(name) > MAX_NAME or not _NAME.fullmatch(name):
            raise UsageError(f"declared contents: column {number} is not a column name")
    if records is None or records < 0:
        raise UsageError("declared contents: a readable file declares its record count")
    return Contents(form, tuple(columns), records)


def scan(data: bytes) -> Contents:
    """The contents of a whole file in memory (tests, small files)."""
    scanner = ContentScan()
    scanner.feed(data)
    return scanner.finish()
