"""What notifications say: counts and expiry for partners, one digest line per event for
admins, with fields from the log escaped and cut short."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from gateway.audit import AuditTag
from gateway.notify.messages import admin_digest, files_waiting, notice, short_time


def test_files_waiting_says_how_many_and_the_first_expiry_in_utc() -> None:
    expiry = datetime(2026, 12, 5, 15, 0, tzinfo=timezone(timedelta(hours=1)))
    message = files_waiting("uni-research", count=3, first_expiry=expiry)
    assert message.subject == ("Blindpost: 3 files for uni-research, the first expires "
                               "5 Dec 14:00 UTC")
    assert message.text.startswith("3 files for uni-research, the first expires 5 Dec 14:00 UTC.")
    assert message.supersedes
    body = json.loads(message.body())
    assert body["count"] == 3 and body["first_expires_at"] == "2026-12-05T14:00:00+00:00"
    one = files_waiting("lab", count=1, first_expiry=expiry)
    assert one.subject.startswith("Blindpost: 1 file for lab,")
    assert short_time(datetime(2026, 1, 9, 7, 5, tzinfo=UTC)) == "9 Jan 07:05 UTC"


def test_admin_digest_lists_alarms_first_and_replaces_nothing() -> None:
    events = [
        notice(10, AuditTag.KEY_PROPOSE, {"key_id": 4, "partner": "uni", "fingerprint": "ab12"}),
        notice(11, AuditTag.AUDIT_WITNESS_QUORUM_MISSED,
               {"size": 90, "cosigned": 0, "quorum": 1, "missing": ["w1", "w2"]}),
        notice(12, AuditTag.ACCOUNT_MACHINE_PROPOSE,
               {"grant_id": 2, "change": "create", "allow_from": "192.0.2.0/24"}),
        notice(13, AuditTag.AUTHORITY_PROPOSE,
               {"change_id": 5, "kind": "account-create", "target": "eve"}),
    ]
    refused = notice(15, AuditTag.AUDIT_WITNESS_REFUSED,
                     {"witness": "w1", "size": 80, "witness_size": 90, "status": 409})
    assert refused is not None and refused.kind == "alarm"
    assert refused.line.startswith("AUDIT LOG REWRITE? witness w1 refused the checkpoint of "
                                   "80 entries, having cosigned 90")
    assert notice(14, AuditTag.UPLOAD_COMPLETE, {"name": "x.csv"}) is None
    digest = admin_digest([e for e in events if e is not None])
    assert digest.subject == "Blindpost: 1 alarm, 3 approvals waiting"
    assert not digest.supersedes
    lines = [line for line in digest.text.splitlines() if line.startswith("- ")]
    assert lines == [
        "- the audit checkpoint of 90 entries has 0 of the 1 witness cosignatures required "
        "(missing: w1, w2) (audit entry 11)",
        "- recipient key 4 for partner uni awaits approval (fingerprint ab12) (audit entry 10)",
        "- machine grant 2 (create, from 192.0.2.0/24) awaits approval (audit entry 12)",
        "- authority change 5 (account-create for eve) awaits approval (audit entry 13)",
    ]


def test_fields_from_the_log_cannot_add_lines_or_run_on() -> None:
    forged = notice(1, AuditTag.AUTHORITY_PROPOSE, {
        "change_id": 1, "kind": "x\nSubject: you won", "target": "e" * 500})
    assert forged is not None
    assert "\n" not in forged.line and "x\\nSubject" in forged.line
    assert "e" * 80 not in forged.line and "…" in forged.line
    many = admin_digest([forged] * 25)
    assert "- and 5 more" in many.text
