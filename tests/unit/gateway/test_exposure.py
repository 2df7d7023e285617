"""The breach-exposure report: a scripted history and its hand-written answer, in the
three formats; windows that cut a file's life; a tampered log; the store check."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from gateway import envelope
from gateway.audit import AuditTag, VerificationError
from gateway.audit.events import encode_leaf
from gateway.audit.models import AuditEntry
from gateway.db.models import Role
from gateway.errors import AuthorizationError, NotFoundError, UsageError
from gateway.exposure import (
    ExposureReport,
    Window,
    parse_moment,
    render_csv,
    render_json,
    render_text,
)
from gateway.exposure.model import FileExposure
from gateway.exposure.render import PAGE_LINES, _FileDocuments
from gateway.exposure.scan import (
    _ESCAPED,
    TAGS,
    HistoryScan,
    _number,
    _text,
    _usual_detail_text,
    _usual_integer,
    _usual_text,
)
from gateway.values import jsonable
from tests.unit.audit.audit_support import named
from tests.unit.gateway.exposure_history import (
    RECIPIENTS,
    WINDOW,
    History,
    file_id,
    history_app,
    play,
    records_of,
)
from tests.unit.gateway.factories import OPERATOR, actor, add_console_account

FP1, FP2, FP3 = (RECIPIENTS[n][1] for n in (1, 2, 3))


@pytest.fixture
def history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> History:
    scripted = play(history_app(tmp_path, monkeypatch))
    yield scripted
    scripted.app.close()


def _report(history: History, **options: object) -> ExposureReport:
    start, end = options.pop("window", WINDOW)
    return history.app.exposure.report(OPERATOR, start=start, end=end,  # type: ignore[arg-type]
                                       **options)  # type: ignore[arg-type]


def _facts(history: History, report: ExposureReport) -> dict[str, object]:
    """The values the expected answers cannot know in advance: hashes, the log's size,
    root and latest checkpoint (every change to a granting row signs one), who ran it."""
    check = report.verification
    return {"operator": OPERATOR.name, "entries": check.entries, "beyond": check.beyond_checkpoint,
            "root": check.checkpoint_root, "checkpoint": check.checkpoint,
            "checkpoint_size": check.checkpoint_size, **{
                "sha_" + name.replace(".csv", "").replace("-", "_").replace("#", "_"): sha
                for name, sha in history.sha256.items()}}


EXPECTED_TEXT = """\
BLINDPOST EXPOSURE REPORT
window       2026-11-02T10:00:00+00:00 to 2026-11-02T12:00:00+00:00 (both included)
partner      all partners
generated    2026-11-02T12:30:00+00:00 by {operator}
audit log    verified: {entries} entries, against {checkpoint}
             checkpoint root {root}
             entries after it, checked by their MACs, not yet signed: {beyond}
             outside checkpoints verified: 0
plaintext at rest: none
             (checked now: every stored object has a well-formed age header, see STORE
             CHECK; the gateway encrypted what it was sent in plaintext; a pre-encrypted
             file's payload was screened as it arrived, by a statistical test, not by
             decryption: docs/security.md says what that proves)

SUMMARY
partner  files  bytes  downloads  incomplete  removed  waiting
lab          1    700          0           0        1        0
uni          4  1,800          1           1        2        2
total        5  2,500          1           1        3        2

DATA ELEMENTS (record counts are upper bounds: see docs/agreements.md)
DATA_SENTENCES

FILES ON THE SERVER IN THE WINDOW (5)

lab / lab.csv.age
  file         00000000-0000-4000-8000-000000000006
  size         700 bytes
  sha256       {sha_lab}
  uploaded     2026-11-02T11:00:00+00:00 by clerk
  encrypted    by the gateway, on arrival
  recipient    key 2, x25519 (classical), FP2
  data         23 records, csv: birth_date, health_card_number, postal_code (read by the gateway)
  expires      2026-11-09T11:00:00+00:00
  downloads    none
  removed      2026-11-02T11:10:00+00:00, withdrawn, by clerk

uni / old.csv.age
  file         00000000-0000-4000-8000-000000000001
  size         300 bytes
  sha256       {sha_old}
  uploaded     2026-11-02T09:30:00+00:00 by clerk
  encrypted    by the gateway, on arrival
  recipient    key 1, x25519 (classical), FP1
  data         3 records, csv: birth_date, health_card_number, postal_code (read by the gateway)
  expires      2026-11-02T11:30:00+00:00
  downloads    none
  removed      2026-11-02T11:30:00+00:00, expired, by system:purger

uni / report.csv.age
  file         00000000-0000-4000-8000-000000000003
  size         400 bytes
  sha256       {sha_report_1}
  uploaded     2026-11-02T10:10:00+00:00 by clerk
  encrypted    by the gateway, on arrival
  recipient    key 1, x25519 (classical), FP1
  data         8 records, csv: birth_date, health_card_number, postal_code (read by the gateway)
  expires      2026-11-02T12:10:00+00:00
  downloads    2026-11-02T10:20:00+00:00 lee complete (400 bytes)
               2026-11-02T10:25:00+00:00 lee incomplete (10 bytes)
  removed      2026-11-02T10:30:00+00:00, superseded, by clerk

uni / report.csv.age
  file         00000000-0000-4000-8000-000000000004
  size         500 bytes
  sha256       {sha_report}
  uploaded     2026-11-02T10:30:00+00:00 by clerk
  encrypted    by the gateway, on arrival
  recipient    key 1, x25519 (classical), FP1
  data         13 records, csv: birth_date, health_card_number, postal_code (read by the gateway)
  expires      2026-11-02T12:30:00+00:00
  downloads    none
  removed      no: still stored when the log ends

uni / after-rotation.csv.age
  file         00000000-0000-4000-8000-000000000005
  size         600 bytes
  sha256       {sha_after_rotation}
  uploaded     2026-11-02T10:50:00+00:00 by clerk
  encrypted    by the gateway, on arrival
  recipient    key 3, x25519 (classical), FP3
  data         unknown structure (opaque, read by the gateway)
  expires      2026-11-02T12:50:00+00:00
  downloads    none
  removed      no: still stored when the log ends

ACCOUNTS THAT COULD SIGN IN (5)
account       role     partner  created                    disabled  sign-ins
bo            partner  lab      2026-11-02T09:00:00+00:00  -                0
clerk         staff    -        2026-11-02T09:00:00+00:00  -                0
lee           partner  uni      2026-11-02T09:00:00+00:00  -                1
root-admin    admin    -        2026-11-02T09:00:00+00:00  -                0
second-admin  admin    -        2026-11-02T09:00:00+00:00  -                0

RECIPIENT KEYS APPROVED IN THE WINDOW (1)
  key 3  uni  x25519 (classical)  FP3
    approved 2026-11-02T10:40:00+00:00 by second-admin, proposed by root-admin; not revoked

STORE CHECK
3 objects in the store, checked now: every one has a well-formed age header

END OF REPORT
"""


WINDOW_WORDS = "between 2026-11-02T10:00:00+00:00 and 2026-11-02T12:00:00+00:00"
DATA_SENTENCES = [
    "23 records with birth_date, health_card_number, postal_code were on the server "
    f"encrypted to lab {WINDOW_WORDS}",
    "24 records with birth_date, health_card_number, postal_code were on the server "
    f"encrypted to uni {WINDOW_WORDS}; 1 file of unknown structure"]


def _expected_text(history: History, report: ExposureReport) -> str:
    sentences = "\n".join(line for sentence in DATA_SENTENCES for line in textwrap.wrap(
        sentence, width=92, subsequent_indent="  "))
    return (EXPECTED_TEXT.replace("DATA_SENTENCES", sentences).replace("FP1", FP1)
            .replace("FP2", FP2).replace("FP3", FP3)
            .format(**_facts(history, report)))


def test_the_scripted_history_as_text(history: History) -> None:
    report = _report(history)
    assert "".join(render_text(report)) == _expected_text(history, report)
    _data_elements_match(history, report)


def _data_elements_match(history: History, report: ExposureReport) -> None:
    """Issue 24: the totals are the records of the files the history put on the server
    in the window, counted independently of the scan; older files say not recorded."""
    totals = {s.partner: (s.records, s.data_elements, s.unknown_structure, s.not_recorded)
              for s in report.summary}
    elements = ("birth_date", "health_card_number", "postal_code")
    assert totals == {"lab": (records_of(500), elements, 0, 0),
                      "uni": (records_of(100) + records_of(200) + records_of(300), elements,
                              1, 0)}
    # An upload event from before issue 24 records no data elements.
    with history.app.read() as session:
        leaves = list(session.scalars(select(AuditEntry.leaf)))
    assert any('"data_format":"csv"' in leaf for leaf in leaves)
    old = dataclasses.replace(report.files[0], data_format=None, data_elements=None,
                              records=None)
    assert "  data         not recorded" in "".join(render_text(
        dataclasses.replace(report, files=(old,))))
    csv_text = "".join(render_csv(report))
    assert "summary,uni," in csv_text
    assert ",birth_date health_card_number postal_code,24,,1,0\n" in csv_text


def _file(number: int, partner: str, name: str, size: int, sha: str, uploaded: str,
          key: int, expires: str, removed: tuple[str, str, str] | None,
          downloads: list[dict[str, object]] | None = None) -> dict[str, object]:
    return {"id": file_id(number), "partner": partner, "name": name, "size": size,
            "sha256": sha, "uploader": "clerk", "uploaded_at": uploaded,
            "encrypted_by": "gateway",
            "recipients": [{"key_id": key, "kind": "x25519", "fingerprint": RECIPIENTS[key][1],
                            "post_quantum": False}],
            "expires_at": expires, "removed_at": removed and removed[0],
            "removal": removed and removed[1], "removed_by": removed and removed[2],
            "downloads": downloads or [], "unrecorded": []}


def _account(name: str, role: str, partner: str | None, sign_ins: int = 0) -> dict[str, object]:
    return {"username": name, "role": role, "partner": partner,
            "created_at": "2026-11-02T09:00:00+00:00", "disabled_at": None,
            "sign_ins": sign_ins}


ELEMENTS = ["birth_date", "health_card_number", "postal_code"]
# What each file held (issue 24), by file number: (format, records) or opaque.
DATA = {6: ("csv", 23), 1: ("csv", 3), 3: ("csv", 8), 4: ("csv", 13), 5: ("opaque", None)}


def _with_data(document: dict[str, Any]) -> dict[str, Any]:
    """The expected JSON report with the data elements of the scripted files."""
    for item in document["files"]:
        form, records = DATA[int(item["id"][-1])]
        item.update(data_format=form, data_elements=ELEMENTS if records is not None else None,
                    records=records, data_read_by="gateway")
    for summary, (records, unknown) in zip(document["summary"], [(23, 0), (24, 1)],
                                           strict=True):
        summary.update(records=records, data_elements=ELEMENTS, unknown_structure=unknown,
                       not_recorded=0)
    return document


def _same_documents(report: ExposureReport) -> None:
    """The JSON output's files, written field by field, are what the generic conversion
    of each file gives, key order included."""
    assert report.files
    documents = _FileDocuments()
    for item in report.files:
        fast, generic = documents(item), jsonable(item)
        assert json.dumps(fast) == json.dumps(generic)
        assert list(fast) == [field.name for field in dataclasses.fields(FileExposure)]


def test_the_scripted_history_as_json(history: History) -> None:
    report = _report(history)
    _same_documents(report)
    facts = _facts(history, report)
    day = "2026-11-02T"
    assert json.loads("".join(render_json(report))) == _with_data({
        "format": "blindpost-exposure-report/1",
        "window": {"from": f"{day}10:00:00+00:00", "to": f"{day}12:00:00+00:00"},
        "partner": None, "generated_at": f"{day}12:30:00+00:00",
        "generated_by": OPERATOR.name,
        "verification": {"verified": True, "entries": facts["entries"],
                         "checkpoint": facts["checkpoint"],
                         "checkpoint_size": facts["checkpoint_size"],
                         "checkpoint_root": facts["root"], "outside_checkpoints": 0,
                         "beyond_checkpoint": facts["beyond"], "problems": []},
        "plaintext_at_rest": "none",
        "summary": [
            {"partner": "lab", "files": 1, "bytes": 700, "downloads": 0,
             "incomplete_downloads": 0, "removed": 1, "waiting": 0},
            {"partner": "uni", "files": 4, "bytes": 1800, "downloads": 1,
             "incomplete_downloads": 1, "removed": 2, "waiting": 2}],
        "files": [
            _file(6, "lab", "lab.csv.age", 700, facts["sha_lab"], f"{day}11:00:00+00:00", 2,
                  "2026-11-09T11:00:00+00:00", (f"{day}11:10:00+00:00", "withdrawn", "clerk")),
            _file(1, "uni", "old.csv.age", 300, facts["sha_old"], f"{day}09:30:00+00:00", 1,
                  f"{day}11:30:00+00:00", (f"{day}11:30:00+00:00", "expired",
                                           "system:purger")),
            _file(3, "uni", "report.csv.age", 400, facts["sha_report_1"],
                  f"{day}10:10:00+00:00", 1, f"{day}12:10:00+00:00",
                  (f"{day}10:30:00+00:00", "superseded", "clerk"),
                  [{"account": "lee", "at": f"{day}10:20:00+00:00", "complete": True,
                    "bytes": 400},
                   {"account": "lee", "at": f"{day}10:25:00+00:00", "complete": False,
                    "bytes": 10}]),
            _file(4, "uni", "report.csv.age", 500, facts["sha_report"],
                  f"{day}10:30:00+00:00", 1, f"{day}12:30:00+00:00", None),
            _file(5, "uni", "after-rotation.csv.age", 600, facts["sha_after_rotation"],
                  f"{day}10:50:00+00:00", 3, f"{day}12:50:00+00:00", None)],
        "accounts": [_account("bo", "partner", "lab"), _account("clerk", "staff", None),
                     _account("lee", "partner", "uni", 1), _account("root-admin", "admin", None),
                     _account("second-admin", "admin", None)],
        "keys": [{"id": 3, "partner": "uni", "kind": "x25519", "fingerprint": FP3,
                  "post_quantum": False, "proposed_by": "root-admin",
                  "approved_by": "second-admin", "approved_at": f"{day}10:40:00+00:00",
                  "revoked_at": None}],
        "store": {"objects": 3, "problems": []},
    })


EXPECTED_CSV = """\
record,partner,file_id,name,size,sha256,uploader,uploaded_at,encrypted_by,expires_at,\
removed_at,removal,removed_by,account,at,complete,bytes,key_id,kind,fingerprint,post_quantum,\
role,created_at,disabled_at,sign_ins,proposed_by,approved_by,approved_at,revoked_at,files,\
downloads,incomplete_downloads,removed,waiting,object_id,detail
report,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,window 2026-11-02T10:00:00+00:00 to \
2026-11-02T12:00:00+00:00; partner all; generated 2026-11-02T12:30:00+00:00 by {operator}; \
audit log verified: {entries} entries against {checkpoint}; 0 outside \
checkpoints; plaintext at rest: none
summary,lab,,,,,,,,,,,,,,,700,,,,,,,,,,,,,1,0,0,1,0,,
summary,uni,,,,,,,,,,,,,,,1800,,,,,,,,,,,,,4,1,1,2,2,,
file,lab,F6,lab.csv.age,700,{sha_lab},clerk,2026-11-02T11:00:00+00:00,gateway,\
2026-11-09T11:00:00+00:00,2026-11-02T11:10:00+00:00,withdrawn,clerk,,,,,,,,,,,,,,,,,,,,,,,
recipient,lab,F6,lab.csv.age,,,,,,,,,,,,,,2,x25519,FP2,false,,,,,,,,,,,,,,,
file,uni,F1,old.csv.age,300,{sha_old},clerk,2026-11-02T09:30:00+00:00,gateway,\
2026-11-02T11:30:00+00:00,2026-11-02T11:30:00+00:00,expired,system:purger,,,,,,,,,,,,,,,,,,,,,,,
recipient,uni,F1,old.csv.age,,,,,,,,,,,,,,1,x25519,FP1,false,,,,,,,,,,,,,,,
file,uni,F3,report.csv.age,400,{sha_report_1},clerk,2026-11-02T10:10:00+00:00,gateway,\
2026-11-02T12:10:00+00:00,2026-11-02T10:30:00+00:00,superseded,clerk,,,,,,,,,,,,,,,,,,,,,,,
recipient,uni,F3,report.csv.age,,,,,,,,,,,,,,1,x25519,FP1,false,,,,,,,,,,,,,,,
download,uni,F3,report.csv.age,,,,,,,,,,lee,2026-11-02T10:20:00+00:00,true,400,,,,,,,,,,,,,,,,,,,
download,uni,F3,report.csv.age,,,,,,,,,,lee,2026-11-02T10:25:00+00:00,false,10,,,,,,,,,,,,,,,,,,,
file,uni,F4,report.csv.age,500,{sha_report},clerk,2026-11-02T10:30:00+00:00,gateway,\
2026-11-02T12:30:00+00:00,,,,,,,,,,,,,,,,,,,,,,,,,,
recipient,uni,F4,report.csv.age,,,,,,,,,,,,,,1,x25519,FP1,false,,,,,,,,,,,,,,,
file,uni,F5,after-rotation.csv.age,600,{sha_after_rotation},clerk,2026-11-02T10:50:00+00:00,\
gateway,2026-11-02T12:50:00+00:00,,,,,,,,,,,,,,,,,,,,,,,,,,
recipient,uni,F5,after-rotation.csv.age,,,,,,,,,,,,,,3,x25519,FP3,false,,,,,,,,,,,,,,,
account,lab,,,,,,,,,,,,bo,,,,,,,,partner,2026-11-02T09:00:00+00:00,,0,,,,,,,,,,,
account,,,,,,,,,,,,,clerk,,,,,,,,staff,2026-11-02T09:00:00+00:00,,0,,,,,,,,,,,
account,uni,,,,,,,,,,,,lee,,,,,,,,partner,2026-11-02T09:00:00+00:00,,1,,,,,,,,,,,
account,,,,,,,,,,,,,root-admin,,,,,,,,admin,2026-11-02T09:00:00+00:00,,0,,,,,,,,,,,
account,,,,,,,,,,,,,second-admin,,,,,,,,admin,2026-11-02T09:00:00+00:00,,0,,,,,,,,,,,
key,uni,,,,,,,,,,,,,,,,3,x25519,FP3,false,,,,,root-admin,second-admin,\
2026-11-02T10:40:00+00:00,,,,,,,,
store,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,3 objects in the store checked now; 0 not age \
ciphertext
"""


def _csv_with_data(text: str) -> str:
    """The expected CSV with the data-element columns of issue 24 appended."""
    lines = text.splitlines()
    out = [lines[0] + ",data_format,data_elements,records,data_read_by,unknown_structure,"
                      "not_recorded"]
    elements = " ".join(ELEMENTS)
    for line in lines[1:]:
        cells = line.split(",")
        if cells[0] == "file":
            form, records = DATA[int(cells[2][1:])]
            out.append(line + (f",{form},{elements},{records},gateway,," if records is not None
                               else f",{form},,,gateway,,"))
        elif cells[0] == "summary":
            records, unknown = {"lab": (23, 0), "uni": (24, 1)}[cells[1]]
            out.append(line + f",,{elements},{records},,{unknown},0")
        else:
            out.append(line + ",,,,,,")
    return "\n".join(out) + "\n"


def test_the_scripted_history_as_csv(history: History) -> None:
    report = _report(history)
    expected = _csv_with_data(EXPECTED_CSV)
    for number in range(1, 7):
        expected = expected.replace(f"F{number},", file_id(number) + ",")
    for number, (_recipient, fingerprint) in RECIPIENTS.items():
        expected = expected.replace(f"FP{number},", fingerprint + ",")
    assert "".join(render_csv(report)) == expected.format(**_facts(history, report))
    rows = list(csv.DictReader(io.StringIO("".join(render_csv(report)))))
    assert [row["name"] for row in rows if row["record"] == "file"] == [
        "lab.csv.age", "old.csv.age", "report.csv.age", "report.csv.age",
        "after-rotation.csv.age"]


def _names(report: ExposureReport) -> list[str]:
    return [f"{item.partner}/{item.name}@{item.uploaded_at:%H:%M}" for item in report.files]


def _day(hour: int, minute: int, second: int = 0, micro: int = 0) -> datetime:
    return datetime(2026, 11, 2, hour, minute, second, micro, tzinfo=UTC)


@pytest.mark.parametrize(("start", "end", "names"), [
    # A window that ends at the very moment of an upload includes the file.
    (_day(9, 0), _day(9, 30), ["uni/old.csv.age@09:30"]),
    # One that starts at the moment of a removal does not: the file was gone by then...
    (_day(9, 50), _day(10, 0), ["uni/old.csv.age@09:30"]),
    # ...but a microsecond earlier it was still there.
    (_day(9, 49, 59, 999999), _day(9, 50), ["uni/old.csv.age@09:30",
                                             "uni/gone.csv.age@09:40"]),
    # Files still stored when the log ends, cut by the window's end.
    (_day(12, 10), _day(12, 20), ["uni/report.csv.age@10:30",
                                  "uni/after-rotation.csv.age@10:50"]),
    (_day(12, 30), _day(12, 30), ["uni/report.csv.age@10:30",
                                  "uni/after-rotation.csv.age@10:50", "uni/late.csv.age@12:30"]),
])
def test_windows_that_cut_a_files_life_include_it(history: History, start: datetime,
                                                  end: datetime, names: list[str]) -> None:
    assert _names(_report(history, window=(start, end))) == names


def test_the_whole_history_includes_everything(history: History) -> None:
    report = _report(history, window=(_day(0, 0), _day(23, 59)))
    assert len(report.files) == 7
    gone = next(item for item in report.files if item.name == "gone.csv.age")
    assert (gone.removal, gone.removed_by, len(gone.downloads)) == ("withdrawn", "lee", 1)
    assert [key.id for key in report.keys] == [1, 2, 3]
    assert report.keys[0].revoked_at == _day(10, 45)


def test_one_partner(history: History) -> None:
    report = _report(history, partner="lab")
    assert _names(report) == ["lab/lab.csv.age@11:00"]
    assert [a.username for a in report.accounts] == ["bo", "clerk"]
    assert report.keys == ()
    assert [s.partner for s in report.summary] == ["lab"]
    with pytest.raises(NotFoundError, match="unknown partner 'nobody'"):
        _report(history, partner="nobody")


def test_a_window_that_ends_before_it_starts(history: History) -> None:
    with pytest.raises(UsageError, match=r"the window ends .* before it starts"):
        _report(history, window=(WINDOW[1], WINDOW[0]))


@pytest.mark.parametrize(("text", "end_of_day", "moment"), [
    ("2026-11-02T10:00:00+01:00", False, _day(9, 0)),
    ("2026-11-02T10:00Z", False, _day(10, 0)),
    ("2026-11-02", False, _day(0, 0)),
    ("2026-11-02", True, _day(23, 59, 59, 999999)),
])
def test_times_in(text: str, end_of_day: bool, moment: datetime) -> None:
    assert parse_moment(text, option="--to", end_of_day=end_of_day) == moment


@pytest.mark.parametrize(("text", "message"), [
    ("2026-11-02T10:00", "has no offset"),
    ("yesterday", "expected an ISO 8601 time with an offset"),
    ("2026-13-01", "expected an ISO 8601 time"),
])
def test_bad_times_are_refused(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_moment(text, option="--from")


def _tamper(history: History) -> None:
    """Drop the append-only triggers and rewrite one upload's size, as an attacker would."""
    with history.app.engine.begin() as connection:
        for table in ("audit_entries", "audit_nodes", "audit_checkpoints"):
            for action in ("update", "delete"):
                connection.execute(text(f"DROP TRIGGER {table}_no_{action}"))
        connection.execute(text("UPDATE audit_entries SET leaf = replace(leaf, :old, :new) "
                                "WHERE tag = 'file:upload:complete'"),
                           {"old": '"size":700', "new": '"size":7'})


def test_a_tampered_log_gives_no_report(history: History) -> None:
    _tamper(history)
    with pytest.raises(VerificationError, match="audit log verification FAILED"):
        _report(history)


def test_an_unverified_report_says_so_on_every_page(history: History) -> None:
    _tamper(history)
    report = _report(history, unverified=True)
    assert report.verification.verified is False
    assert any("leaf hash differs" in problem for problem in report.verification.problems)
    assert next(f for f in report.files if f.name == "lab.csv.age").size == 7
    lines = "".join(render_text(report)).splitlines()
    assert len(lines) > PAGE_LINES  # Two pages at least.
    pages = [lines[start:start + PAGE_LINES] for start in range(0, len(lines), PAGE_LINES)]
    assert all(page[0].startswith("WARNING: UNVERIFIED.") for page in pages)
    assert "audit log    FAILED verification:" in lines
    assert json.loads("".join(render_json(report)))["warning"].startswith("WARNING: UNVERIFIED")
    assert "".join(render_csv(report)).splitlines()[1].startswith("warning,")


def test_outside_checkpoints_are_named(history: History) -> None:
    witnessed = history.app.audit_view.checkpoint(OPERATOR)
    report = _report(history, checkpoints=[("witness.txt", witnessed.note)])
    size = witnessed.checkpoint.size
    assert report.verification.checkpoint == f"outside checkpoint witness.txt (size {size})"
    assert (report.verification.outside_checkpoints, report.verification.checkpoint_size) == (
        1, size)
    forged = witnessed.note.replace(f"\n{size}\n", f"\n{size - 1}\n")
    with pytest.raises(VerificationError, match=r"outside checkpoint forged\.txt"):
        _report(history, checkpoints=[("forged.txt", forged)])


def test_a_stored_object_that_is_not_age_is_an_error(history: History) -> None:
    objects = history.app.settings.store_dir / "objects"
    stored = sorted(p for p in objects.rglob("*") if p.is_file())
    plaintext = stored[0]
    plaintext.write_bytes(b"name,date of birth\nalice,2001-01-01\n")
    report = _report(history)
    assert report.plaintext_at_rest == "NOT SHOWN: 1 stored object(s) are not age ciphertext"
    (problem,) = report.store.problems
    assert problem.object_id == plaintext.name
    assert problem.problem.startswith("not age ciphertext")
    # The store names objects at random: whichever was changed, the report names its file
    # (late.csv.age too, uploaded after the window).
    assert problem.file_id is not None
    assert problem.name in {"report.csv.age", "after-rotation.csv.age", "late.csv.age"}
    text_report = "".join(render_text(report))
    assert "plaintext at rest: NOT SHOWN" in text_report
    assert f"ERROR object {plaintext.name}" in text_report


def test_old_events_are_reported_as_they_are(history: History) -> None:
    """Events written before uploads named their keys, expiry and object: the key is
    found through the key events, the rest is said to be unrecorded, never guessed."""
    app = history.app
    history.at(11, 5)
    with app.transaction() as session:
        app.audit.record(session, tag=AuditTag.UPLOAD_COMPLETE, actor=named("clerk"),
                         subject="file:legacy", details={
                             "partner": "uni", "name": "legacy.csv.age", "size": 321,
                             "sha256": "ab" * 32, "encrypted_here": True,
                             "recipient_keys": [3]})
        app.audit.record(session, tag=AuditTag.DOWNLOAD_COMPLETE, actor=named("lee"),
                         subject="file:orphan", details={"partner": "uni",
                                                         "name": "orphan.csv.age"})
    report = _report(history)
    _same_documents(report)
    legacy = next(f for f in report.files if f.id == "legacy")
    assert legacy.recipients is not None
    assert [(r.key_id, r.kind, r.fingerprint) for r in legacy.recipients] == [
        (3, "x25519", FP3)]
    assert legacy.unrecorded == ("expires_at",)
    orphan = next(f for f in report.files if f.id == "orphan")
    assert orphan.unrecorded == ("uploaded_at", "uploader", "size", "sha256", "encrypted_by",
                                 "recipients", "expires_at")
    assert orphan.downloads[0].bytes is None
    text_report = "".join(render_text(report))
    assert "  expires      not recorded in the log" in text_report
    assert "  uploaded     not recorded in the log" in text_report
    assert "file,uni,orphan,orphan.csv.age,not recorded," in "".join(render_csv(report))


def test_a_large_window_costs_one_pass(history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report reads the log once, in the pass that verifies it."""
    calls = []
    original = history.app.audit_view.read_verified
    monkeypatch.setattr(history.app.audit_view, "read_verified",
                        lambda *a, **k: calls.append(a) or original(*a, **k))
    monkeypatch.setattr(history.app.audit_view, "events", None)
    monkeypatch.setattr(history.app.audit_view, "verify", None)
    _report(history, window=(_day(0, 0), _day(23, 0)))
    assert len(calls) == 1


def test_staff_and_partners_get_no_report(history: History) -> None:
    for name in ("clerk", "lee"):
        with pytest.raises(AuthorizationError):
            history.app.exposure.report(actor(history.app, name), start=WINDOW[0],
                                        end=WINDOW[1])
    auditor = add_console_account(history.app, "aud", Role.AUDITOR)
    assert auditor.account.role is Role.AUDITOR
    assert history.app.exposure.report(actor(history.app, "aud"), start=WINDOW[0],
                                       end=WINDOW[0] + timedelta(minutes=1)).files


def test_removals_from_the_console_say_so(history: History) -> None:
    app = history.app
    history.at(12, 40)
    late = next(f for f in app.transfers.files(OPERATOR) if f.name == "late.csv.age")
    app.transfers.purge_file(OPERATOR, file_id=late.id)
    report = _report(history, window=(_day(12, 30), _day(12, 45)))
    purged = next(f for f in report.files if f.id == late.id)
    assert (purged.removal, purged.removed_by) == ("purged by an administrator", OPERATOR.name)


def _send(history: History, name: str, *, declare: bool) -> str:
    """A pre-encrypted upload to uni's one approved key (3), as `blindpost send` makes it."""
    app = history.app
    upload = app.transfers.begin_upload(actor(app, "clerk"), partner="uni", name=name)
    if declare:
        upload.declare_recipients([FP3])
    upload.write(envelope.encrypt_bytes(b"rows" * 50,
                                        [envelope.parse_recipient(RECIPIENTS[3][0])]))
    return upload.commit().id


def test_pre_encrypted_files_name_the_keys_their_client_declared(history: History) -> None:
    """age hides whom a file is for: the report names the keys `blindpost send` declared,
    says so, and says the recipients are unknown when a client declared none."""
    history.at(11, 5)
    sent = _send(history, "sent.csv.age", declare=True)
    plain = _send(history, "plain.csv.age", declare=False)
    report = _report(history)
    _same_documents(report)
    by_id = {f.id: f for f in report.files}
    assert by_id[sent].encrypted_by == by_id[plain].encrypted_by == "uploader"
    assert [(r.key_id, r.kind, r.fingerprint, r.post_quantum)
            for r in by_id[sent].recipients or ()] == [(3, "x25519", FP3, False)]
    assert by_id[plain].recipients is None
    assert by_id[sent].unrecorded == by_id[plain].unrecorded == ()
    text_report = "".join(render_text(report))
    declared = text_report[text_report.index("uni / sent.csv.age"):]
    assert declared.splitlines()[5:7] == [
        "  encrypted    by the uploader, to the keys its client declared (the server "
        "cannot check the file against them)",
        f"  recipient    key 3, x25519 (classical), {FP3}"]
    undeclared = text_report[text_report.index("uni / plain.csv.age"):]
    assert undeclared.splitlines()[5:8] == [
        "  encrypted    by the uploader; its recipients are not known to the server",
        "  data         unknown structure (opaque, not read)",
        "  expires      2026-11-02T13:05:00+00:00"]
    rows = list(csv.DictReader(io.StringIO("".join(render_csv(report)))))
    [file_row] = [r for r in rows if r["record"] == "file" and r["file_id"] == sent]
    assert file_row["encrypted_by"] == "uploader"
    assert file_row["detail"].startswith("to the keys its client declared")
    assert [r["fingerprint"] for r in rows
            if r["record"] == "recipient" and r["file_id"] == sent] == [FP3]


def test_entries_left_undecoded_change_nothing(history: History) -> None:
    """The report skips decoding sign-ins outside the window and keeps downloads before
    it undecoded; for every window it says what decoding every event says."""
    entries: list[tuple[int, datetime, str, bytes]] = []
    history.app.audit_view.read_verified(
        OPERATOR, None, raw=lambda *entry: entries.append(entry))
    # As the report reads them: whole batches of usual rows, undecoded.
    batches = _Batches()
    history.app.audit_view.read_verified(OPERATOR, None, raw=batches)
    assert batches.usual, "no batch of usual rows was handed over"
    events = [event for event in history.app.audit_view.events(OPERATOR) if event.tag in TAGS]
    starts = [_day(9, 0) + timedelta(minutes=5 * step) for step in range(48)]
    for start, partner in [(start, partner) for start in starts for partner in (None, "uni")]:
        window = Window(start, start + timedelta(minutes=30))
        decoded, deferred, batched = (HistoryScan(window, partner=partner),
                                      HistoryScan(window, partner=partner),
                                      HistoryScan(window, partner=partner))
        for event in events:
            decoded.add(event)
        for entry in entries:
            deferred.add_entry(*entry)
        batches.replay(batched)
        for scan in (deferred, batched):
            assert scan.files() == decoded.files(), start
            assert (scan.accounts(), scan.keys(), scan.stored_objects(),
                    scan.events) == (decoded.accounts(), decoded.keys(),
                                     decoded.stored_objects(), decoded.events)
    # The windows cut downloads of files that stay, and of files removed before them.
    assert any(event.tag == AuditTag.DOWNLOAD_COMPLETE for event in events)


class _Batches:
    """Keeps what verification hands a reader of usual rows, to hand it again."""

    def __init__(self) -> None:
        self.items: list[tuple[bool, Any]] = []

    @property
    def usual(self) -> int:
        return sum(1 for usual, _ in self.items if usual)

    def __call__(self, index: int, time: datetime, tag: str, leaf: bytes) -> None:
        self.items.append((False, (index, time, tag, leaf)))

    def usual_rows(self, rows: Sequence[Any]) -> None:
        self.items.append((True, list(rows)))

    def replay(self, scan: HistoryScan) -> None:
        for usual, item in self.items:
            if usual:
                scan.usual_rows(item)
            else:
                scan(*item)


@pytest.mark.parametrize("details", [
    {}, {"bytes": 5}, {"bytes": -5}, {"bytes": 0}, {"bytes": 1.5}, {"bytes": 2 ** 53 - 1},
    {"bytes": 1e300},
    {"bytes": True}, {"bytes": None}, {"bytes": "7"}, {"bytes": [1, 2]},
    {"a": "x,\"bytes\":9", "bytes": 3}, {"bytes": 4, "note": "{\"bytes\":8}"},
    {"abytes": 2}, {"bytesx": 2}, {"bytes": ""}, {"bytes": "a\"b"}, {"bytes": "é"}])
def test_a_usual_leaf_is_read_as_decoding_reads_it(details: dict[str, object]) -> None:
    """Fields read from a usual leaf's text are those decoding finds."""
    leaf = encode_leaf(index=7, time=_day(9, 0), tag=AuditTag.DOWNLOAD_COMPLETE,
                       actor="lee", subject="file:f-1", details=details).decode()
    document = json.loads(leaf)
    assert _usual_integer(leaf, "bytes") == _number(document["details"], "bytes")
    text = _usual_detail_text(leaf, "bytes")
    if text is _ESCAPED:
        assert "\\" in leaf
    else:
        assert text == _text(document["details"], "bytes")
    assert _usual_text(leaf, 10) == document["actor"] == "lee"
    escaped = encode_leaf(index=7, time=_day(9, 0), tag=AuditTag.DOWNLOAD_COMPLETE,
                          actor='le"e', subject="file:f-1", details=details).decode()
    assert _usual_text(escaped, 10) is None  # Decoded in full instead.
