"""Metrics derived from the audit log, read incrementally; the endpoint; JSON logs."""

from __future__ import annotations

import json
import logging
import socket
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gateway.app import App
from gateway.config import Settings, load_settings
from gateway.db.models import Role
from gateway.logs import configure_logging
from gateway.metrics import AuditCollector, serve_metrics
from tests.conftest import FakeClock
from tests.unit.gateway.factories import account, actor, partner_with_key


def _scrape(registry: CollectorRegistry) -> dict[str, float]:
    values = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def _upload(app: App, name: str, data: bytes) -> None:
    upload = app.transfers.begin_upload(actor(app, "clerk"), partner="uni", name=name)
    upload.write(data)
    upload.commit()


def _download(app: App, name: str) -> None:
    download = app.transfers.open_download(actor(app, "lee"), name)
    download.read_at(0, download.size)
    download.close()


def test_counters_come_from_the_audit_log_incrementally(app: App, clock: FakeClock) -> None:
    partner_with_key(app)
    account(app, "clerk", Role.STAFF)
    account(app, "lee", Role.PARTNER, partner="uni")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AuditCollector(app))
    _upload(app, "a.csv", b"x" * 1000)
    with app.transaction() as session:
        app.audit.checkpoint(session)
    clock.advance(seconds=42)
    first = _scrape(registry)
    assert first["blindpost_uploads_total"] == 1
    upload_bytes = first["blindpost_upload_bytes_total"]
    assert upload_bytes > 1000  # Ciphertext: header and tags on top of the plaintext.
    assert first["blindpost_downloads_total"] == 0
    assert first["blindpost_audit_checkpoint_age_seconds"] == 42

    _download(app, "a.csv.age")
    _upload(app, "b.csv", b"y" * 10)
    second = _scrape(registry)
    assert second["blindpost_uploads_total"] == 2
    assert second["blindpost_downloads_total"] == 1
    assert second["blindpost_download_bytes_total"] == upload_bytes
    with app.transaction() as session:
        assert second["blindpost_audit_entries"] == app.audit.size(session)

    # A second collector (another worker or node) reading the same log agrees.
    other = CollectorRegistry(auto_describe=False)
    other.register(AuditCollector(App(app.settings, clock=clock)))
    assert {k: v for k, v in _scrape(other).items() if "age" not in k} == {
        k: v for k, v in second.items() if "age" not in k}


def test_sign_in_failures_and_lockouts_are_counted(app: App) -> None:
    partner_with_key(app)
    _, key = account(app, "lee", Role.PARTNER, partner="uni")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AuditCollector(app))
    for _ in range(app.settings.lockout_threshold):
        attempt = app.auth.begin(source="192.0.2.1")
        app.auth.accept_public_key(attempt, username="lee", key_blob=key.blob)
        with pytest.raises(Exception, match="wrong code"):
            app.auth.accept_code(attempt, username="lee", code="000000")
    values = _scrape(registry)
    assert values["blindpost_signin_failures_total"] == app.settings.lockout_threshold
    # The account only: failures after a verified key never count against the address.
    assert values["blindpost_lockouts_total"] == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_endpoint_serves_numbers_only(app: App) -> None:
    partner_with_key(app)
    account(app, "clerk", Role.STAFF)
    _upload(app, "patient-list.csv", b"z")
    endpoint = serve_metrics(f"127.0.0.1:{_free_port()}", [AuditCollector(app)])
    try:
        host, port = endpoint.address
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        endpoint.close()
    assert "blindpost_uploads_total 1.0" in text
    for private in ("patient-list", "clerk", "uni"):
        assert private not in text


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_json_logs(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    settings: Settings = load_settings(data_dir=tmp_path, environ={},  # type: ignore[arg-type]
                                       overrides={"log_format": "json"})
    configure_logging(settings, process="sftp[0]")
    logging.getLogger("sftp_server.listener").info("closing idle session of %s", "lee")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("gateway.transfers").exception("upload failed")
    logging.getLogger("paramiko.transport").info("library chatter stays out")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["message"] for line in lines] == ["closing idle session of lee",
                                                   "upload failed"]
    assert lines[0]["level"] == "info"
    assert lines[0]["process"] == "sftp[0]"
    assert lines[0]["logger"] == "sftp_server.listener"
    assert "ValueError: boom" in lines[1]["exc"]
