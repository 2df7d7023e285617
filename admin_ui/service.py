"""Starting and stopping the console: uvicorn in a thread of this process.

``blindpost serve`` calls :func:`start` through the ``blindpost.services`` entry point;
``blindpost console`` runs it alone. The console serves TLS itself when
``console_tls_cert`` and ``console_tls_key`` are set; otherwise it speaks plain HTTP and
belongs behind the TLS reverse proxy in ``deploy/`` (or on loopback for one person), and
says so when it starts.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import socket
import threading
import time

import uvicorn

from admin_ui.web import create_app
from gateway.app import App
from gateway.config import Settings, address_in_use, parse_listen
from gateway.errors import StartupError

log = logging.getLogger(__name__)
START_SECONDS = 30.0
STOP_SECONDS = 5


class RunningConsole:
    """A started console."""

    def __init__(self, settings: Settings, sock: socket.socket) -> None:
        self._sock = sock
        self.settings = settings
        self._app = App(settings)
        self._app.check_ready()
        config = uvicorn.Config(
            create_app(self._app), log_config=None, access_log=False, server_header=False,
            ssl_certfile=settings.console_tls_cert or None,
            ssl_keyfile=settings.console_tls_key or None,
            # X-Forwarded-For is believed only from a proxy on this host (deploy/).
            proxy_headers=True, forwarded_allow_ips="127.0.0.1,::1",
            # An idle keep-alive connection must not hold up a stop.
            timeout_graceful_shutdown=STOP_SECONDS)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="console", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the console failed to start; see the log above")
            time.sleep(0.05)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    @property
    def origin(self) -> str:
        return self.settings.effective_console_origin

    @property
    def notice(self) -> str:
        """What the operator should know at start: where to open it, and about TLS."""
        if self.settings.console_tls:
            return f"open {self.origin}"
        return (f"open {self.origin} — plain HTTP: fine on loopback; anywhere else put it "
                "behind the TLS reverse proxy in deploy/ (or set console_tls_cert/key)")

    def stop(self) -> None:
        self._server.should_exit = True

    def wait(self) -> None:
        self._thread.join()
        self._sock.close()
        self._app.close()


def bind(listen: str) -> socket.socket:
    host, port = parse_listen(listen, key="console_listen")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(address_in_use("console_listen", listen)) from exc
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def start(settings: Settings) -> RunningConsole:
    """Start the console; return once it accepts connections.

    With port 0 the real port replaces it in the settings, so the origin that passkeys
    and the CSRF checks expect is the one the browser will use.
    """
    sock = bind(settings.console_listen)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in str(host) else str(host)
    settings = dataclasses.replace(settings, console_listen=f"{shown}:{port}")
    running = RunningConsole(settings, sock)
    if not settings.console_tls:
        log.warning("console: no TLS (console_tls_cert/key unset); it expects the reverse "
                    "proxy in deploy/ in front of it")
    return running
