"""An SFTP node's /metrics: its open connections and store errors, next to the audit counters."""

from __future__ import annotations

import io
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from gateway.db.models import Role
from tests.unit.sftp_server.harness import Installation, paramiko_sftp

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return {line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
            for line in lines if line and not line.startswith("#")}


def _wait_for(port: int, name: str, value: float) -> dict[str, float]:
    deadline = time.monotonic() + 10
    while (scraped := _scrape(port))[name] != value and time.monotonic() < deadline:
        time.sleep(0.1)
    return scraped


def test_node_metrics(tmp_path: Path) -> None:
    port = _free_port()
    inst = Installation(tmp_path, metrics_listen=f"127.0.0.1:{port}")
    try:
        inst.add_partner("uni")
        clerk = inst.add_user("clerk", Role.STAFF)
        lee = inst.add_user("lee", Role.PARTNER, partner="uni")
        inst.start()
        assert _scrape(port)["blindpost_sftp_connections"] == 0
        with socket.create_connection(("127.0.0.1", inst.port)):
            assert _wait_for(port, "blindpost_sftp_connections", 1)[
                "blindpost_sftp_connections"] == 1
        with paramiko_sftp(inst, clerk) as client:
            client.putfo(io.BytesIO(b"rows"), "/uni/a.csv", confirm=False)
        # A store that fails to read: the object's file replaced by a directory.
        [stored] = inst.app.store.list_objects()
        path = inst.app.store.object_path(stored.object_id)  # type: ignore[attr-defined]
        path.unlink()
        path.mkdir()
        with paramiko_sftp(inst, lee) as client, pytest.raises(OSError):
            client.open("a.csv.age").read()
        scraped = _wait_for(port, "blindpost_sftp_connections", 0)
        assert scraped["blindpost_store_errors_total"] == 1
        assert scraped["blindpost_uploads_total"] == 1
        assert scraped["blindpost_signins_total"] == 2
    finally:
        inst.close()


def test_worker_processes_report_to_one_endpoint(tmp_path: Path) -> None:
    """With worker processes, the supervisor's endpoint sums every worker's counts."""
    from sftp_server.service import start

    port = _free_port()
    inst = Installation(tmp_path, metrics_listen=f"127.0.0.1:{port}", sftp_workers=2)
    server = start(inst.settings)
    try:
        assert server.workers == 2
        sockets = [socket.create_connection(server.address) for _ in range(4)]
        assert _wait_for(port, "blindpost_sftp_connections", 4)[
            "blindpost_sftp_connections"] == 4
        for sock in sockets:
            sock.close()
        assert _wait_for(port, "blindpost_sftp_connections", 0)[
            "blindpost_sftp_connections"] == 0
        assert _scrape(port)["blindpost_store_errors_total"] == 0
    finally:
        server.stop()
        server.wait()
        inst.close()
