"""The witness's HTTP interface: statuses, content types, keep-alive, the monitor URL."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.cosignature import Cosigner
from gateway.witness.server import WitnessServer
from gateway.witness.service import Witness
from gateway.witness.state import WitnessState, origin_hash
from tests.unit.witness.test_witness_service import ORIGIN, Log


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[WitnessServer, Log]]:
    log = Log(20)
    witness = Witness(cosigner=Cosigner("witness.example/w1", Ed25519PrivateKey.generate()),
                      logs={ORIGIN: [log.verifier]}, state=WitnessState(tmp_path))
    server = WitnessServer(("127.0.0.1", 0), witness)
    thread = server.serve_in_thread()
    yield server, log
    server.shutdown()
    server.server_close()
    thread.join()


def _exchange(connection: http.client.HTTPConnection, method: str, path: str,
              body: bytes | None = None) -> tuple[int, str, bytes]:
    connection.request(method, path, body=body)
    response = connection.getresponse()
    return response.status, response.getheader("Content-Type") or "", response.read()


def test_statuses_over_http_on_one_connection(served: tuple[WitnessServer, Log]) -> None:
    server, log = served
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    monitor = f"/{origin_hash(ORIGIN)}/checkpoint"
    assert _exchange(connection, "GET", monitor)[0] == 404
    status, _, body = _exchange(connection, "POST", "/add-checkpoint", log.request(0, 6))
    assert status == 200 and body.startswith("\u2014 witness.example/w1 ".encode())
    assert _exchange(connection, "POST", "/add-checkpoint", log.request(2, 9)) == (
        409, "text/x.tlog.size", b"6\n")
    assert _exchange(connection, "POST", "/add-checkpoint", b"old x\n\n")[0] == 400
    status, _, served_note = _exchange(connection, "GET", monitor)
    assert status == 200 and served_note.decode().startswith(f"{ORIGIN}\n6\n")
    assert _exchange(connection, "POST", "/elsewhere", b"")[0] == 404
    connection.close()


def test_bodies_must_have_a_bounded_length(served: tuple[WitnessServer, Log]) -> None:
    server, _ = served
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.putrequest("POST", "/add-checkpoint")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    assert connection.getresponse().status == 411
    connection.close()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.putrequest("POST", "/add-checkpoint")
    connection.putheader("Content-Length", str(10**9))
    connection.endheaders()
    assert connection.getresponse().status == 413
    connection.close()
