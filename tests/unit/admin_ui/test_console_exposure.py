"""The exposure report in the console and the API: the same service, its formats, its
refusals, a log that fails verification, and the run recorded in the log."""

from __future__ import annotations

import csv
import html
import io
import json
import re

import pytest
from sqlalchemy import text

from admin_ui import pages
from gateway.app import App
from gateway.db.models import Role
from tests.conftest import FakeClock
from tests.unit.admin_ui.console_support import Person, browser
from tests.unit.gateway.factories import OPERATOR, account, actor, audit_events, partner_with_key

DAY = {"from": "2026-11-02", "to": "2026-11-02"}


@pytest.fixture
def uploaded(app: App, clock: FakeClock) -> str:
    partner_with_key(app, "uni")
    account(app, "clerk", Role.STAFF)
    upload = app.transfers.begin_upload(actor(app, "clerk"), partner="uni", name="extract.csv")
    upload.write(b"rows")
    clock.advance(minutes=1)
    return upload.commit().id


def test_the_form_alone_runs_nothing(audrey: Person, app: App) -> None:
    page = audrey.client.get("/exposure")
    assert page.status_code == 200
    assert "Run report" in page.text and "BLINDPOST EXPOSURE REPORT" not in page.text
    assert audit_events(app, "exposure:report") == []


def test_an_auditor_reads_the_report_and_the_run_is_audited(audrey: Person, app: App,
                                                            uploaded: str) -> None:
    page = audrey.client.get("/exposure", params={**DAY, "partner": "uni"})
    assert page.status_code == 200
    assert "BLINDPOST EXPOSURE REPORT" in page.text
    assert uploaded in page.text and "extract.csv.age" in page.text
    assert "audit log verified" in page.text
    assert "/exposure/report.csv?from=2026-11-02&amp;to=2026-11-02&amp;partner=uni" in page.text
    [event] = audit_events(app, "exposure:report")
    assert event["actor"] == "audrey" and event["subject"] == "partner:uni"
    assert event["details"]["files"] == 1 and event["details"]["verified"] is True
    assert event["details"]["from"] == "2026-11-02T00:00:00+00:00"


@pytest.mark.parametrize(("kind", "media"), [("json", "application/json"),
                                             ("csv", "text/csv"), ("txt", "text/plain")])
def test_downloads_carry_the_whole_report(alice: Person, uploaded: str, kind: str,
                                          media: str) -> None:
    answer = alice.client.get(f"/exposure/report.{kind}", params=DAY)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith(media)
    assert answer.headers["content-disposition"] == (
        f'attachment; filename="exposure-20261102T0000-20261102T2359.{kind}"')
    assert uploaded in answer.text


def test_the_api_answers_json_and_csv_to_a_token(app: App, uploaded: str) -> None:
    token = app.tokens.create(OPERATOR, name="privacy-office", role=Role.AUDITOR).token
    client = browser(app)
    headers = {"Authorization": f"Bearer {token}"}
    document = client.get("/api/v1/exposure", params=DAY, headers=headers)
    assert document.status_code == 200
    files = json.loads(document.text)["files"]
    assert [f["id"] for f in files] == [uploaded]
    table = client.get("/api/v1/exposure", params={**DAY, "format": "csv"}, headers=headers)
    assert table.headers["content-type"].startswith("text/csv")
    rows = [row for row in csv.DictReader(io.StringIO(table.text)) if row["record"] == "file"]
    assert [(row["file_id"], row["partner"]) for row in rows] == [(uploaded, "uni")]
    actors = [e["actor"] for e in audit_events(app, "exposure:report")]
    assert actors == ["token:privacy-office"] * 2


@pytest.mark.parametrize(("params", "message"), [
    ({"from": "2026-11-02T09:00", "to": "2026-11-02"}, "has no offset"),
    ({"from": "yesterday", "to": "2026-11-02"}, "expected an ISO 8601 time"),
    ({**DAY, "partner": "nobody"}, "nobody"),
])
def test_bad_requests_are_clear_and_run_nothing(alice: Person, app: App, params: dict[str, str],
                                                message: str) -> None:
    answer = alice.client.get("/api/v1/exposure", params=params)
    assert answer.status_code in (400, 404)
    assert answer.headers["content-type"] == "application/problem+json"
    assert message in answer.json()["detail"]
    assert audit_events(app, "exposure:report") == []


def test_a_tampered_log_gives_no_report_unless_asked(audrey: Person, app: App,
                                                     uploaded: str) -> None:
    app.ledger.catch_up()  # The console had read the entry before it was changed.
    with app.engine.begin() as connection:
        for action in ("update", "delete"):
            connection.execute(text(f"DROP TRIGGER audit_entries_no_{action}"))
        connection.execute(text("UPDATE audit_entries SET leaf = replace(leaf, :old, :new) "
                                "WHERE tag = 'file:upload:complete'"),
                           {"old": '"name":"extract.csv.age"', "new": '"name":"other.csv.age"'})
    refused = audrey.client.get("/exposure", params=DAY)
    assert refused.status_code == 409
    assert "failed verification" in refused.text
    assert "BLINDPOST EXPOSURE REPORT" not in refused.text
    assert audrey.client.get("/api/v1/exposure", params=DAY).status_code == 409
    shown = audrey.client.get("/exposure", params={**DAY, "unverified": "true"})
    assert shown.status_code == 200
    assert "WARNING: UNVERIFIED" in shown.text and "other.csv.age" in shown.text


def test_a_log_tampered_before_the_console_read_it_ends_every_session(
        audrey: Person, app: App, uploaded: str) -> None:
    # The console follows the log to know which rows are current; an entry it has not
    # read yet that fails its MAC leaves it unable to tell, so it grants nothing.
    with app.engine.begin() as connection:
        for action in ("update", "delete"):
            connection.execute(text(f"DROP TRIGGER audit_entries_no_{action}"))
        connection.execute(text("UPDATE audit_entries SET leaf = replace(leaf, :old, :new) "
                                "WHERE idx = (SELECT max(idx) FROM audit_entries)"),
                           {"old": '"tag"', "new": '"tag" '})
    page = audrey.client.get("/exposure", params=DAY)
    assert "BLINDPOST EXPOSURE REPORT" not in page.text
    assert audrey.client.get("/api/v1/exposure", params=DAY).status_code in (401, 403)
    violations = [e for e in audit_events(app, "integrity:violation")
                  if e["details"]["table"] == "audit_entries"]
    assert len(violations) == 1 and "MAC" in violations[0]["details"]["reason"]


def test_a_long_report_shows_its_first_lines_and_counts_the_rest(
        audrey: Person, uploaded: str, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = audrey.client.get("/exposure/report.txt", params=DAY).text.splitlines()
    monkeypatch.setattr(pages, "SHOWN_LINES", 5)
    page = audrey.client.get("/exposure", params=DAY).text
    shown = re.search(r'<pre class="report"[^>]*>(.*?)</pre>', page, re.DOTALL)
    assert shown is not None
    lines = html.unescape(shown.group(1)).split("\n")
    assert lines[0] == whole[0] and len(lines) == 5
    assert f"{len(whole) - 5} more are in the downloads" in page
