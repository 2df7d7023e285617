"""The partner portal's rules in-process: who may sign in and how, what is stored as a
wrapped identity, and which byte ranges are served. The browser flows (passkeys, PRF,
decryption) are in tests/integration/console/test_portal_browser.py."""

from __future__ import annotations

import base64
import os
import re

import pyotp
import pytest

from admin_ui.portal import requested_range
from gateway import envelope
from gateway.app import App
from gateway.db.models import Passkey, Role
from gateway.errors import AuthenticationError, AuthorizationError, UsageError
from gateway.portal import check_wrapped
from tests.conftest import FakeClock
from tests.unit.admin_ui.console_support import browser
from tests.unit.gateway.factories import account, actor, audit_events

CREDENTIAL = "AGE-PLUGIN-FIDO2PRF-1" + "Q" * 40


def _passkey_file() -> str:
    """An armored age file whose one stanza is a passkey's, shaped as typage writes it
    (random bytes where the PRF-wrapped file key and payload would be)."""
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode().rstrip("=")

    header = (f"age-encryption.org/v1\n-> age-encryption.org/fido2prf {b64(os.urandom(16))}\n"
              f"{b64(os.urandom(32))}\n--- {b64(os.urandom(32))}\n").encode()
    body = base64.b64encode(header + os.urandom(16 + 80)).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "\n".join(["-----BEGIN AGE ENCRYPTED FILE-----", *lines,
                      "-----END AGE ENCRYPTED FILE-----", ""])


def _code(new: object, clock: FakeClock) -> str:
    uri = new.totp_uri  # type: ignore[attr-defined]
    return str(pyotp.parse_uri(uri).at(clock()))


def test_a_partner_user_signs_in_with_their_code_and_must_then_register_a_passkey(
        app: App, clock: FakeClock) -> None:
    app.partners.add(actor(app, "root-admin"), slug="uni")
    new, _ = account(app, "dr-lee", Role.PARTNER, partner="uni")
    client = browser(app)
    page = client.get("/portal/signin")
    assert 'name="enrolment"' in page.text and "blindpost portal-code" in page.text
    # The first time, the code read over SFTP is due as well (told once the one-time
    # code proved the holder).
    refused = client.post("/portal/signin", data={"username": "dr-lee",
                                                  "code": _code(new, clock)})
    assert refused.status_code == 401 and "needs an enrolment code" in refused.text
    clock.advance(seconds=30)
    issued = app.portal_enrolment.issue(actor(app, "dr-lee"))
    answer = client.post("/portal/signin", data={"username": "dr-lee",
                                                 "code": _code(new, clock),
                                                 "enrolment": issued.code},
                         follow_redirects=False)
    assert (answer.status_code, answer.headers["location"]) == (303, "/signin/passkey")
    # Until a passkey is registered the session reaches nothing else.
    assert client.get("/portal", follow_redirects=False).headers["location"] == (
        "/signin/passkey")
    assert audit_events(app, "auth:login:success")[-1]["details"]["method"] == (
        "totp+enrolment code")


def test_portal_sign_in_refusals_say_the_same_and_are_counted(app: App,
                                                               clock: FakeClock) -> None:
    app.partners.add(actor(app, "root-admin"), slug="uni")
    new, _ = account(app, "dr-lee", Role.PARTNER, partner="uni")
    code = _code(new, clock)
    texts = []
    for username, tried in (("dr-lee", "000000" if code != "000000" else "111111"),
                            ("nobody", code), ("root-admin", code)):
        answer = browser(app).post("/portal/signin",
                                   data={"username": username, "code": tried})
        assert answer.status_code == 401
        texts.append("wrong username or one-time code" in answer.text)
    assert texts == [True, True, True]
    failures = audit_events(app, "auth:login:failure")
    assert [f["details"].get("factor") for f in failures[-3:]] == ["totp"] * 3


def test_service_refuses_the_portal_to_other_roles(app: App) -> None:
    with pytest.raises(AuthorizationError):
        app.portal.store(actor(app, "root-admin"), credential=CREDENTIAL,
                         wrapped="x", recipient="x")


def test_only_ciphertext_to_one_passkey_is_stored_as_a_wrapped_identity() -> None:
    identity = envelope.generate_identity()
    with pytest.raises(UsageError, match="in the clear"):
        check_wrapped(identity.to_secret_string())
    with pytest.raises(UsageError, match="in the clear"):
        check_wrapped(f"# key\n{identity.to_secret_string().lower()}\n")
    # A well-formed age file, but to a key rather than a passkey: refused.
    to_a_key = envelope.encrypt_bytes(b"secret", [identity.recipient], armor=True).decode()
    with pytest.raises(UsageError, match="one passkey only"):
        check_wrapped(to_a_key)
    with pytest.raises(UsageError, match="not an armored age file"):
        check_wrapped("-----BEGIN AGE ENCRYPTED FILE-----\nnonsense\n")
    wrapped = _passkey_file()
    assert check_wrapped(wrapped) == wrapped


def test_a_partner_user_stores_and_reads_back_their_wrapped_identity(app: App) -> None:
    app.partners.add(actor(app, "root-admin"), slug="uni")
    account(app, "dr-lee", Role.PARTNER, partner="uni")
    lee = actor(app, "dr-lee")
    recipient = envelope.generate_identity().recipient
    assert app.portal.mine(lee) is None
    stored = app.portal.store(lee, credential=CREDENTIAL, wrapped=_passkey_file(),
                              recipient=str(recipient))
    assert app.portal.mine(lee) == stored
    assert stored.fingerprint == recipient.fingerprint
    with pytest.raises(UsageError, match="AGE-PLUGIN-FIDO2PRF-1"):
        app.portal.store(lee, credential="nonsense", wrapped=_passkey_file(),
                         recipient=str(recipient))
    event = audit_events(app, "portal:identity:store")[-1]
    assert {k: event["details"][k] for k in ("fingerprint", "kind", "replaced")} == {
        "fingerprint": recipient.fingerprint, "kind": recipient.kind, "replaced": False}


@pytest.mark.parametrize(("header", "expected"), [
    (None, None), ("bytes=0-", (0, 1000)), ("bytes=100-199", (100, 200)),
    ("bytes=900-5000", (900, 1000)), (" bytes=999-", (999, 1000))])
def test_one_byte_range_is_served(header: str | None, expected: tuple[int, int] | None) -> None:
    assert requested_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5-4", "bytes=0-1,5-6", "bytes=-100",
                                    "items=0-1"])
def test_other_ranges_are_refused(header: str) -> None:
    with pytest.raises(UsageError):
        requested_range(header, 1000)


def test_a_wrong_code_is_an_authentication_error_at_the_service(app: App) -> None:
    app.partners.add(actor(app, "root-admin"), slug="uni")
    account(app, "dr-lee", Role.PARTNER, partner="uni")
    with pytest.raises(AuthenticationError, match="wrong username or one-time code"):
        app.console_auth.code_sign_in(username="dr-lee", code="12", source="192.0.2.9")


def test_with_a_passkey_registered_the_code_is_followed_by_the_passkey_only(
        app: App, clock: FakeClock) -> None:
    app.partners.add(actor(app, "root-admin"), slug="uni")
    new, _ = account(app, "dr-lee", Role.PARTNER, partner="uni")
    with app.transaction() as session:
        session.add(Passkey(account_id=new.account.id, credential_id="AAAA", public_key="AA",
                            sign_count=0, name="phone", created_at=clock()))
    client = browser(app)
    answer = client.post("/portal/signin", data={"username": "dr-lee",
                                                 "code": _code(new, clock)},
                         follow_redirects=False)
    assert answer.headers["location"] == "/signin/verify"
    page = client.get("/signin/verify")
    assert 'name="code"' not in page.text and "Use a passkey instead" in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    clock.advance(seconds=30)
    refused = client.post("/signin/verify", data={"csrf": csrf.group(1),
                                                  "code": _code(new, clock)})
    assert refused.status_code == 401
    assert "partner accounts confirm the code with their passkey" in refused.text
