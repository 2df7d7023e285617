"""``blindpost exposure``, ``blindpost files`` and the ``audit log`` filters, as run."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

from gateway.app import App
from gateway.cli.program import main
from gateway.config import load_settings
from gateway.datadir import initialise
from gateway.db.models import Role
from tests.unit.gateway.factories import account, actor, partner_with_key

# A window of three days around now: a test that runs across midnight still covers it.
FROM = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
TO = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """uni with a file withdrawn and one waiting; lab with one waiting."""
    for name in [n for n in os.environ if n.startswith("BLINDPOST_")]:
        monkeypatch.delenv(name)
    data_dir = tmp_path / "var"
    initialise(data_dir, admin="root-admin", environ={})
    app = App(load_settings(data_dir=data_dir, environ={}))
    partner_with_key(app, "uni")
    partner_with_key(app, "lab")
    account(app, "clerk", Role.STAFF)
    account(app, "lee", Role.PARTNER, partner="uni")
    for partner, name in (("uni", "gone.csv"), ("uni", "kept.csv"), ("lab", "lab.csv")):
        upload = app.transfers.begin_upload(actor(app, "clerk"), partner=partner, name=name)
        upload.write(b"rows")
        upload.commit()
    app.transfers.withdraw(actor(app, "lee"), "gone.csv.age")
    app.close()
    return data_dir


def run(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--data-dir", str(data_dir), *args],
                              catch_exceptions=False)


def test_text_report_of_today(installed: Path) -> None:
    result = run(installed, "exposure", "--from", FROM, "--to", TO)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("BLINDPOST EXPOSURE REPORT\n")
    assert "plaintext at rest: none\n" in result.stdout
    assert "FILES ON THE SERVER IN THE WINDOW (3)" in result.stdout
    assert "removed      " in result.stdout and ", withdrawn, by lee" in result.stdout


def test_json_and_csv_to_a_private_file(installed: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = run(installed, "exposure", "--from", f"{FROM}T00:00:00Z", "--to", TO,
                 "--partner", "uni", "--format", "json", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "wrote the report (2 files)" in result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    document = json.loads(out.read_text())
    assert [f["name"] for f in document["files"]] == ["gone.csv.age", "kept.csv.age"]
    again = run(installed, "exposure", "--from", FROM, "--to", TO, "-o", str(out))
    assert again.exit_code == 1 and "cannot create the report" in again.stderr
    rows = run(installed, "exposure", "--from", FROM, "--to", TO, "--format", "csv")
    assert rows.stdout.splitlines()[0].startswith("record,partner,file_id,name,size,sha256")


def test_a_window_without_files(installed: Path) -> None:
    result = run(installed, "exposure", "--from", "2001-01-01", "--to", "2001-01-02")
    assert result.exit_code == 0
    assert "FILES ON THE SERVER IN THE WINDOW (0)" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--from", "2026-11-02", "--to", "2026-11-01"], "the window ends"),
    (["--from", "last week", "--to", "2026-11-01"], "--from: expected an ISO 8601 time"),
    (["--from", "2026-11-01T10:00", "--to", "2026-11-02"], "has no offset"),
    (["--from", "2026-11-01", "--to", "2026-11-02", "--partner", "nobody"],
     "unknown partner 'nobody'"),
])
def test_bad_input_is_one_line_and_exit_2(installed: Path, args: list[str],
                                          message: str) -> None:
    result = run(installed, "exposure", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def _tamper(data_dir: Path) -> None:
    app = App(load_settings(data_dir=data_dir, environ={}))
    with app.engine.begin() as connection:
        connection.execute(text("DROP TRIGGER audit_entries_no_update"))
        connection.execute(text("UPDATE audit_entries SET leaf = replace(leaf, :old, :new)"),
                           {"old": "gone.csv.age", "new": "fine.csv.age"})
    app.close()


def test_a_tampered_log_gives_no_report(installed: Path) -> None:
    _tamper(installed)
    refused = run(installed, "exposure", "--from", FROM, "--to", TO)
    assert refused.exit_code == 1
    assert refused.stdout == ""
    assert refused.stderr.startswith("blindpost: error: audit log verification FAILED")
    anyway = run(installed, "exposure", "--from", FROM, "--to", TO, "--unverified")
    assert anyway.exit_code == 0
    assert anyway.stderr.startswith("WARNING: UNVERIFIED.")
    assert anyway.stdout.startswith("WARNING: UNVERIFIED.")
    assert "fine.csv.age" in anyway.stdout


def test_files_lists_what_waits(installed: Path) -> None:
    waiting = run(installed, "files")
    assert waiting.exit_code == 0, waiting.output
    lines = waiting.stdout.splitlines()
    assert lines[0].split() == ["PARTNER", "NAME", "SIZE", "UPLOADER", "UPLOADED", "EXPIRES",
                                "DOWNLOADS", "STATE", "ID"]
    assert [line.split()[:2] for line in lines[1:]] == [["lab", "lab.csv.age"],
                                                        ["uni", "kept.csv.age"]]
    every = json.loads(run(installed, "files", "--partner", "uni", "--state", "all",
                           "--json").stdout)
    assert [(f["name"], f["state"], f["uploaded_by"]) for f in every] == [
        ("kept.csv.age", "available", "clerk"), ("gone.csv.age", "withdrawn", "clerk")]
    newest = run(installed, "files", "--state", "all", "--limit", "1").stdout.splitlines()
    assert len(newest) == 2 and newest[1].split()[:2] == ["lab", "lab.csv.age"]
    bad = run(installed, "files", "--state", "lost")
    assert bad.exit_code == 2
    unknown = run(installed, "files", "--partner", "nobody")
    assert unknown.exit_code == 2 and "unknown partner 'nobody'" in unknown.stderr


def _log(data_dir: Path, *args: str) -> list[dict[str, object]]:
    result = run(data_dir, "audit", "log", "--json", *args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_audit_log_filters(installed: Path) -> None:
    lab = _log(installed, "--partner", "lab")
    assert {e["tag"] for e in lab} == {"partner:create", "key:propose", "key:approve",
                                       "file:upload:complete"}
    lee = _log(installed, "--user", "lee")
    assert [e["tag"] for e in lee] == ["account:create", "account:key:add", "file:withdraw"]
    gone = _log(installed, "--file", "gone.csv.age")
    assert [e["tag"] for e in gone] == ["file:upload:complete", "file:withdraw"]
    by_id = _log(installed, "--file", str(gone[0]["subject"]).removeprefix("file:"))
    assert by_id == gone


def test_purging_revocations_from_the_command_line(installed: Path) -> None:
    kept = run(installed, "partner", "disable", "lab", "--keep-waiting", "--yes")
    assert kept.stdout.strip() == "disabled partner lab; its waiting files were kept until "\
                                  "they expire"
    purged = run(installed, "partner", "disable", "uni", "--yes")
    assert purged.stdout.strip() == "disabled partner uni; its waiting files were purged"
    states = json.loads(run(installed, "files", "--state", "all", "--json").stdout)
    assert sorted((f["name"], f["state"]) for f in states) == [
        ("gone.csv.age", "withdrawn"), ("kept.csv.age", "purged"), ("lab.csv.age", "available")]
    report = run(installed, "exposure", "--from", FROM, "--to", TO)
    assert "revoked: partner disabled, by local:" in report.stdout
