"""The terms of a data-sharing agreement, checked against what a file holds.

An agreement names the data elements a partner may receive (column names), an optional
maximum number of records per file, and whether files whose structure cannot be read
(a zip, a spreadsheet) are allowed at all. The gateway checks every plain upload against
it (:mod:`gateway.transfers`), and ``blindpost send`` checks on the staff machine against
the terms the gateway publishes (``/.agreements/PARTNER``, pinned like the recipient
list). This module needs no database, so the client package uses it too.

Column names are compared after normalising: case folded, runs of spaces, hyphens, dots
and underscores made one underscore, leading and trailing ones dropped
(``Health Card-Number`` is ``health_card_number``). Aliases then map a name to the
element it stands for: a small table of common ones below, plus an agreement's own.

The published format, version 1 (UTF-8 text, LF line ends)::

    # blindpost agreement v1
    # partner: uni-research
    columns birth_date,health_card_number,postal_code
    alias pc=postal_code
    max-records 500000
    allow-opaque no
    change 7
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.data_elements import Contents
from gateway.errors import PolicyError, UsageError

MAGIC = "# blindpost agreement v1"
PARTNER_PREFIX = "# partner: "
MAX_TERMS_BYTES = 1 << 20
# Common names of the same data element, normalised. An agreement adds its own.
ALIASES: Mapping[str, str] = {
    "hcn": "health_card_number", "health_card": "health_card_number",
    "health_card_no": "health_card_number", "phn": "health_card_number",
    "health_number": "health_card_number",
    "dob": "birth_date", "date_of_birth": "birth_date", "birthdate": "birth_date",
    "postcode": "postal_code", "post_code": "postal_code", "zip": "postal_code",
    "zip_code": "postal_code", "postalcode": "postal_code",
    "mrn": "medical_record_number", "chart_number": "medical_record_number",
    "surname": "last_name", "family_name": "last_name",
    "given_name": "first_name", "forename": "first_name",
    "gender": "sex",
}
_SEPARATORS = re.compile(r"[\s_.\-]+")


def normalise(name: str) -> str:
    """A column name as agreements compare it."""
    return _SEPARATORS.sub("_", name.strip().casefold()).strip("_")


@dataclass(frozen=True)
class Terms:
    """A partner's agreement: the elements it may receive and the limits on a file."""

    partner: str
    columns: tuple[str, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)
    max_records: int | None = None
    allow_opaque: bool = False
    change_id: int | None = None

    def element(self, name: str) -> str:
        """The data element a column name stands for (normalised, aliases resolved)."""
        key = normalise(name)
        return self.aliases.get(key) or ALIASES.get(key) or key

    def outside(self, columns: Iterable[str]) -> list[str]:
        """The column names, as written in the file, that the agreement does not allow."""
        allowed = set(self.columns)
        return [name for name in columns if self.element(name) not in allowed]

    def check(self, contents: Contents, *, declared: bool = False) -> None:
        """Raise :class:`PolicyError` naming what ``contents`` holds beyond the terms."""
        who = "the sender declared" if declared else "the file holds"
        if contents.opaque:
            if not self.allow_opaque:
                raise PolicyError(f"refused: the data-sharing agreement with {self.partner} "
                                  "allows only files whose columns can be read, and this "
                                  f"file's structure cannot be read ({contents.reason or 'opaque'})"
                                  "; send a delimited text file (CSV, TSV)")
            return
        outside = self.outside(contents.columns or ())
        if outside:
            raise PolicyError(f"refused: {who} columns outside the data-sharing agreement "
                              f"with {self.partner}: {', '.join(outside)}; nothing was stored")
        if (self.max_records is not None and contents.records is not None
                and contents.records > self.max_records):
            raise PolicyError(f"refused: {who} {contents.records} records, over the "
                              f"{self.max_records} per file the data-sharing agreement with "
                              f"{self.partner} allows; nothing was stored")

    def elements(self, columns: Iterable[str]) -> list[str]:
        """The data elements of a file's columns, sorted, each once."""
        return sorted({self.element(name) for name in columns})


def elements_of(columns: Iterable[str]) -> list[str]:
    """Data elements of columns when no agreement applies (common aliases only)."""
    return Terms("", ()).elements(columns)


def make_terms(partner: str, *, columns: Iterable[str], aliases: Mapping[str, str] | None = None,
               max_records: int | None = None, allow_opaque: bool = False,
               change_id: int | None = None) -> Terms:
    """Terms from what an admin typed: names normalised, aliases checked."""
    names = sorted({normalise(name) for name in columns if normalise(name)})
    table = {normalise(alias): normalise(target) for alias, target in (aliases or {}).items()}
    if not names:
        raise UsageError("an agreement names at least one column")
    unknown = sorted(target for target in table.values() if target not in names)
    if unknown:
        raise UsageError(f"aliases must name agreed columns; not agreed: {', '.join(unknown)}")
    if any(not alias for alias in table):
        raise UsageError("an alias cannot be empty")
    if max_records is not None and max_records < 0:
        raise UsageError("the maximum number of records cannot be negative")
    resolved = Terms(partner, (), table)
    return Terms(partner, tuple(sorted({resolved.element(n) for n in names})), table,
                 max_records, allow_opaque, change_id)


def parse_aliases(values: Iterable[str]) -> dict[str, str]:
    """``ALIAS=COLUMN`` options as a table."""
    table: dict[str, str] = {}
    for value in values:
        alias, sep, target = value.partition("=")
        if not sep or not alias.strip() or not target.strip():
            raise UsageError(f"alias {value!r}: expected ALIAS=COLUMN")
        table[alias] = target
    return table


def render(terms: Terms) -> str:
    """The terms as the gateway publishes them to staff."""
    lines = [MAGIC, PARTNER_PREFIX + terms.partner, "columns " + ",".join(terms.columns)]
    lines += [f"alias {alias}={target}" for alias, target in sorted(terms.aliases.items())]
    lines.append("max-records " + (str(terms.max_records) if terms.max_records is not None
                                   else "none"))
    lines.append("allow-opaque " + ("yes" if terms.allow_opaque else "no"))
    if terms.change_id is not None:
        lines.append(f"change {terms.change_id}")
    return "\n".join(lines) + "\n"


def parse(text: str) -> Terms:
    """Parse published terms; raise :class:`UsageError` naming the fault."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TERMS_BYTES:
        raise UsageError("agreement: larger than 1 MiB")
    lines = text.rstrip("\n").split("\n")
    if len(lines) < 2 or lines[0] != MAGIC or not lines[1].startswith(PARTNER_PREFIX):
        raise UsageError("agreement: not a blindpost agreement v1")
    fields: dict[str, str] = {}
    aliases: dict[str, str] = {}
    for number, line in enumerate(lines[2:], start=3):
        name, _, value = line.partition(" ")
        if name == "alias":
            alias, _, target = value.partition("=")
            aliases[alias] = target
        elif name in ("columns", "max-records", "allow-opaque", "change"):
            fields[name] = value
        else:
            raise UsageError(f"agreement line {number}: unknown field {name[:40]!r}")
    try:
        limit = fields.get("max-records", "none")
        change = fields.get("change")
        return Terms(lines[1][len(PARTNER_PREFIX):],
                     tuple(filter(None, fields.get("columns", "").split(","))), aliases,
                     None if limit == "none" else int(limit),
                     fields.get("allow-opaque") == "yes",
                     int(change) if change is not None else None)
    except ValueError:
        raise UsageError("agreement: malformed number") from None


def looser(pinned: Terms, current: Terms) -> list[str]:
    """What ``current`` allows that ``pinned`` did not (empty: as strict or stricter)."""
    wider: list[str] = []
    added = sorted(set(current.columns) - set(pinned.columns))
    if added:
        wider.append("columns " + ", ".join(added))
    changed = sorted(alias for alias, target in current.aliases.items()
                     if pinned.aliases.get(alias) != target)
    if changed:
        wider.append("aliases " + ", ".join(changed))
    if pinned.max_records is not None and (current.max_records is None
                                           or current.max_records > pinned.max_records):
        wider.append(f"max records {current.max_records or 'unlimited'} "
                     f"(was {pinned.max_records})")
    if current.allow_opaque and not pinned.allow_opaque:
        wider.append("files of unknown structure")
    return wider
