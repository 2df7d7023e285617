"""Retention: expiry and download limits purge ciphertext; crash leftovers are swept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from gateway.app import App
from gateway.db.models import PendingObject, Role
from gateway.errors import StorageError, UsageError
from gateway.partners import PartnerChange
from gateway.transfers import FileFilter
from tests.conftest import FakeClock
from tests.unit.gateway.factories import (
    OPERATOR,
    account,
    actor,
    audit_events,
    partner_with_key,
)


def _upload(app: App, name: str, partner: str = "uni") -> None:
    upload = app.transfers.begin_upload(actor(app, "clerk"), partner=partner, name=name)
    upload.write(b"content")
    upload.commit()


def _objects(app: App) -> list[str]:
    return sorted(info.object_id for info in app.store.list_objects())


def test_expired_files_are_purged_and_audited(app: App, clock: FakeClock) -> None:
    partner_with_key(app)
    account(app, "clerk", Role.STAFF)
    _upload(app, "old.csv")
    clock.advance(days=3)
    _upload(app, "new.csv")
    clock.advance(days=4, seconds=1)
    report = app.retention.purge()
    assert report.purged == 1
    assert len(_objects(app)) == 1
    purge = audit_events(app, "file:purge")
    assert [e["details"]["reason"] for e in purge] == ["expired"]
    assert app.retention.purge().purged == 0


def test_used_up_files_are_purged(app: App) -> None:
    partner_with_key(app, "lim", max_downloads=1)
    account(app, "clerk", Role.STAFF)
    account(app, "ann", Role.PARTNER, partner="lim")
    _upload(app, "a.csv", partner="lim")
    download = app.transfers.open_download(actor(app, "ann"), "a.csv.age")
    download.read_at(0, download.size)
    download.close()
    assert app.retention.purge().purged == 1
    assert _objects(app) == []
    assert audit_events(app, "file:purge")[-1]["details"]["reason"] == "download limit reached"


def _pending(app: App) -> list[tuple[str, str]]:
    with app.read() as session:
        return [(row.object_id, row.purpose) for row in session.scalars(select(PendingObject))]


def test_abandoned_uploads_are_swept_after_grace(app: App, clock: FakeClock) -> None:
    partner_with_key(app)
    account(app, "clerk", Role.STAFF)
    upload = app.transfers.begin_upload(actor(app, "clerk"), partner="uni", name="cut.csv")
    upload.write(b"half an upload")  # The process dies here: no commit, no abort.
    assert _pending(app) == [(upload._object.object_id, "upload")]
    assert app.retention.purge().swept == 0
    clock.advance(minutes=61)
    assert app.retention.purge().swept == 1
    assert _pending(app) == []
    assert list((app.settings.store_dir / "partial").iterdir()) == []


def test_a_long_upload_keeps_its_object(app: App, clock: FakeClock) -> None:
    partner_with_key(app)
    account(app, "clerk", Role.STAFF)
    upload = app.transfers.begin_upload(actor(app, "clerk"), partner="uni", name="big.csv")
    for _ in range(3):
        clock.advance(minutes=40)
        upload.write(b"x" * 1000)  # Each write past the heartbeat touches the row.
        assert app.retention.purge().swept == 0
    upload.commit()
    assert _pending(app) == [] and len(_objects(app)) == 1


def test_a_failed_deletion_is_retried_by_the_next_pass(app: App, clock: FakeClock,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    partner_with_key(app)
    account(app, "clerk", Role.STAFF)
    _upload(app, "old.csv")
    clock.advance(days=8)
    store = app.store

    def broken_delete(object_id: str) -> bool:
        raise StorageError("cannot delete object: Input/output error")

    monkeypatch.setattr(store, "delete", broken_delete)
    assert app.retention.purge().purged == 1  # The row is purged, the object stays.
    assert len(_objects(app)) == 1 and _pending(app)[0][1] == "delete"
    monkeypatch.undo()
    report = app.retention.purge()
    assert (report.purged, report.swept) == (0, 1)
    assert _objects(app) == [] and _pending(app) == []


def test_full_sweep_finds_what_the_database_does_not_know(app: App, clock: FakeClock) -> None:
    # The store dates objects by the filesystem's clock; start the fake clock there.
    clock.now = datetime.now(UTC)
    partial = app.store.create()
    partial.write(b"half an upload")
    orphan = app.store.create()
    orphan.write(b"committed, but the database commit never happened")
    orphan.commit()
    assert app.retention.purge(full=True).partials == 0
    clock.advance(hours=2)
    report = app.retention.purge(full=True)
    assert (report.partials, report.orphans) == (1, 1)
    assert _objects(app) == []
    assert list((app.settings.store_dir / "partial").iterdir()) == []


def test_live_objects_survive_the_sweep(app: App, clock: FakeClock) -> None:
    partner_with_key(app)
    account(app, "clerk", Role.STAFF)
    _upload(app, "keep.csv")
    clock.advance(hours=2)
    assert app.retention.purge(full=True).orphans == 0
    assert len(_objects(app)) == 1


def test_minute_retention_expires_at_the_boundary(app: App, clock: FakeClock) -> None:
    partner_with_key(app)
    app.partners.change(OPERATOR, slug="uni", change=PartnerChange(retention_seconds=15 * 60))
    account(app, "clerk", Role.STAFF)
    account(app, "lee", Role.PARTNER, partner="uni")
    uploaded = clock()
    _upload(app, "soon.csv")
    (entry,) = app.transfers.inbox(actor(app, "lee"))
    assert entry.expires_at == uploaded + timedelta(minutes=15)
    clock.advance(minutes=14, seconds=59)
    assert app.retention.purge().purged == 0
    assert [f.name for f in app.transfers.inbox(actor(app, "lee"))] == ["soon.csv.age"]
    clock.advance(seconds=1)
    assert app.transfers.inbox(actor(app, "lee")) == []
    assert app.retention.purge().purged == 1
    assert audit_events(app, "file:purge")[-1]["details"]["reason"] == "expired"
    assert _objects(app) == []


def test_a_changed_retention_applies_to_new_files_only(app: App, clock: FakeClock) -> None:
    partner_with_key(app, max_downloads=3)
    account(app, "clerk", Role.STAFF)
    _upload(app, "before.csv")
    app.partners.change(OPERATOR, slug="uni", change=PartnerChange(
        retention_seconds=90, unlimited_downloads=True))
    clock.advance(seconds=10)
    _upload(app, "after.csv")
    files = {f.name: f for f in app.transfers.files(OPERATOR, FileFilter(partner="uni"))}
    before, after = files["before.csv.age"], files["after.csv.age"]
    assert (before.expires_at - before.created_at, before.max_downloads) == (
        timedelta(days=7), 3)
    assert (after.expires_at - after.created_at, after.max_downloads) == (
        timedelta(seconds=90), None)
    change = audit_events(app, "partner:change")[-1]["details"]
    assert (change["retention_old"], change["retention_new"]) == ("7d", "90s")
    assert (change["retention_seconds_old"], change["retention_seconds_new"]) == (604800, 90)
    assert (change["max_downloads_old"], change["max_downloads_new"]) == (3, None)


@pytest.mark.parametrize("seconds", [-60, 31 * 86400])
def test_retention_out_of_bounds_is_refused(app: App, seconds: int) -> None:
    partner_with_key(app)
    with pytest.raises(UsageError, match="retention must be between 1s and 30d"):
        app.partners.change(OPERATOR, slug="uni", change=PartnerChange(retention_seconds=seconds))
    assert app.partners.get(OPERATOR, "uni").retention == "7d"
