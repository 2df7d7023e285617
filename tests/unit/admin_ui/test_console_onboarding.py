"""Onboarding in the console as the CLI does it: a machine account proposed by one admin
and approved by another with a fresh code; a key of the other type refused at proposal."""

from __future__ import annotations

from gateway import envelope
from gateway.app import App
from gateway.db.models import Role
from tests.conftest import FakeClock
from tests.unit.admin_ui.console_support import Person
from tests.unit.gateway.factories import (
    OPERATOR,
    actor,
    audit_events,
    ssh_public_key,
    usable_admin,
)


def test_a_machine_account_waits_for_a_second_admin(app: App, clock: FakeClock, alice: Person,
                                                    bob: Person) -> None:
    proposed = alice.post("/accounts", {"username": "nightly", "role": "staff",
                                        "ssh_key": ssh_public_key("job").openssh(),
                                        "allow_from": "10.20.0.0/24", "machine": "yes"})
    [grant] = app.machines.pending(OPERATOR)
    assert proposed.headers["location"] == f"/accounts#grant-{grant.id}"  # type: ignore[attr-defined]
    assert not app.accounts.get(OPERATOR, "nightly").machine
    page = alice.client.get("/accounts").text
    assert f'id="grant-{grant.id}"' in page and "Waiting for another admin" in page
    own = alice.post(f"/accounts/machines/{grant.id}/approve", {"code": alice.code(clock, ahead=1)})
    assert own.status_code == 403  # type: ignore[attr-defined]
    done = bob.post(f"/accounts/machines/{grant.id}/approve", {"code": bob.code(clock, ahead=1)})
    assert done.headers["location"] == "/accounts/nightly"  # type: ignore[attr-defined]
    account = app.accounts.get(OPERATOR, "nightly")
    assert account.machine and account.allow_from == ("10.20.0.0/24",)
    assert audit_events(app, "auth:stepup:success")[-1]["details"]["purpose"] == (
        f"machine approve {grant.id}")


def test_a_key_of_the_other_type_is_refused_with_the_safe_path(app: App, alice: Person) -> None:
    app.partners.add(OPERATOR, slug="uni")
    post_quantum = str(envelope.generate_identity().recipient)
    assert alice.post("/keys", {"partner": "uni", "recipient": post_quantum}).status_code == 303  # type: ignore[attr-defined]
    usable_admin(app, "carol")
    app.keys.approve(actor(app, "carol"), key_id=app.keys.all(OPERATOR)[0].id)
    classic = str(envelope.generate_identity(post_quantum=False).recipient)
    refused = alice.post("/keys", {"partner": "uni", "recipient": classic})
    assert refused.status_code == 403  # type: ignore[attr-defined]
    assert "switch" in refused.text and "Do not revoke the old keys first" in refused.text  # type: ignore[attr-defined]
    switched = alice.post("/keys", {"partner": "uni", "recipient": classic,
                                    "switch_type": "yes"})
    assert switched.status_code == 303  # type: ignore[attr-defined]
    assert [k.kind for k in app.keys.all(OPERATOR)] == ["mlkem768x25519", "x25519"]
    # The approved key proposed for a second partner is flagged where it is decided.
    app.partners.add(OPERATOR, slug="lab")
    assert alice.post("/keys", {"partner": "lab", "recipient": post_quantum}).status_code == 303  # type: ignore[attr-defined]
    page = alice.client.get("/keys").text
    assert "this key is already approved for uni" in page



def test_a_partners_code_is_reset_by_ssh_never_shown(app: App, alice: Person) -> None:
    app.partners.add(OPERATOR, slug="uni")
    app.accounts.add(OPERATOR, username="dr-lee", role=Role.PARTNER, partner="uni",
                     ssh_keys=[ssh_public_key()])
    reset = alice.post("/accounts/dr-lee/reset-totp")
    assert reset.headers["location"] == "/accounts/dr-lee"  # type: ignore[attr-defined]
    assert app.accounts.get(OPERATOR, "dr-lee").enrolment == "pending"
    page = alice.client.get("/accounts/dr-lee").text
    assert "enrol by SSH until" in page and "otpauth://" not in page
