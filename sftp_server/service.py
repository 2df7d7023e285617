"""Starting and stopping the SFTP server: in this process, or as worker processes.

One Python process is held to about one core by the GIL, so the server runs several
worker processes on one port: each binds its own ``SO_REUSEPORT`` socket and the kernel
spreads connections among them. The parent only holds the port (a bound socket that
never listens, so it receives no connections), restarts a worker that dies, and
coordinates shutdown. Everything that must hold across workers (last TOTP step, failure
counts, lockouts, download counts) is in the database; connection counts are in shared
memory (:class:`~sftp_server.listener.LimitTable`).

``blindpost serve`` calls :func:`start` through the ``blindpost.services`` entry point.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from multiprocessing.context import SpawnProcess
from typing import Any, Protocol

import paramiko

from gateway.app import App
from gateway.config import Settings
from gateway.retention import UPLOAD_GRACE
from sftp_server.listener import (
    ROW,
    ConnectionLimits,
    LimitTable,
    Listener,
    bind_listener,
)
from sftp_server.transport import load_host_key

log = logging.getLogger(__name__)

WORKER_START_SECONDS = 60.0
SUPERVISE_SECONDS = 1.0
STOP_SECONDS = 15.0


class Running(Protocol):
    """A started SFTP server."""

    @property
    def address(self) -> tuple[str, int]:
        """The host and port it listens on (the real port when port 0 was asked)."""
        ...

    @property
    def workers(self) -> int: ...

    def stop(self) -> None:
        """Ask the server to stop: stop accepting, close sessions, abort open uploads."""
        ...

    def wait(self) -> None:
        """Block until the server has stopped."""
        ...


def worker_count(settings: Settings) -> int:
    return settings.sftp_workers or os.cpu_count() or 1


def start(settings: Settings, *, app: App | None = None) -> Running:
    """Start the SFTP server; return once it accepts connections.

    With ``app`` (tests inject one with a fake clock) or a single worker, the server
    runs in threads of this process; otherwise in worker processes.
    """
    host_key = load_host_key(settings.host_key_path)
    owned = app is None
    current = app or App(settings)
    current.check_ready()
    sweep_partials(current)
    if app is not None or worker_count(settings) == 1:
        return InProcessServer(current, host_key=host_key, owns_app=owned)
    current.close()
    return WorkerPool(settings, worker_count(settings))


def sweep_partials(app: App) -> None:
    """Remove partial uploads abandoned by a crash (older than the grace, since other
    workers or nodes may be mid-upload right now)."""
    removed = app.store.sweep_partials(older_than=app.clock() - UPLOAD_GRACE)
    if removed:
        log.info("removed %d partial uploads left by an earlier crash", len(removed))


def _limits(settings: Settings, table: LimitTable, row: int) -> ConnectionLimits:
    return ConnectionLimits(table, row=row, total=settings.sftp_max_connections,
                            per_source=settings.sftp_max_connections_per_source)


class InProcessServer:
    """The server as threads of the calling process."""

    def __init__(self, app: App, *, host_key: paramiko.PKey, owns_app: bool) -> None:
        self._app = app
        self._owns_app = owns_app
        table = LimitTable(multiprocessing.get_context("spawn").Array("i", ROW),
                           os.urandom(16), 1)
        sock = bind_listener(app.settings.sftp_listen, reuse_port=False)
        self._listener = Listener(app, sock, host_key=host_key,
                                  limits=_limits(app.settings, table, 0))
        self._thread = threading.Thread(target=self._listener.serve_forever,
                                        name="sftp-listener", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return self._listener.address

    @property
    def workers(self) -> int:
        return 1

    def stop(self) -> None:
        self._listener.stop()

    def wait(self) -> None:
        self._thread.join()
        if self._owns_app:
            self._app.close()


class WorkerPool:
    """The server as ``count`` worker processes sharing one port."""

    def __init__(self, settings: Settings, count: int) -> None:
        self._settings = settings
        self._context = multiprocessing.get_context("spawn")
        # Bound (never listening) with SO_REUSEPORT: fixes the port, even port 0, for
        # the workers, and keeps it while a worker is restarted.
        self._reservation = bind_listener(settings.sftp_listen, reuse_port=True)
        self._table = LimitTable(self._context.Array("i", count * ROW), os.urandom(16), count)
        self._stopping = self._context.Event()
        self._ready: Any = self._context.Queue()
        self._processes = [self._spawn(index) for index in range(count)]
        self._await_ready(count)
        self._supervisor = threading.Thread(target=self._supervise, name="sftp-supervisor",
                                            daemon=True)
        self._supervisor.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._reservation.getsockname()[:2]
        return str(host), int(port)

    @property
    def workers(self) -> int:
        return len(self._processes)

    def _spawn(self, index: int) -> SpawnProcess:
        process = self._context.Process(
            target=worker_main, name=f"blindpost-sftp-{index}",
            args=(self._settings, index, self.address[1], self._table, self._stopping,
                  self._ready))
        process.start()
        return process

    def _await_ready(self, count: int) -> None:
        deadline, started = time.monotonic() + WORKER_START_SECONDS, 0
        while started < count:
            try:
                self._ready.get(timeout=0.5)
                started += 1
            except queue.Empty as exc:  # Check the workers are still alive.
                dead = [p for p in self._processes if p.exitcode is not None]
                if dead or time.monotonic() > deadline:
                    self.stop()
                    self.wait()
                    raise RuntimeError("SFTP worker processes failed to start; "
                                       "see the log above") from exc

    def _supervise(self) -> None:
        while not self._stopping.wait(SUPERVISE_SECONDS):
            for index, process in enumerate(self._processes):
                if process.exitcode is None or self._stopping.is_set():
                    continue
                log.warning("SFTP worker %d exited (code %s); restarting it",
                            index, process.exitcode)
                self._table.reset_row(index)
                self._processes[index] = self._spawn(index)

    def stop(self) -> None:
        self._stopping.set()

    def wait(self) -> None:
        self._stopping.wait()
        deadline = time.monotonic() + STOP_SECONDS
        for process in self._processes:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.exitcode is None:
                log.warning("SFTP worker %s did not stop in time; terminating it", process.name)
                process.terminate()
                process.join()
        self._reservation.close()


def worker_main(settings: Settings, index: int, port: int, table: LimitTable,
                stopping: Any, ready: Any) -> None:
    """Entry point of one worker process."""
    # The parent decides when to stop; Ctrl-C reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=settings.log_level.upper(),
                        format=f"%(levelname)s sftp[{index}] %(name)s: %(message)s")
    app = App(settings)
    sock = bind_listener(settings.sftp_listen, reuse_port=True, port=port)
    listener = Listener(app, sock, host_key=load_host_key(settings.host_key_path),
                        limits=_limits(settings, table, index))
    signal.signal(signal.SIGTERM, lambda _signum, _frame: listener.stop())
    threading.Thread(target=_stop_when_set, args=(stopping, listener), daemon=True).start()
    ready.put(index)
    try:
        listener.serve_forever()
    finally:
        app.close()


def _stop_when_set(stopping: Any, listener: Listener) -> None:
    stopping.wait()
    listener.stop()

