"""Notifications reach a real SMTP server (aiosmtpd, STARTTLS with a certificate made
here) and a real HTTP receiver; none names a file, and a relay that is down costs a
transfer nothing."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import http.server
import ipaddress
import json
import re
import shutil
import socket
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from argon2 import PasswordHasher
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry
from sqlalchemy import select, text

from gateway import passwords
from gateway.app import App
from gateway.audit import AuditTag
from gateway.config import load_settings
from gateway.datadir import initialise
from gateway.db.models import Role
from gateway.errors import AuthorizationError, ConfigError, RateLimitedError, UsageError
from gateway.metrics import AuditCollector
from gateway.notify.delivery import DeliveryError, verify_webhook
from gateway.notify.models import NotificationOutbox
from tests.conftest import FakeClock
from tests.unit.gateway.factories import (
    OPERATOR,
    account,
    actor,
    audit_events,
    opt_in,
    partner_with_key,
)

pytestmark = pytest.mark.integration

FILE_NAMES = ("cohort-2026-perinatal.csv", "newborn-screening-q4.csv", "followup-x7.csv")
INTERVAL = 300


@dataclass
class Received:
    recipients: list[str]
    content: bytes
    tls: bool


@dataclass
class Inbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    messages: list[Received] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802  # aiosmtpd's hook name.
        self.messages.append(Received(list(envelope.rcpt_tos), bytes(envelope.content),
                                      session.ssl is not None))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def relay_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_relay_cert(tmp_path_factory.mktemp("relay-tls"))


def make_relay_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: the relay's, and the CA the gateway trusts."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test relay")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "relay.pem", directory / "relay.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Relay:
    """A real SMTP server on 127.0.0.1 that requires STARTTLS (unless ``tls`` is False)."""

    def __init__(self, port: int, cert: tuple[Path, Path], *, tls: bool = True,
                 login: tuple[str, str] | None = None, inbox: Inbox | None = None) -> None:
        self.inbox = inbox or Inbox()
        kwargs: dict[str, Any] = {}
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*cert)
            kwargs = {"tls_context": context, "require_starttls": True}
        if login is not None:
            def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                             data: Any) -> AuthResult:
                given = (data.login.decode(), data.password.decode())
                # handled=False: aiosmtpd answers a refusal (535) itself.
                return AuthResult(success=hmac.compare_digest(repr(given), repr(login)),
                                  handled=False)

            kwargs |= {"authenticator": authenticate, "auth_required": True,
                       "auth_require_tls": True}
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=port, **kwargs)
        self.controller.start()

    @property
    def messages(self) -> list[Received]:
        return self.inbox.messages

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture
def relays(relay_cert: tuple[Path, Path]) -> Iterator[list[Relay]]:
    """The relays a test starts; every message any of them received names no file."""
    started: list[Relay] = []
    yield started
    for relay in started:
        relay.stop()
        for message in relay.messages:
            assert_no_file_named(message.content)


def make_app(data_dir: Path, clock: FakeClock, **overrides: object) -> App:
    settings = load_settings(data_dir=data_dir, environ={}, overrides={
        "notify_smtp_from": "blindpost@registry.example", "notify_interval_seconds": INTERVAL,
        **overrides})
    return App(settings, clock=clock)


@pytest.fixture(scope="module")
def cheap_password_hashes() -> Iterator[None]:
    """Production argon2id costs half a second a hash; the admins made here need none."""
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(passwords, "_hasher", cheap)
        yield


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory,
             cheap_password_hashes: None) -> Path:
    """An installation built once: partner uni with an approved key, staff clerk,
    partner account lee, two admins. Each test works on its own copy."""
    target = tmp_path_factory.mktemp("template") / "var"
    initialise(target, admin="root-admin", environ={})
    app = App(load_settings(data_dir=target, environ={}), clock=FakeClock())
    partner_with_key(app, "uni")
    account(app, "clerk", Role.STAFF)
    account(app, "lee", Role.PARTNER, partner="uni")
    app.close()
    return target


@pytest.fixture
def data_dir(template: Path, tmp_path: Path) -> Path:
    target = tmp_path / "var"
    shutil.copytree(template, target)
    return target


@pytest.fixture
def world(data_dir: Path, clock: FakeClock, relay_cert: tuple[Path, Path]) -> Iterator[
        tuple[App, int]]:
    """The installation, its relay setting pointing at a free port (no relay there yet),
    lee opted in."""
    port = free_port()
    app = make_app(data_dir, clock, notify_smtp_host="127.0.0.1", notify_smtp_port=port,
                   notify_smtp_ca_file=str(relay_cert[0]))
    opt_in(app, "lee", "lee@uni-research.example")
    app.notifications.plan()  # The first round starts the cursor at the log's end.
    yield app, port
    app.close()


def upload(app: App, name: str, data: bytes = b"PATIENT 123\n") -> None:
    writer = app.transfers.begin_upload(actor(app, "clerk"), partner="uni", name=name)
    writer.write(data)
    writer.commit()


def next_round(app: App, clock: FakeClock) -> None:
    clock.advance(seconds=INTERVAL)
    app.notifications.run_once()


def assert_no_file_named(blob: bytes | str) -> None:
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    for name in FILE_NAMES:
        for part in (name, name.rsplit(".", 1)[0]):
            assert part not in text, f"{part!r} appears in a notification"
    assert ".age" not in text and "PATIENT" not in text


def test_partner_people_get_one_message_per_round_over_starttls_naming_no_file(
        world: tuple[App, int], clock: FakeClock, relays: list[Relay],
        relay_cert: tuple[Path, Path]) -> None:
    app, port = world
    relays.append(relay := Relay(port, relay_cert))
    for name in FILE_NAMES:
        upload(app, name)
    next_round(app, clock)
    assert len(relay.messages) == 1, "three uploads in one round make one message"
    message = relay.messages[0]
    assert message.recipients == ["lee@uni-research.example"]
    assert message.tls, "the message was sent in the clear"
    text = message.content.decode()
    first_expiry = clock.now - dt.timedelta(seconds=INTERVAL) + dt.timedelta(days=7)
    assert "3 files for uni, the first expires " in text
    assert f"{first_expiry.day} {first_expiry:%b %H:%M} UTC" in text
    assert "Auto-Submitted: auto-generated" in text
    assert_no_file_named(message.content)
    with app.read() as session:
        for row in session.scalars(select(NotificationOutbox)):
            assert_no_file_named(row.subject + row.body)
    sent = audit_events(app, AuditTag.NOTIFY_SENT)
    assert [(e["details"]["account"], e["details"]["channel"], e["details"]["encrypted"])
            for e in sent] == [("lee", "email", True)]
    # A quiet round sends nothing; a new upload is told in the next round, not at once.
    next_round(app, clock)
    upload(app, "late-arrival.csv")
    app.notifications.run_once()
    assert len(relay.messages) == 1
    next_round(app, clock)
    assert len(relay.messages) == 2
    assert "4 files for uni" in relay.messages[1].content.decode()
    assert "late-arrival" not in relay.messages[1].content.decode()


def test_relay_down_never_blocks_a_transfer_and_the_message_is_retried(
        world: tuple[App, int], clock: FakeClock, relays: list[Relay],
        relay_cert: tuple[Path, Path]) -> None:
    app, port = world
    upload(app, FILE_NAMES[0])  # No relay listens: the upload is untouched by that.
    assert [f.name for f in app.transfers.inbox(actor(app, "lee"))] == [
        f"{FILE_NAMES[0]}.age"]
    next_round(app, clock)
    failures = audit_events(app, AuditTag.NOTIFY_FAILURE)
    assert len(failures) == 1 and not failures[0]["details"]["final"]
    assert "cannot reach the relay" in failures[0]["details"]["reason"]
    assert "lee@" not in json.dumps(failures)
    # Another round while the relay is down: its up-to-date count replaces the unsent one.
    upload(app, FILE_NAMES[1])
    next_round(app, clock)
    with app.read() as session:
        waiting = session.scalars(select(NotificationOutbox.subject).where(
            NotificationOutbox.sent_at.is_(None))).all()
    assert waiting == ["Blindpost: 2 files for uni, the first expires 9 Nov 09:00 UTC"]
    relays.append(relay := Relay(port, relay_cert))
    app.notifications.deliver()
    assert relay.messages == [], "a retry waits for its backoff"
    clock.advance(seconds=61)
    report = app.notifications.deliver()
    assert report.sent == 1 and len(relay.messages) == 1
    assert "2 files for uni" in relay.messages[0].content.decode()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AuditCollector(app))
    values = {sample.name: sample.value for metric in registry.collect()
              for sample in metric.samples}
    assert values["blindpost_notification_failures_total"] == 2
    assert values["blindpost_notifications_sent_total"] == 1
    # Each message keeps its own id in the log, even the one that replaced another.
    assert [e["subject"] for e in audit_events(app, AuditTag.NOTIFY_FAILURE)] == [
        "notification:1", "notification:2"]
    assert [e["subject"] for e in audit_events(app, AuditTag.NOTIFY_SENT)] == [
        "notification:2"]


def test_retries_are_bounded_and_a_dead_relay_costs_one_attempt_a_pass(
        data_dir: Path, clock: FakeClock) -> None:
    app = make_app(data_dir, clock, notify_smtp_host="127.0.0.1",
                   notify_smtp_port=free_port(), notify_max_attempts=2)
    account(app, "kim", Role.PARTNER, partner="uni")
    for name in ("lee", "kim"):
        opt_in(app, name, f"{name}@uni.example")
    app.notifications.plan()
    upload(app, FILE_NAMES[0])
    clock.advance(seconds=INTERVAL)
    assert app.notifications.plan() == 2
    assert app.notifications.deliver().failed == 1, "the second waits for the next pass"
    for _ in range(4):
        clock.advance(hours=2)
        app.notifications.deliver()
    assert app.notifications.deliver().failed == 0, "both given up after two attempts"
    finals = [(e["details"]["account"], e["details"]["final"])
              for e in audit_events(app, AuditTag.NOTIFY_FAILURE)]
    assert sorted(finals) == [("kim", False), ("kim", True), ("lee", False), ("lee", True)]
    app.close()


def test_a_relay_without_starttls_is_refused_unless_local_and_allowed(
        world: tuple[App, int], clock: FakeClock, relays: list[Relay],
        relay_cert: tuple[Path, Path], data_dir: Path) -> None:
    app, port = world
    relays.append(relay := Relay(port, relay_cert, tls=False))
    upload(app, FILE_NAMES[0])
    next_round(app, clock)
    assert relay.messages == []
    assert "does not offer STARTTLS" in audit_events(
        app, AuditTag.NOTIFY_FAILURE)[0]["details"]["reason"]
    plain = make_app(data_dir, clock, notify_smtp_host="127.0.0.1", notify_smtp_port=port,
                     insecure_notify_smtp_without_tls=True)
    clock.advance(seconds=61)
    assert plain.notifications.deliver().sent == 1
    assert len(relay.messages) == 1 and not relay.messages[0].tls
    insecure = audit_events(plain, AuditTag.SETTING_INSECURE_USE)
    assert [e["subject"] for e in insecure] == ["setting:insecure_notify_smtp_without_tls"]
    assert audit_events(plain, AuditTag.NOTIFY_SENT)[0]["details"]["encrypted"] is False
    plain.close()
    with pytest.raises(ConfigError, match="only for a relay on this host"):
        make_app(data_dir, clock, notify_smtp_host="relay.example.org",
                 insecure_notify_smtp_without_tls=True)


def test_rate_limit_holds_messages_back_for_the_hour(
        world: tuple[App, int], clock: FakeClock, relays: list[Relay],
        relay_cert: tuple[Path, Path], data_dir: Path) -> None:
    _, port = world
    limited = make_app(data_dir, clock, notify_smtp_host="127.0.0.1", notify_smtp_port=port,
                       notify_smtp_ca_file=str(relay_cert[0]), notify_max_per_hour=2)
    relays.append(relay := Relay(port, relay_cert))
    for name in FILE_NAMES:
        upload(limited, name)
        next_round(limited, clock)
    assert len(relay.messages) == 2, "the third message of the hour waits"
    clock.advance(minutes=50)
    limited.notifications.deliver()
    assert len(relay.messages) == 3
    assert "3 files for uni" in relay.messages[2].content.decode()
    limited.close()


def test_opt_in_and_out_are_audited_and_stop_what_is_queued(
        world: tuple[App, int], clock: FakeClock, relays: list[Relay],
        relay_cert: tuple[Path, Path]) -> None:
    app, port = world
    relays.append(relay := Relay(port, relay_cert))
    service = app.notifications
    lee = actor(app, "lee")
    with pytest.raises(UsageError, match="plain e-mail address"):
        service.request_address(OPERATOR, username="lee",
                                email="lee@uni.example\r\nBcc: x@evil.example")
    with pytest.raises(UsageError, match="only partner accounts"):
        service.request_address(OPERATOR, username="clerk", email="clerk@registry.example")
    with pytest.raises(AuthorizationError):
        service.request_address(actor(app, "clerk"), username="lee", email="spy@evil.example")
    service.request_address(lee, username="lee", email="lee@uni.example")
    service.confirm_address(lee, username="lee", code=mailed_code(relay))
    subscribed = audit_events(app, AuditTag.NOTIFY_SUBSCRIBE)
    assert [(e["subject"], e["actor"], e["details"]["verified"]) for e in subscribed] == [
        ("account:lee", "lee", True)]
    assert "uni.example" not in json.dumps(subscribed), "the address is not logged"
    assert service.subscription(lee, username="lee").email == "lee@uni.example"
    upload(app, FILE_NAMES[0])
    clock.advance(seconds=INTERVAL)
    assert service.plan() == 1
    assert service.unsubscribe(lee, username="lee")
    assert not service.unsubscribe(lee, username="lee")
    assert service.deliver().dropped == 1
    assert len(relay.messages) == 1, "only the code was sent"
    assert [e["subject"] for e in audit_events(app, AuditTag.NOTIFY_UNSUBSCRIBE)] == [
        "account:lee"]


def test_admins_hear_of_proposals_and_alarms_in_one_digest(
        world: tuple[App, int], clock: FakeClock, relays: list[Relay],
        relay_cert: tuple[Path, Path]) -> None:
    from gateway import envelope
    from gateway.integrity import IntegrityViolationError

    app, port = world
    relays.append(relay := Relay(port, relay_cert))
    for name in ("root-admin", "second-admin"):
        opt_in(app, name, f"{name}@registry.example")
    key = app.keys.propose(actor(app, "root-admin"), partner="uni",
                           recipient=str(envelope.generate_identity().recipient))
    app.integrity.record_now(IntegrityViolationError(table="accounts", row="7",
                                                     reason="seal does not match"))
    next_round(app, clock)
    received = {m.recipients[0]: m.content.decode() for m in relay.messages}
    assert sorted(received) == ["root-admin@registry.example", "second-admin@registry.example"]
    # The proposer is not asked to approve their own key; the other admin is.
    text = received["second-admin@registry.example"]
    assert "Subject: Blindpost: 1 alarm, 1 approval waiting" in text
    assert f"recipient key {key.id} for partner uni awaits approval" in text
    assert "integrity violation in accounts row 7" in text
    own = received["root-admin@registry.example"]
    assert "Subject: Blindpost: 1 alarm\n" in own.replace("\r\n", "\n")
    assert "awaits approval" not in own


def test_webhook_carries_the_same_payload_signed(data_dir: Path, clock: FakeClock,
                                                 tmp_path: Path) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's hook name.
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_bytes(b"s3cret-shared-with-the-receiver\n")
    try:
        secret_file.chmod(0o644)
        app = make_app(data_dir, clock, notify_webhook_secret_file=str(secret_file),
                       notify_webhook_url=f"http://127.0.0.1:{server.server_port}/hook")
        app.notifications.plan()
        upload(app, FILE_NAMES[1])
        next_round(app, clock)
        assert received == [], "a secret readable by others is refused"
        assert "readable by others" in audit_events(
            app, AuditTag.NOTIFY_FAILURE)[0]["details"]["reason"]
        secret_file.chmod(0o600)
        clock.advance(seconds=61)
        assert app.notifications.deliver().sent == 1
    finally:
        server.shutdown()
        server.server_close()
    headers, body = received[0]
    payload = json.loads(body)
    assert payload["kind"] == "files-waiting" and payload["count"] == 1
    assert payload["partner"] == "uni"
    assert_no_file_named(body)
    secret = b"s3cret-shared-with-the-receiver"
    now = clock.now.timestamp()
    verify_webhook(secret, timestamp=headers["Blindpost-Timestamp"], body=body,
                   signature=headers["Blindpost-Signature"], now=now)
    by_hand = hmac.new(secret, headers["Blindpost-Timestamp"].encode() + b"." + body,
                       hashlib.sha256).hexdigest()
    assert headers["Blindpost-Signature"] == f"v1={by_hand}"
    with pytest.raises(DeliveryError, match="does not match"):
        verify_webhook(secret, timestamp=headers["Blindpost-Timestamp"], body=body + b" ",
                       signature=headers["Blindpost-Signature"], now=now)
    with pytest.raises(DeliveryError, match="too far"):
        verify_webhook(secret, timestamp=headers["Blindpost-Timestamp"], body=body,
                       signature=headers["Blindpost-Signature"], now=now + 3600)
    app.close()


def test_two_nodes_plan_a_round_once_and_send_each_message_once(
        world: tuple[App, int], clock: FakeClock, relays: list[Relay],
        relay_cert: tuple[Path, Path], data_dir: Path) -> None:
    app, port = world
    other = make_app(data_dir, clock, notify_smtp_host="127.0.0.1", notify_smtp_port=port,
                     notify_smtp_ca_file=str(relay_cert[0]))
    relays.append(relay := Relay(port, relay_cert))
    upload(app, FILE_NAMES[0])
    clock.advance(seconds=INTERVAL)
    assert app.notifications.plan() == 1
    assert other.notifications.plan() == 0, "the round was planned by the first node"
    app.notifications.deliver()
    other.notifications.deliver()
    assert len(relay.messages) == 1
    other.close()


def test_the_relay_login_reads_its_password_from_a_private_file(
        world: tuple[App, int], clock: FakeClock, relays: list[Relay],
        relay_cert: tuple[Path, Path], data_dir: Path, tmp_path: Path) -> None:
    _, port = world
    password = tmp_path / "relay.password"
    password.write_text("wrong horse\n")
    password.chmod(0o600)
    app = make_app(data_dir, clock, notify_smtp_host="127.0.0.1", notify_smtp_port=port,
                   notify_smtp_ca_file=str(relay_cert[0]), notify_smtp_user="blindpost",
                   notify_smtp_password_file=str(password))
    relays.append(relay := Relay(port, relay_cert, login=("blindpost", "correct horse")))
    upload(app, FILE_NAMES[0])
    next_round(app, clock)
    assert relay.messages == []
    reason = audit_events(app, AuditTag.NOTIFY_FAILURE)[0]["details"]["reason"]
    assert reason == "the relay refused: SMTPAuthenticationError 535"
    assert "horse" not in json.dumps(audit_events(app, AuditTag.NOTIFY_FAILURE))
    password.write_text("correct horse\n")
    clock.advance(seconds=61)
    assert app.notifications.deliver().sent == 1 and len(relay.messages) == 1
    app.close()


def test_a_test_message_goes_out_at_once_and_reports_the_relay_s_answer(
        world: tuple[App, int], relays: list[Relay], relay_cert: tuple[Path, Path]) -> None:
    app, port = world
    with pytest.raises(DeliveryError, match="cannot reach the relay"):
        app.notifications.send_test(OPERATOR, username="lee")
    relays.append(relay := Relay(port, relay_cert))
    assert app.notifications.send_test(OPERATOR, username="lee") == "lee@uni-research.example"
    assert [m.recipients for m in relay.messages] == [["lee@uni-research.example"]]
    assert "Subject: Blindpost: test notification" in relay.messages[0].content.decode()
    assert [e["details"]["topic"] for e in audit_events(app, AuditTag.NOTIFY_SENT)] == ["test"]
    with pytest.raises(UsageError, match="notifications for root-admin are off"):
        app.notifications.send_test(OPERATOR, username="root-admin")


def test_password_file_must_be_private(tmp_path: Path) -> None:
    from gateway.notify.settings import read_secret_file

    secret = tmp_path / "relay.password"
    secret.write_text("hunter2\n")
    secret.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_secret_file(str(secret), key="notify_smtp_password_file")
    secret.chmod(0o600)
    assert read_secret_file(str(secret), key="notify_smtp_password_file") == b"hunter2"


def test_two_nodes_on_postgresql_race_and_send_each_message_once(
        tmp_path: Path, postgres_url: str, clock: FakeClock, relays: list[Relay],
        relay_cert: tuple[Path, Path], cheap_password_hashes: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {"BLINDPOST_DATABASE_URL": postgres_url}
    initialise(tmp_path / "var", admin="root-admin", environ=environ)
    port = free_port()
    settings = load_settings(data_dir=tmp_path / "var", environ=environ, overrides={
        "notify_smtp_from": "blindpost@registry.example", "notify_interval_seconds": INTERVAL,
        "notify_smtp_host": "127.0.0.1", "notify_smtp_port": port,
        "notify_smtp_ca_file": str(relay_cert[0])})
    nodes = [App(settings, clock=clock), App(settings, clock=clock)]
    app = nodes[0]
    partner_with_key(app, "uni")
    account(app, "clerk", Role.STAFF)
    account(app, "lee", Role.PARTNER, partner="uni")
    opt_in(app, "lee", "lee@uni.example")
    app.notifications.plan()
    relays.append(relay := Relay(port, relay_cert))

    def together(step: str) -> list[Any]:
        """Run ``step`` on both nodes at the same moment; return their results."""
        barrier, results = threading.Barrier(2), [None, None]

        def run(index: int) -> None:
            barrier.wait()
            results[index] = getattr(nodes[index].notifications, step)()

        threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    for rounds, name in enumerate(FILE_NAMES, start=1):
        upload(app, name)
        clock.advance(seconds=INTERVAL)
        assert sorted(together("plan")) == [0, 1], "one node plans each round"
        reports = together("deliver")
        assert sum(report.sent for report in reports) == 1
        assert len(relay.messages) == rounds
    # An address code asked for on both nodes at once. Each holds on after reading the
    # count, until the other has read it too or a second has passed: without the log's
    # lock both would read "none sent" and both mail; with it the second reads only
    # after the first committed, and waits out the cooldown.
    lee, both_read = actor(app, "lee"), threading.Barrier(2)
    for node in nodes:
        counted = node.ledger.address_codes

        def held(username: str, session: Any, counted: Any = counted) -> Any:
            sent = counted(username, session)
            with contextlib.suppress(threading.BrokenBarrierError):
                both_read.wait(timeout=1)
            return sent

        monkeypatch.setattr(node.ledger, "address_codes", held)

    def ask(index: int) -> object:
        try:
            return nodes[index].notifications.request_address(
                lee, username="lee", email="dr.lee@clinic.example")
        except RateLimitedError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=2) as pool:
        asked = list(pool.map(ask, range(2)))
    assert sum(isinstance(a, RateLimitedError) for a in asked) == 1
    assert relay.messages[-1].recipients == ["dr.lee@clinic.example"]
    assert len(relay.messages) == len(FILE_NAMES) + 1
    for node in nodes:
        node.close()


def test_a_running_sftp_service_notifies_and_its_uploads_never_wait_for_the_relay(
        tmp_path: Path, relays: list[Relay], relay_cert: tuple[Path, Path]) -> None:
    from tests.integration.gateway_process import GatewayProcess, real_code, wait_for
    from tests.unit.sftp_server.harness import Installation, paramiko_sftp

    port = free_port()
    # A checkpoint timer of 10 s makes the housekeeping tick 1 s.
    inst = Installation(tmp_path, environ={
        "BLINDPOST_NOTIFY_SMTP_HOST": "127.0.0.1", "BLINDPOST_NOTIFY_SMTP_PORT": str(port),
        "BLINDPOST_NOTIFY_SMTP_FROM": "blindpost@registry.example",
        "BLINDPOST_NOTIFY_SMTP_CA_FILE": str(relay_cert[0]),
        "BLINDPOST_NOTIFY_INTERVAL_SECONDS": "1", "BLINDPOST_AUDIT_CHECKPOINT_SECONDS": "10"})
    inst.add_partner("uni")
    clerk = inst.add_user("clerk", Role.STAFF)
    inst.add_user("lee", Role.PARTNER, partner="uni")
    opt_in(inst.app, "lee", "lee@uni.example")
    inst.app.notifications.plan()
    server = GatewayProcess.sftp(inst, workers=1)
    try:
        with paramiko_sftp(inst, clerk, code=real_code(clerk)) as session:
            # No relay listens: the upload goes through, and the attempt is audited.
            with session.open(f"/uni/{FILE_NAMES[0]}", "wb") as handle:
                handle.write(b"PATIENT 123\n")
            wait_for(lambda: bool(audit_events(inst.app, AuditTag.NOTIFY_FAILURE)), 30,
                     "a failed attempt")
            relays.append(relay := Relay(port, relay_cert))
            with session.open(f"/uni/{FILE_NAMES[1]}", "wb") as handle:
                handle.write(b"PATIENT 456\n")
            # The next round's count replaces the failed message and goes out at once.
            wait_for(lambda: bool(relay.messages), 30, "the message at the relay")
    finally:
        server.stop()
        inst.close()
    assert len(relay.messages) == 1 and relay.messages[0].tls
    assert "2 files for uni" in relay.messages[0].content.decode()


# -- Addresses: confirmed by their holder, sealed, never forged or put back ------------------


class RefusingInbox(Inbox):
    """A relay that refuses every recipient, naming the address in its answer (as real
    relays do: "550 5.1.1 <x@y>: Recipient address rejected")."""

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any,  # noqa: N802  # aiosmtpd's hook name.
                          address: str, rcpt_options: list[str]) -> str:
        return f"550 5.1.1 <{address}>: Recipient address rejected"


def test_a_partner_user_confirms_their_address_with_the_code_mailed_to_it(
        world: tuple[App, int], clock: FakeClock, relays: list[Relay],
        relay_cert: tuple[Path, Path]) -> None:
    app, port = world
    relays.append(relay := Relay(port, relay_cert))
    lee = actor(app, "lee")
    service = app.notifications
    service.request_address(lee, username="lee", email="dr.lee@clinic.example")
    assert [m.recipients for m in relay.messages] == [["dr.lee@clinic.example"]]
    code = re.search(rb"Your code: (\d{8})", relay.messages[0].content)
    assert code is not None
    # Until the code is typed, notifications still go to the address in force.
    assert service.subscription(lee, username="lee").email == "lee@uni-research.example"
    with pytest.raises(UsageError, match="not the code"):
        service.confirm_address(lee, username="lee", code="12345678"
                                if code.group(1) != b"12345678" else "87654321")
    service.confirm_address(lee, username="lee", code=code.group(1).decode())
    upload(app, FILE_NAMES[0])
    next_round(app, clock)
    assert relay.messages[-1].recipients == ["dr.lee@clinic.example"]
    events = json.dumps([audit_events(app, tag) for tag in (
        AuditTag.NOTIFY_VERIFY_SENT, AuditTag.NOTIFY_VERIFY_FAILURE,
        AuditTag.NOTIFY_SUBSCRIBE)])
    assert "clinic.example" not in events and code.group(1).decode() not in events
    # A code is for one address and one account: another account cannot use it.
    with pytest.raises(AuthorizationError):
        service.confirm_address(actor(app, "clerk"), username="lee", code="00000000")


def test_address_codes_are_limited_per_account_and_a_deleted_row_lifts_nothing(
        world: tuple[App, int], clock: FakeClock, relays: list[Relay],
        relay_cert: tuple[Path, Path], data_dir: Path) -> None:
    app, port = world
    relays.append(relay := Relay(port, relay_cert))
    lee = actor(app, "lee")

    def ask(on: App = app) -> dt.datetime:
        return on.notifications.request_address(lee, username="lee",
                                                email="dr.lee@clinic.example")

    # Four asked at once (a held-down button): one code goes out, the rest wait.
    barrier = threading.Barrier(4)

    def at_once(_: int) -> object:
        barrier.wait()
        try:
            return ask()
        except RateLimitedError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(at_once, range(4)))
    refused = [r for r in results if isinstance(r, RateLimitedError)]
    assert len(refused) == 3 and len(relay.messages) == 1
    first = clock()
    assert all(r.retry_at == first + dt.timedelta(minutes=1) for r in refused)
    clock.advance(seconds=30)
    with pytest.raises(RateLimitedError, match=r"at most 3 an hour, 1 minute apart; ask "
                                               r"again after 09:01:00 UTC"):
        ask()
    clock.advance(seconds=31)
    ask()
    clock.advance(minutes=2)
    ask()
    # The fourth within the hour waits for the first to be an hour old, even after a
    # database writer deletes the pending code and from another process.
    clock.advance(minutes=2)
    with app.engine.begin() as connection:
        connection.execute(text("DELETE FROM notification_verifications"))
    other = make_app(data_dir, clock, notify_smtp_host="127.0.0.1", notify_smtp_port=port,
                     notify_smtp_ca_file=str(relay_cert[0]))
    try:
        with pytest.raises(RateLimitedError) as limited:
            ask(other)
    finally:
        other.close()
    assert limited.value.retry_at == first + dt.timedelta(hours=1)
    assert len(relay.messages) == 3
    clock.now = first + dt.timedelta(hours=1)
    ask()
    assert len(relay.messages) == 4
    events = audit_events(app, AuditTag.NOTIFY_VERIFY_LIMITED)
    assert len(events) == 5 and {e["subject"] for e in events} == {"account:lee"}
    assert "clinic.example" not in json.dumps(events)
    # Per account: another account is not held back by lee's codes.
    app.notifications.request_address(actor(app, "root-admin"), username="root-admin",
                                      email="root@registry.example")
    assert len(relay.messages) == 5


def mailed_code(relay: Relay) -> str:
    """The code in the last message the relay received."""
    found = re.search(rb"Your code: (\d{8})", relay.messages[-1].content)
    assert found is not None
    return found.group(1).decode()


def test_an_address_an_admin_gives_waits_for_its_holder_s_code(
        world: tuple[App, int], relays: list[Relay], relay_cert: tuple[Path, Path]) -> None:
    app, port = world
    relays.append(relay := Relay(port, relay_cert))
    service, lee = app.notifications, actor(app, "lee")
    # As `blindpost user notify lee --email …` asks it (as the operator).
    service.request_address(OPERATOR, username="lee", email="lee@elsewhere.example")
    assert relay.messages[-1].recipients == ["lee@elsewhere.example"]
    code = mailed_code(relay)
    assert service.subscription(lee, username="lee").email == "lee@uni-research.example"
    assert service.pending_address(lee, username="lee") == "lee@elsewhere.example"
    # Whoever gave the address, or learned the code, cannot confirm it for lee.
    for other in (OPERATOR, actor(app, "root-admin")):
        with pytest.raises(AuthorizationError, match="only lee can confirm"):
            service.confirm_address(other, username="lee", code=code)
    assert service.subscription(lee, username="lee").email == "lee@uni-research.example"
    service.confirm_address(lee, username="lee", code=code)
    assert service.subscription(lee, username="lee").email == "lee@elsewhere.example"
    assert [(e["actor"], e["details"]["reason"]) for e in audit_events(
        app, AuditTag.NOTIFY_VERIFY_FAILURE)] == [("local:root", "not the account's holder"),
                                                  ("root-admin", "not the account's holder")]
    assert [e["actor"] for e in audit_events(app, AuditTag.NOTIFY_VERIFY_SENT)] == [
        "local:root"]
    assert [e["actor"] for e in audit_events(app, AuditTag.NOTIFY_SUBSCRIBE)] == ["lee"]


def test_a_forged_or_restored_address_receives_nothing_and_is_reported(
        world: tuple[App, int], clock: FakeClock, relays: list[Relay],
        relay_cert: tuple[Path, Path]) -> None:
    app, port = world
    relays.append(relay := Relay(port, relay_cert))
    with app.engine.connect() as connection:
        kept = [dict(r._mapping) for r in connection.execute(
            text("SELECT * FROM notification_subscriptions"))]
    # A database writer redirects lee's address to theirs: the seal no longer matches.
    with app.engine.begin() as connection:
        connection.execute(text("UPDATE notification_subscriptions SET email = "
                                "'spy@evil.example'"))
    upload(app, FILE_NAMES[0])
    next_round(app, clock)
    assert relay.messages == []
    found = [e["details"] for e in audit_events(app, AuditTag.INTEGRITY_VIOLATION)]
    assert found and found[-1]["table"] == "notification_subscriptions"
    # The owner changes the address (through the gateway); the old row, put back with its
    # valid seal, is not the current version and receives nothing either.
    opt_in(app, "lee", "lee@new.example")
    with app.engine.begin() as connection:
        connection.execute(text("UPDATE notification_subscriptions SET email = :email, "
                                "seal = :seal WHERE account_id = :account_id"), kept[0])
    upload(app, FILE_NAMES[1])
    next_round(app, clock)
    assert relay.messages == []
    assert "not current" in audit_events(
        app, AuditTag.INTEGRITY_VIOLATION)[-1]["details"]["reason"]
    # An address inserted where none is in force is refused the same way.
    with app.engine.begin() as connection:
        connection.execute(text("DELETE FROM notification_subscriptions"))
        lee_id = connection.execute(text("SELECT id FROM accounts WHERE username = 'lee'"))
        connection.execute(text("INSERT INTO notification_subscriptions (account_id, email, "
                                "created_at, seal) VALUES (:id, 'spy@evil.example', "
                                "'2026-01-01 00:00:00', NULL)"), {"id": lee_id.scalar()})
    upload(app, FILE_NAMES[2])
    next_round(app, clock)
    assert relay.messages == []


def test_a_message_written_into_the_outbox_is_never_sent(
        world: tuple[App, int], clock: FakeClock, relays: list[Relay],
        relay_cert: tuple[Path, Path]) -> None:
    app, port = world
    relays.append(relay := Relay(port, relay_cert))
    upload(app, FILE_NAMES[0])
    clock.advance(seconds=INTERVAL)
    assert app.notifications.plan() == 1
    # The queued message's text is replaced with a phishing one; its MAC no longer holds.
    with app.engine.begin() as connection:
        connection.execute(text("UPDATE notification_outbox SET subject = 'Re-enter your "
                                "key at evil.example'"))
    assert app.notifications.deliver().dropped == 1
    assert relay.messages == []
    assert audit_events(app, AuditTag.INTEGRITY_VIOLATION)[-1]["details"]["table"] == (
        "notification_outbox")


def test_a_passkey_added_is_told_to_its_account_and_names_nothing_else(
        world: tuple[App, int], clock: FakeClock, relays: list[Relay],
        relay_cert: tuple[Path, Path]) -> None:
    app, port = world
    relays.append(relay := Relay(port, relay_cert))
    lee = actor(app, "lee")
    with app.transaction() as session:
        app.audit.record(session, tag=AuditTag.ACCOUNT_PASSKEY_ADD, actor=lee,
                         subject="account:lee", details={"passkey": 1, "name": "PATIENT"})
    next_round(app, clock)
    assert len(relay.messages) == 1
    text_sent = relay.messages[0].content.decode()
    assert "a passkey was added to your account" in text_sent
    assert relay.messages[0].recipients == ["lee@uni-research.example"]
    assert "PATIENT" not in text_sent, "the passkey's name is not told"


def test_a_refused_recipient_is_logged_without_the_address(
        world: tuple[App, int], clock: FakeClock, relays: list[Relay],
        relay_cert: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    app, port = world
    relays.append(Relay(port, relay_cert, inbox=RefusingInbox()))
    upload(app, FILE_NAMES[0])
    next_round(app, clock)
    failures = audit_events(app, AuditTag.NOTIFY_FAILURE)
    assert len(failures) == 1 and "refused" in failures[0]["details"]["reason"]
    assert "uni-research.example" not in json.dumps(failures)
    assert "uni-research.example" not in caplog.text
    with app.read() as session:
        errors = session.scalars(select(NotificationOutbox.last_error)).all()
    assert errors and not any("uni-research" in (e or "") for e in errors)
    # The address code's failure is told without it too.
    with pytest.raises(UsageError, match="could not be sent"):
        app.notifications.request_address(actor(app, "lee"), username="lee",
                                          email="new@clinic.example")
    assert "clinic.example" not in caplog.text
