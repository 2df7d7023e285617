"""The audit page's filter from query values (shared with the API)."""

from __future__ import annotations

from datetime import UTC, datetime

from admin_ui.pages import event_filter


def test_a_date_until_includes_its_day() -> None:
    day = event_filter("", "", "2026-11-03", "2026-11-03", 0)
    assert (day.since, day.until) == (datetime(2026, 11, 3, tzinfo=UTC),
                                      datetime(2026, 11, 4, tzinfo=UTC))
    moment = event_filter("", "", "", "2026-11-03T08:00", 0)
    assert moment.until == datetime(2026, 11, 3, 8, tzinfo=UTC)


def test_search_and_partner_are_passed_on() -> None:
    selection = event_filter("file:download:complete", "", "", "", 0, "  dr-lee ", "uni")
    assert (selection.tag, selection.search, selection.partner) == (
        "file:download:complete", "dr-lee", "uni")
