"""An exposure report as text for a privacy officer, and as JSON or CSV for tooling.

Each renderer yields the document in pieces (lines, or one JSON value at a time), so a
report of a hundred thousand files is written out without being held twice in memory:
``out.writelines(render_text(report))``, or ``"".join(...)`` for a string. Times are
ISO 8601 in UTC with their offset. An unverified report says so at the top of every
text page and in every JSON and CSV document.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from gateway.exposure.model import (
    BY_GATEWAY,
    BY_UPLOADER,
    AccountExposure,
    ExposureReport,
    FileExposure,
    KeyExposure,
    RecipientExposure,
)
from gateway.values import jsonable

PAGE_LINES = 60
SENTENCE_WIDTH = 92
NOT_RECORDED = "not recorded in the log"
# A pre-encrypted upload's recipients are what its client (`blindpost send`) declared: the
# gateway checked them against the partner's approved keys, but age hides whom a file is
# encrypted to, so it cannot check the file itself.
DECLARED = "to the keys its client declared (the server cannot check the file against them)"
JSON_FORMAT = "blindpost-exposure-report/1"


def iso(moment: datetime | None) -> str:
    """A time as the report writes it: ISO 8601, UTC, with its offset."""
    return "-" if moment is None else moment.astimezone(UTC).isoformat()


def _count(number: int | None, unit: str = "") -> str:
    text = "?" if number is None else f"{number:,}"
    return f"{text} {unit}".rstrip()


# -- text ---------------------------------------------------------------------------

def render_text(report: ExposureReport) -> Iterator[str]:
    """The report for a person to read, in pages of :data:`PAGE_LINES` lines."""
    warning = report.warning
    for number, line in enumerate(_text_lines(report)):
        if warning is not None and number % (PAGE_LINES - 1) == 0:
            yield warning + "\n"
        yield line + "\n"


def _text_lines(report: ExposureReport) -> Iterator[str]:
    yield from _heading(report)
    yield from _summary_table(report)
    yield ""
    yield f"FILES ON THE SERVER IN THE WINDOW ({len(report.files)})"
    for item in report.files:
        yield ""
        yield from _file_lines(item)
    yield ""
    yield from _account_lines(report.accounts)
    yield ""
    yield from _key_lines(report.keys)
    yield ""
    yield from _store_lines(report)
    yield ""
    yield "END OF REPORT"


def _heading(report: ExposureReport) -> Iterator[str]:
    yield "BLINDPOST EXPOSURE REPORT"
    yield f"window       {iso(report.window_start)} to {iso(report.window_end)} (both included)"
    yield f"partner      {report.partner or 'all partners'}"
    yield f"generated    {iso(report.generated_at)} by {report.generated_by}"
    yield from _verification_lines(report)
    yield f"plaintext at rest: {report.plaintext_at_rest}"
    # Exactly what was checked: a header now; a pre-encrypted payload only statistically.
    yield ("             (checked now: every stored object has a well-formed age header, see "
           "STORE")
    yield ("             CHECK; the gateway encrypted what it was sent in plaintext; a "
           "pre-encrypted")
    yield ("             file's payload was screened as it arrived, by a statistical test, "
           "not by")
    yield "             decryption: docs/security.md says what that proves)"
    yield ""


def _verification_lines(report: ExposureReport) -> Iterator[str]:
    check = report.verification
    if not check.verified:
        yield "audit log    FAILED verification:"
        yield from (f"             {problem.strip()}" for problem in check.problems)
        return
    if check.checkpoint is None:
        yield (f"audit log    verified: {_count(check.entries, 'entries')}, against no signed "
               "checkpoint (the log has none yet)")
    else:
        yield (f"audit log    verified: {_count(check.entries, 'entries')}, against "
               f"{check.checkpoint}")
        yield f"             checkpoint root {check.checkpoint_root}"
        yield ("             entries after it, checked by their MACs, not yet signed: "
               f"{_count(check.beyond_checkpoint)}")
    yield f"             outside checkpoints verified: {check.outside_checkpoints}"


def _summary_table(report: ExposureReport) -> Iterator[str]:
    headers = ["partner", "files", "bytes", "downloads", "incomplete", "removed", "waiting"]
    counts = [[s.files, s.bytes, s.downloads, s.incomplete_downloads, s.removed, s.waiting]
              for s in report.summary]
    totals = [sum(column) for column in zip(*counts, strict=True)] if counts else [0] * 6
    rows: list[list[object]] = [[s.partner, *row]
                                for s, row in zip(report.summary, counts, strict=True)]
    yield "SUMMARY"
    yield from _table(headers, [*rows, ["total", *totals]])
    yield from _data_sentences(report)


def _data_sentences(report: ExposureReport) -> Iterator[str]:
    """Per partner, what the files held, in the words a notice to the affected can use."""
    between = f"between {iso(report.window_start)} and {iso(report.window_end)}"
    yield ""
    yield "DATA ELEMENTS (record counts are upper bounds: see docs/agreements.md)"
    for item in report.summary:
        if not item.files:
            continue
        read = item.files - item.unknown_structure - item.not_recorded
        parts = []
        if read:
            elements = ", ".join(item.data_elements) or "no named columns"
            parts.append(f"{_count(item.records)} records with {elements} were on the server "
                         f"encrypted to {item.partner} {between}")
        else:
            parts.append(f"no file of {item.partner} {between} had a readable structure")
        if item.unknown_structure:
            parts.append(f"{_plural(item.unknown_structure, 'file')} of unknown structure")
        if item.not_recorded:
            parts.append(f"{_plural(item.not_recorded, 'file')} whose data elements were "
                         "not recorded (uploaded before they were)")
        yield from textwrap.wrap("; ".join(parts), width=SENTENCE_WIDTH,
                                 subsequent_indent="  ")


def _plural(number: int, noun: str) -> str:
    return f"{_count(number)} {noun}{'' if number == 1 else 's'}"


def _table(headers: list[str], rows: list[list[object]]) -> Iterator[str]:
    """An aligned table: numbers to the right, text to the left."""
    numeric = [bool(rows) and all(isinstance(row[i], int) for row in rows)
               for i in range(len(headers))]
    cells = [[f"{c:,}" if isinstance(c, int) else str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        return "  ".join(value.rjust(width) if right else value.ljust(width)
                         for value, width, right in zip(values, widths, numeric, strict=True)
                         ).rstrip()

    yield line(headers)
    yield from (line(row) for row in cells)


def _file_lines(item: FileExposure) -> Iterator[str]:
    missing = set(item.unrecorded)
    yield f"{item.partner} / {item.name}"
    yield f"  file         {item.id}"
    size = NOT_RECORDED if item.size is None else _count(item.size, "bytes")
    yield f"  size         {size}"
    yield f"  sha256       {item.sha256 or NOT_RECORDED}"
    if "uploaded_at" in missing:
        yield f"  uploaded     {NOT_RECORDED}"
    else:
        yield f"  uploaded     {iso(item.uploaded_at)} by {item.uploader}"
    yield from _encryption_lines(item)
    yield f"  data         {_data_line(item)}"
    yield f"  expires      {NOT_RECORDED if item.expires_at is None else iso(item.expires_at)}"
    yield from _download_lines(item)
    if item.removed_at is None:
        yield "  removed      no: still stored when the log ends"
    else:
        yield f"  removed      {iso(item.removed_at)}, {item.removal}, by {item.removed_by}"


def _data_line(item: FileExposure) -> str:
    """What the file held: format, records and data elements, or why that is unknown."""
    if item.data_format is None:
        return "not recorded"
    who = {"gateway": "read by the gateway", "sender": "as declared by the sender"}.get(
        item.data_read_by or "", "not read")
    if item.data_elements is None:
        return f"unknown structure ({item.data_format}, {who})"
    return (f"{_count(item.records)} records, {item.data_format}: "
            f"{', '.join(item.data_elements) or 'no columns'} ({who})")


def _encryption_lines(item: FileExposure) -> Iterator[str]:
    if item.encrypted_by == BY_UPLOADER and item.recipients is None:
        yield "  encrypted    by the uploader; its recipients are not known to the server"
        return
    if item.encrypted_by == BY_UPLOADER:
        yield f"  encrypted    by the uploader, {DECLARED}"
    elif item.encrypted_by == BY_GATEWAY:
        yield "  encrypted    by the gateway, on arrival"
    else:
        yield f"  encrypted    {NOT_RECORDED}"
    if item.recipients is None:
        yield f"  recipients   {NOT_RECORDED}"
        return
    for recipient in item.recipients:
        yield f"  recipient    {_recipient(recipient)}"


def _recipient(recipient: RecipientExposure) -> str:
    key = f"key {recipient.key_id}" if recipient.key_id is not None else "key ?"
    if recipient.kind is None:
        return f"{key}: type and fingerprint {NOT_RECORDED}"
    family = "post-quantum" if recipient.post_quantum else "classical"
    return f"{key}, {recipient.kind} ({family}), {recipient.fingerprint}"


def _download_lines(item: FileExposure) -> Iterator[str]:
    if not item.downloads:
        yield "  downloads    none"
        return
    for number, download in enumerate(item.downloads):
        label = "  downloads    " if number == 0 else "               "
        state = "complete" if download.complete else "incomplete"
        yield (f"{label}{iso(download.at)} {download.account} {state} "
               f"({_count(download.bytes, 'bytes')})")


def _account_lines(accounts: tuple[AccountExposure, ...]) -> Iterator[str]:
    yield f"ACCOUNTS THAT COULD SIGN IN ({len(accounts)})"
    if not accounts:
        return
    headers = ["account", "role", "partner", "created", "disabled", "sign-ins"]
    rows: list[list[object]] = [[a.username, a.role or "?", a.partner or "-",
                                 iso(a.created_at) if a.created_at else NOT_RECORDED,
                                 iso(a.disabled_at), a.sign_ins] for a in accounts]
    yield from _table(headers, rows)


def _key_lines(keys: tuple[KeyExposure, ...]) -> Iterator[str]:
    yield f"RECIPIENT KEYS APPROVED IN THE WINDOW ({len(keys)})"
    for key in keys:
        family = "post-quantum" if key.post_quantum else "classical"
        kind = NOT_RECORDED if key.kind is None else f"{key.kind} ({family})"
        revoked = f"revoked {iso(key.revoked_at)}" if key.revoked_at else "not revoked"
        yield f"  key {key.id}  {key.partner}  {kind}  {key.fingerprint or NOT_RECORDED}"
        yield (f"    approved {iso(key.approved_at)} by {key.approved_by}, proposed by "
               f"{key.proposed_by or NOT_RECORDED}; {revoked}")


def _store_lines(report: ExposureReport) -> Iterator[str]:
    store = report.store
    yield "STORE CHECK"
    if not store.problems:
        yield (f"{_count(store.objects, 'objects')} in the store, checked now: every one has "
               "a well-formed age header")
        return
    yield (f"{_count(store.objects, 'objects')} in the store, checked now; "
           f"ERRORS ({len(store.problems)}):")
    for problem in store.problems:
        owner = (f"{problem.partner} / {problem.name} (file {problem.file_id})"
                 if problem.file_id else "no file in the log")
        yield f"  ERROR object {problem.object_id}, {owner}: {problem.problem}"


# -- JSON ---------------------------------------------------------------------------

def render_json(report: ExposureReport) -> Iterator[str]:
    """One JSON document (one file per line in ``files``); ``null`` marks a value the log
    does not record (each file lists those in ``unrecorded``) or one that does not apply."""
    head: dict[str, object] = {"format": JSON_FORMAT}
    if report.warning is not None:
        head["warning"] = report.warning
    head.update({
        "window": {"from": iso(report.window_start), "to": iso(report.window_end)},
        "partner": report.partner, "generated_at": iso(report.generated_at),
        "generated_by": report.generated_by, "verification": jsonable(report.verification),
        "plaintext_at_rest": report.plaintext_at_rest,
        "summary": jsonable(report.summary)})
    yield "{\n"
    for key, value in head.items():
        yield f"{json.dumps(key)}: {json.dumps(value)},\n"
    yield from _json_array("files", report.files, _FileDocuments())
    yield ",\n"
    yield from _json_array("accounts", report.accounts)
    yield ",\n"
    yield from _json_array("keys", report.keys)
    yield ",\n"
    yield f'"store": {json.dumps(jsonable(report.store))}\n}}\n'


def _json_array(name: str, items: Iterable[Any],
                document: Callable[[Any], object] = jsonable) -> Iterator[str]:
    yield f'"{name}": ['
    separator = "\n"
    encode = json.JSONEncoder().encode  # What json.dumps() uses, made once.
    for item in items:
        yield separator + encode(document(item))
        separator = ",\n"
    yield "\n]" if separator != "\n" else "]"


class _FileDocuments:
    """:func:`jsonable` of a :class:`FileExposure`, written out field by field: a report
    of a year holds a hundred thousand files and half a million downloads, and the
    generic walk over dataclass fields cost more than the rest of the JSON output.
    The recipient lists files share (see :class:`~gateway.exposure.scan.HistoryScan`)
    are converted once."""

    def __init__(self) -> None:
        self._recipients: dict[tuple[RecipientExposure, ...], list[dict[str, object]]] = {}

    def __call__(self, item: FileExposure) -> dict[str, object]:
        recipients = item.recipients
        listed = None
        if recipients is not None:
            listed = self._recipients.get(recipients)
            if listed is None:
                listed = self._recipients[recipients] = [
                    {"key_id": r.key_id, "kind": r.kind, "fingerprint": r.fingerprint,
                     "post_quantum": r.post_quantum} for r in recipients]
        elements = item.data_elements
        return {
            "id": item.id, "partner": item.partner, "name": item.name, "size": item.size,
            "sha256": item.sha256, "uploader": item.uploader,
            "uploaded_at": _isoformat(item.uploaded_at), "encrypted_by": item.encrypted_by,
            "recipients": listed, "expires_at": _isoformat(item.expires_at),
            "removed_at": _isoformat(item.removed_at), "removal": item.removal,
            "removed_by": item.removed_by,
            "downloads": [{"account": d.account, "at": d.at.isoformat(),
                           "complete": d.complete, "bytes": d.bytes} for d in item.downloads],
            "unrecorded": list(item.unrecorded), "data_format": item.data_format,
            "data_elements": None if elements is None else list(elements),
            "records": item.records, "data_read_by": item.data_read_by}


def _isoformat(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


# -- CSV ----------------------------------------------------------------------------

CSV_COLUMNS = (
    "record", "partner", "file_id", "name", "size", "sha256", "uploader", "uploaded_at",
    "encrypted_by", "expires_at", "removed_at", "removal", "removed_by", "account", "at",
    "complete", "bytes", "key_id", "kind", "fingerprint", "post_quantum", "role",
    "created_at", "disabled_at", "sign_ins", "proposed_by", "approved_by", "approved_at",
    "revoked_at", "files", "downloads", "incomplete_downloads", "removed", "waiting",
    "object_id", "detail", "data_format", "data_elements", "records", "data_read_by",
    "unknown_structure", "not_recorded")
NOT_RECORDED_CSV = "not recorded"


def render_csv(report: ExposureReport) -> Iterator[str]:
    """One CSV document; the ``record`` column says what each row is (``warning``,
    ``report``, ``summary``, ``file``, ``recipient``, ``download``, ``account``, ``key``,
    ``store``, ``store_error``). Empty cells do not apply; ``not recorded`` cells are
    what the log does not record."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")

    def emit(row: dict[str, object]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow({key: _csv_cell(value) for key, value in row.items()})
        return buffer.getvalue()

    writer.writeheader()
    yield buffer.getvalue()
    for row in _csv_rows(report):
        yield emit(row)


def _csv_cell(value: object) -> object:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


def _csv_rows(report: ExposureReport) -> Iterator[dict[str, object]]:
    if report.warning is not None:
        yield {"record": "warning", "detail": report.warning}
    check = report.verification
    yield {"record": "report", "detail": (
        f"window {iso(report.window_start)} to {iso(report.window_end)}; partner "
        f"{report.partner or 'all'}; generated {iso(report.generated_at)} by "
        f"{report.generated_by}; audit log "
        + (f"verified: {check.entries} entries against {check.checkpoint or 'no checkpoint'}"
           f"; {check.outside_checkpoints} outside checkpoints" if check.verified else
           "FAILED verification: " + " / ".join(p.strip() for p in check.problems))
        + f"; plaintext at rest: {report.plaintext_at_rest}")}
    for summary in report.summary:
        yield {"record": "summary", "partner": summary.partner, "files": summary.files,
               "bytes": summary.bytes, "downloads": summary.downloads,
               "incomplete_downloads": summary.incomplete_downloads,
               "removed": summary.removed, "waiting": summary.waiting,
               "records": summary.records, "data_elements": " ".join(summary.data_elements),
               "unknown_structure": summary.unknown_structure,
               "not_recorded": summary.not_recorded}
    for item in report.files:
        yield from _csv_file(item)
    for account in report.accounts:
        yield {"record": "account", "partner": account.partner, "account": account.username,
               "role": account.role, "created_at": account.created_at,
               "disabled_at": account.disabled_at, "sign_ins": account.sign_ins}
    for key in report.keys:
        yield {"record": "key", "partner": key.partner, "key_id": key.id, "kind": key.kind,
               "fingerprint": key.fingerprint, "post_quantum": key.post_quantum,
               "proposed_by": key.proposed_by, "approved_by": key.approved_by,
               "approved_at": key.approved_at, "revoked_at": key.revoked_at}
    yield {"record": "store", "detail": f"{report.store.objects} objects in the store checked"
           f" now; {len(report.store.problems)} not age ciphertext"}
    for problem in report.store.problems:
        yield {"record": "store_error", "partner": problem.partner, "file_id": problem.file_id,
               "name": problem.name, "object_id": problem.object_id, "detail": problem.problem}


def _csv_file(item: FileExposure) -> Iterator[dict[str, object]]:
    base: dict[str, object] = {"partner": item.partner, "file_id": item.id, "name": item.name}
    row: dict[str, object] = {
        **base, "record": "file", "size": item.size, "sha256": item.sha256,
        "uploader": item.uploader, "uploaded_at": item.uploaded_at,
        "encrypted_by": item.encrypted_by, "expires_at": item.expires_at,
        "removed_at": item.removed_at, "removal": item.removal, "removed_by": item.removed_by,
        "data_format": item.data_format or NOT_RECORDED_CSV,
        "data_elements": " ".join(item.data_elements) if item.data_elements is not None
        else "", "records": item.records, "data_read_by": item.data_read_by}
    for name in item.unrecorded:
        if name in row:
            row[name] = NOT_RECORDED_CSV
    if "recipients" in item.unrecorded:
        row["detail"] = "recipients not recorded"
    elif item.encrypted_by == BY_UPLOADER and item.recipients is not None:
        row["detail"] = DECLARED
    yield row
    for recipient in item.recipients or ():
        yield {**base, "record": "recipient", "key_id": recipient.key_id,
               "kind": recipient.kind or NOT_RECORDED_CSV,
               "fingerprint": recipient.fingerprint or NOT_RECORDED_CSV,
               "post_quantum": recipient.post_quantum}
    for download in item.downloads:
        yield {**base, "record": "download", "account": download.account, "at": download.at,
               "complete": download.complete, "bytes": download.bytes}
