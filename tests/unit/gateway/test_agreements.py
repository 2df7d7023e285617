"""Data-sharing agreements (issue 24): two admins decide one, every upload is checked
against it, and each file's data elements and record count are sealed and audited."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import select, text

from gateway import envelope, passwords
from gateway.app import App
from gateway.audit import VerificationError
from gateway.db.models import Role, Transfer
from gateway.errors import AuthorizationError, PolicyError
from gateway.integrity import IntegrityViolationError
from tests.unit.admin_ui.conftest import CHEAP
from tests.unit.gateway.factories import (
    OPERATOR,
    account,
    actor,
    approved,
    audit_events,
    partner_with_key,
)

HEADER = b"HCN,Birth Date,postal_code\r\n"
ROWS = b"1,1980-01-02,K1A\r\n2,1990-03-04,M5V\r\n3,2000-05-06,H2X\r\n"


@pytest.fixture(autouse=True)
def cheap_password_hashes() -> Iterator[None]:
    """Admins made here get one-time passwords; production argon2id costs seconds."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(passwords, "_hasher", CHEAP)
        patch.setattr(passwords, "_DUMMY_HASH", CHEAP.hash("blindpost: no such account"))
        yield


@pytest.fixture
def setup(app: App) -> envelope.Identity:
    identity = partner_with_key(app, "uni")
    account(app, "clerk", Role.STAFF)
    return identity


def _agree(app: App, *, columns: list[str], max_records: int | None = None,
           allow_opaque: bool = False) -> None:
    change = app.agreements.propose(actor(app, "root-admin"), partner="uni", columns=columns,
                                    max_records=max_records, allow_opaque=allow_opaque)
    approved(app, change)


def _upload(app: App, name: str, data: bytes) -> None:
    upload = app.transfers.begin_upload(actor(app, "clerk"), partner="uni", name=name)
    for start in range(0, len(data), 7):
        upload.write(data[start:start + 7])
    upload.commit()


def _stored(app: App) -> list[tuple[str | None, str | None, int | None, str | None]]:
    """Each transfer row's record of what its file holds."""
    with app.read() as session:
        return [(row.data_format, row.data_elements, row.record_count, row.elements_source)
                for row in session.scalars(select(Transfer))]


def test_an_agreement_takes_two_admins(app: App, setup: envelope.Identity) -> None:
    change = app.agreements.propose(actor(app, "root-admin"), partner="uni",
                                    columns=["hcn", "dob"], max_records=10)
    assert app.agreements.show(OPERATOR, "uni") is None, "a proposal grants nothing"
    with pytest.raises(PolicyError, match="two-person rule"):
        app.authority.approve(actor(app, "root-admin"), change_id=change.id)
    with pytest.raises(AuthorizationError):
        app.agreements.propose(OPERATOR, partner="uni", columns=["hcn"])
    approved(app, change)
    shown = app.agreements.show(OPERATOR, "uni")
    assert shown is not None
    assert (shown.columns, shown.max_records, shown.proposed_by, shown.approved_by) == (
        ("birth_date", "health_card_number"), 10, "root-admin", "second-admin")
    [event] = audit_events(app, "agreement:set")
    assert event["details"]["columns"] == ["birth_date", "health_card_number"]


def test_upload_within_the_agreement_is_recorded_and_sealed(app: App,
                                                            setup: envelope.Identity) -> None:
    _agree(app, columns=["hcn", "birth_date", "postal_code"], max_records=3)
    _upload(app, "extract.csv", HEADER + ROWS)
    [(form, elements, records, source)] = _stored(app)
    assert (form, json.loads(elements or "null"), records, source) == (
        "csv", ["birth_date", "health_card_number", "postal_code"], 3, "gateway")
    [event] = audit_events(app, "file:upload:complete")
    details = event["details"]
    assert {key: details[key] for key in ("data_format", "data_elements", "records",
                                          "data_read_by")} == {
        "data_format": "csv", "records": 3, "data_read_by": "gateway",
        "data_elements": ["birth_date", "health_card_number", "postal_code"]}
    # The elements are sealed: changing them behind the gateway's back is caught.
    with app.transaction() as session:
        session.execute(text("UPDATE transfers SET data_elements = '[\"birth_date\"]'"))
    with pytest.raises(IntegrityViolationError):
        app.transfers.stat(actor(app, "clerk"), "extract.csv.age", partner="uni")


REFUSED = [
    (b"hcn,first_name,sex\n1,A,F\n", "columns outside the data-sharing agreement with uni: "
     "first_name, sex; nothing was stored"),
    (HEADER + ROWS + b"4,x,y\n", "4 records, over the 3"),
    (b"PK\x03\x04zipped", "structure cannot be read"),
]


def test_upload_outside_the_agreement_is_refused(app: App, setup: envelope.Identity) -> None:
    """A forbidden column, an over-limit count, an opaque file: each refused, nothing
    stored, the reason audited (one installation for the three, to keep the suite fast)."""
    _agree(app, columns=["hcn", "birth_date", "postal_code"], max_records=3)
    for data, message in REFUSED:
        with pytest.raises(PolicyError) as refused:
            _upload(app, "extract.csv", data)
        assert message in str(refused.value)
        assert _stored(app) == []
        assert not [p for p in (app.settings.store_dir / "objects").rglob("*") if p.is_file()]
        assert message in audit_events(app, "file:upload:aborted")[-1]["details"]["reason"]


def test_opaque_allowed_by_the_agreement(app: App, setup: envelope.Identity) -> None:
    _agree(app, columns=["hcn"], allow_opaque=True)
    _upload(app, "bundle.zip", b"PK\x03\x04zipped")
    assert _stored(app) == [("opaque", None, None, "gateway")]


def test_without_an_agreement_uploads_are_recorded_or_refused(app: App,
                                                             setup: envelope.Identity) -> None:
    _upload(app, "extract.csv", HEADER + ROWS)
    [(_, elements, records, _)] = _stored(app)
    assert records == 3 and elements is not None
    app.settings = app.settings.__class__(**{**app.settings.__dict__,
                                             "require_agreement": True})
    with pytest.raises(PolicyError, match="no data-sharing agreement"):
        _upload(app, "other.csv", HEADER)


def test_a_widened_or_rolled_back_agreement_grants_nothing(app: App,
                                                           setup: envelope.Identity) -> None:
    """A database writer who widens the agreement, or puts back an older, looser one,
    gets the upload refused, not let through."""
    _agree(app, columns=["hcn", "first_name"])
    with app.read() as session:
        old = session.execute(text("SELECT columns, change_id, seal FROM agreements")).one()
    _agree(app, columns=["hcn"])
    app.audit_view.verify(OPERATOR)  # The log implies the database, agreements included.
    with app.transaction() as session:
        session.execute(text("UPDATE agreements SET columns = :c, change_id = :i, seal = :s"),
                        {"c": old.columns, "i": old.change_id, "s": old.seal})
    with pytest.raises(IntegrityViolationError, match="agreements row"):
        _upload(app, "extract.csv", b"hcn,first_name\n1,A\n")
    # The log's reconciliation names it too.
    with pytest.raises(VerificationError, match="agreements row uni: columns"):
        app.audit_view.verify(OPERATOR)
    with app.transaction() as session:
        session.execute(text("UPDATE agreements SET columns = '[\"first_name\",\"hcn\"]'"))
    with pytest.raises(IntegrityViolationError, match="seal does not match"):
        _upload(app, "extract.csv", b"hcn,first_name\n1,A\n")
    assert _stored(app) == []
