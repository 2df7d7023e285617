"""The witness's HTTP interface, on the standard library's threading HTTP server.

``POST /add-checkpoint`` (tlog-witness v1.0.0) and ``GET /<origin hash>/checkpoint``
(the latest cosigned checkpoint of a log, for monitors). Meant to sit behind a reverse
proxy that terminates TLS; every response carries a length, so connections are kept
alive as the spec recommends.
"""

from __future__ import annotations

import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from gateway.errors import GatewayError
from gateway.witness.protocol import (
    ADD_CHECKPOINT_PATH,
    MAX_REQUEST_BYTES,
    format_cosignature_lines,
)
from gateway.witness.service import Witness, WitnessRefusalError

log = logging.getLogger(__name__)
_MONITOR_PATH = re.compile(r"/([0-9a-f]{64})/checkpoint")
# A client that stops sending mid-request must not hold a thread for ever.
SOCKET_TIMEOUT_SECONDS = 30


class WitnessServer(ThreadingHTTPServer):
    """A threading HTTP server that knows its :class:`Witness`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], witness: Witness) -> None:
        self.witness = witness
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def serve_in_thread(self) -> threading.Thread:
        """Serve until :meth:`shutdown`, in a background thread."""
        thread = threading.Thread(target=self.serve_forever, name="witness-http", daemon=True)
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "blindpost-witness"
    sys_version = ""
    timeout = SOCKET_TIMEOUT_SECONDS
    server: WitnessServer

    def do_POST(self) -> None:  # The name http.server dispatches to.
        if self.path != ADD_CHECKPOINT_PATH:
            self._send(404, b"not found\n")
            return
        body = self._body()
        if body is None:
            return
        try:
            lines = self.server.witness.add_checkpoint(body)
        except WitnessRefusalError as refusal:
            self._send(refusal.status, refusal.body, refusal.content_type)
            return
        except GatewayError as exc:
            log.error("add-checkpoint failed: %s", exc.diagnostics())
            self._send(500, b"the witness cannot record checkpoints right now\n")
            return
        self._send(200, format_cosignature_lines(lines))

    def do_GET(self) -> None:
        match = _MONITOR_PATH.fullmatch(self.path)
        note = self.server.witness.latest(match.group(1)) if match else None
        if note is None:
            self._send(404, b"not found\n")
            return
        self._send(200, note.encode())

    def _body(self) -> bytes | None:
        length_text = self.headers.get("Content-Length")
        # A body that is not read must not be taken for the next request on the connection.
        self.close_connection = True
        if self.headers.get("Transfer-Encoding") or length_text is None:
            self._send(411, b"a Content-Length is required\n")
            return None
        if not length_text.isdigit():
            self._send(400, b"invalid Content-Length\n")
            return None
        length = int(length_text)
        if length > MAX_REQUEST_BYTES:
            self._send(413, b"request body too large\n")
            return None
        body = self.rfile.read(length)
        if len(body) != length:
            return None  # The client went away mid-body.
        self.close_connection = self.headers.get("Connection", "").lower() == "close"
        return body

    def _send(self, status: int, body: bytes,
              content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # http.server's name.
        log.info("%s %s", self.address_string(), format % args)
