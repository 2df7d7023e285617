"""Reading the audit log through the service: permissions and filters."""

from __future__ import annotations

import io

import pytest

from gateway.app import App
from gateway.audit import AuditTag
from gateway.audit_service import EventFilter
from gateway.db.models import Role
from gateway.errors import AuthorizationError
from tests.conftest import FakeClock
from tests.unit.gateway.factories import OPERATOR, account, actor, partner_with_key


@pytest.fixture
def history(app: App, clock: FakeClock) -> App:
    partner_with_key(app, "uni")
    partner_with_key(app, "lab")
    account(app, "clerk", Role.STAFF)
    account(app, "auditor", Role.AUDITOR)
    for partner in ("uni", "lab"):
        clock.advance(minutes=1)
        upload = app.transfers.begin_upload(actor(app, "clerk"), partner=partner, name="x.csv")
        upload.write(b"rows")
        upload.commit()
    return app


def test_filters_by_partner_tag_actor_and_time(history: App, clock: FakeClock) -> None:
    auditor = actor(history, "auditor")
    uploads = list(history.audit_view.events(auditor, EventFilter(
        tag=AuditTag.UPLOAD_COMPLETE, partner="lab")))
    assert [e.details["partner"] for e in uploads] == ["lab"]
    by_clerk = list(history.audit_view.events(auditor, EventFilter(actor="clerk")))
    assert {e.tag for e in by_clerk} == {"file:upload:complete"}
    file_id = uploads[0].subject.removeprefix("file:")
    assert [e.index for e in history.audit_view.events(
        auditor, EventFilter(file=file_id))] == [uploads[0].index]
    before = list(history.audit_view.events(auditor, EventFilter(until=uploads[0].time)))
    assert before and all(e.index < uploads[0].index for e in before)


def test_pages_continue_after_the_last_index(history: App) -> None:
    first = history.audit_view.page(OPERATOR, EventFilter(), size=3)
    second = history.audit_view.page(OPERATOR, EventFilter(start=first[-1].index + 1), size=3)
    assert [e.index for e in first + second] == list(range(6))


def test_staff_and_partners_read_no_log(history: App) -> None:
    with pytest.raises(AuthorizationError):
        list(history.audit_view.events(actor(history, "clerk")))
    with pytest.raises(AuthorizationError):
        history.audit_view.export(actor(history, "clerk"), io.BytesIO())


def test_auditors_verify_but_do_not_sign(history: App) -> None:
    auditor = actor(history, "auditor")
    assert history.audit_view.verify(auditor).size > 0
    with pytest.raises(AuthorizationError):
        history.audit_view.checkpoint(auditor)
    assert history.audit_view.checkpoint(OPERATOR).checkpoint.size > 0


def test_filter_by_user_finds_what_it_did_and_what_was_done_to_it(history: App) -> None:
    events = list(history.audit_view.events(OPERATOR, EventFilter(user="clerk")))
    assert [(e.tag, e.actor) for e in events][:2] == [
        ("account:create", OPERATOR.name), ("account:key:add", OPERATOR.name)]
    assert {e.tag for e in events[2:]} == {"file:upload:complete"}


def test_verify_reads_the_log_in_the_same_pass(history: App) -> None:
    seen: list[str] = []
    report = history.audit_view.read_verified(OPERATOR, lambda e: seen.append(e.tag),
                                              tags={"file:upload:complete", "partner:create"})
    assert seen == ["partner:create", "partner:create", "file:upload:complete",
                    "file:upload:complete"]
    assert report.anchor is not None and report.witnessed is None
    assert report.anchor.label.startswith("stored checkpoint #")
    witnessed = history.audit_view.checkpoint(OPERATOR)
    again = history.audit_view.verify(OPERATOR, outside=[("w.txt", witnessed.note)])
    assert again.witnessed is not None and again.anchor == again.witnessed
    assert again.witnessed.label == f"outside checkpoint w.txt (size {witnessed.checkpoint.size})"


def test_verification_hands_over_events_whose_time_is_the_columns(history: App) -> None:
    listed = list(history.audit_view.events(OPERATOR))
    read: list[object] = []
    history.audit_view.read_verified(OPERATOR, read.append)
    assert read == listed
