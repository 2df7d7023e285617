"""What the console's admin pages read: the log newest first and searched, the
dashboard's "needs doing", and the partner and account pages."""

from __future__ import annotations

import pytest

from gateway import envelope
from gateway.app import App
from gateway.audit import AuditTag
from gateway.audit_service import EventFilter
from gateway.db.models import Role
from gateway.details import account_detail, partner_detail
from gateway.errors import AuthenticationError
from tests.unit.gateway.factories import OPERATOR, account, actor, partner_with_key, usable_admin


@pytest.fixture
def world(app: App) -> App:
    partner_with_key(app, "uni")
    app.partners.add(OPERATOR, slug="lab")
    account(app, "clerk", Role.STAFF)
    account(app, "lee", Role.PARTNER, partner="uni")
    upload = app.transfers.begin_upload(actor(app, "clerk"), partner="uni", name="x.csv")
    upload.write(b"rows")
    upload.commit()
    return app


def test_newest_first_pages_by_keyset_without_gaps(world: App) -> None:
    size = world.audit_view.size(OPERATOR)
    seen, before = [], None
    while True:
        page, before = world.audit_view.newest(OPERATOR, EventFilter(), before=before, size=7)
        seen += [event.index for event in page]
        if before is None:
            break
    assert seen == list(range(size - 1, -1, -1))


def test_search_matches_actor_subject_and_tag_only(world: App) -> None:
    found, _ = world.audit_view.newest(OPERATOR, EventFilter(search="LEE"), size=100)
    assert found
    assert all("lee" in f"{e.actor} {e.subject} {e.tag}" for e in found)
    # "uni" is in many events' details, but only these name it as actor, subject or tag.
    named, _ = world.audit_view.newest(OPERATOR, EventFilter(search="uni"), size=100)
    assert all("uni" in f"{e.actor} {e.subject} {e.tag}" for e in named)
    # Two words must both appear; LIKE's wildcards are plain characters.
    both, _ = world.audit_view.newest(OPERATOR, EventFilter(search="partner: uni"), size=100)
    assert {e.subject for e in both} == {"partner:uni"}
    assert world.audit_view.newest(OPERATOR, EventFilter(search="%"), size=100)[0] == []
    assert world.audit_view.newest(OPERATOR, EventFilter(search="_"), size=100)[0] == []
    uploads, _ = world.audit_view.newest(OPERATOR, EventFilter(
        tag=AuditTag.UPLOAD_COMPLETE, actor="clerk"), size=10)
    assert [e.tag for e in uploads] == ["file:upload:complete"]


def test_needs_doing_lists_what_waits_with_where_to_act(world: App) -> None:
    admin = actor(world, "root-admin")
    key = world.keys.propose(admin, partner="lab",
                             recipient=str(envelope.generate_identity().recipient))
    usable_admin(world, "carol")
    for _ in range(world.settings.lockout_threshold):
        with pytest.raises(AuthenticationError):
            world.auth.prove(username="carol", code="000000", source="192.0.2.1",
                             purpose="test")
    with world.transaction() as session:
        world.audit.record(session, tag=AuditTag.AUDIT_VERIFY, actor=OPERATOR,
                           subject="audit:log", details={"ok": False, "findings": 2})
    todo = {t.link: t for t in world.dashboard.overview(admin).todo}
    assert todo["/audit?tag=audit%3Averify"].kind == "alarm"
    assert "FAILED" in todo["/audit?tag=audit%3Averify"].text
    assert "waits for a second admin" in todo[f"/keys#key-{key.id}"].text
    assert "cannot receive" in todo["/partners/lab"].text
    assert "/partners/uni" not in todo
    assert todo["/accounts/carol"].text.startswith("Account carol is locked until")
    assert next(iter(todo.values())).kind == "alarm"


def test_partner_and_account_pages(world: App) -> None:
    admin = actor(world, "root-admin")
    uni = partner_detail(world, admin, "uni")
    assert uni.can_receive
    assert [a.username for a in uni.people] == ["lee"]
    assert [f.name for f in uni.waiting] == ["x.csv.age"]
    assert not partner_detail(world, admin, "lab").can_receive
    clerk = account_detail(world, admin, "clerk")
    assert clerk.account.role is Role.STAFF
    assert {e.tag for e in clerk.history} >= {"account:create", "file:upload:complete"}
    assert all("clerk" in f"{e.actor} {e.subject}" for e in clerk.history)

