"""Starting and stopping the SFTP server: in this process, or as worker processes.

One Python process is held to about one core by the GIL, so the server runs several
worker processes on one port: each binds its own ``SO_REUSEPORT`` socket and the kernel
spreads connections among them. The parent only holds the port (a bound socket that
never listens, so it receives no connections), restarts a worker that dies, and
coordinates shutdown. Everything that must hold across workers (last TOTP step, failure
counts, lockouts, download counts) is in the database; connection counts are in shared
memory (:class:`~sftp_server.admission.LimitTable`).

Stopping. Each worker has one pipe to the parent (a socket pair): the worker writes
"ready" on it once it listens, and it stops when the parent closes its end — or dies,
which closes it too. Workers ignore SIGTERM and SIGINT, so a signal sent to the whole
process group (``systemctl stop`` with the default ``KillMode=control-group``, a
container runtime, Ctrl-C) and one sent to the parent alone stop the server the same
way, through the parent. Closing a pipe never blocks, whatever state a dead worker left
behind; no stop path waits on a lock or event shared between processes. A stopping
worker drains (see :mod:`sftp_server.listener`): transfers get
``shutdown_drain_seconds`` to finish, the rest are aborted and audited, and the worker
exits. A worker still running :data:`WORKER_EXIT_GRACE_SECONDS` after the drain time is
killed.

A worker that dies is restarted at once (after a growing pause if its replacement
keeps dying young); the kernel then spreads new connections over the workers still
listening. Connections that were queued on the dead worker's socket are reset (clients
retry) unless ``net.ipv4.tcp_migrate_req=1`` (Linux 5.14+) moves them to another worker.

Under systemd (the units in ``deploy/`` follow this): ``KillSignal=SIGTERM`` (the
default), ``KillMode=mixed`` (SIGTERM to the parent only, which stops and waits for the
workers; the SIGKILL that follows a timeout reaches every process left; the default
``control-group`` works too), and ``TimeoutStopSec`` of at least
``shutdown_drain_seconds`` + 15 s (25 s for the default drain of 10 s): the drain, the
grace before a worker is killed, and the shutdown checkpoint.

``blindpost serve`` calls :func:`start` through the ``blindpost.services`` entry point.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnProcess
from typing import Protocol

import paramiko

from gateway.app import App
from gateway.audit import AuditTag
from gateway.config import Settings
from gateway.errors import StartupError
from gateway.housekeeping import Housekeeping
from gateway.logs import configure_logging
from gateway.retention import UPLOAD_GRACE
from sftp_server.admission import Admission, Limits, LimitTable
from sftp_server.counters import NodeCounters, bind
from sftp_server.listener import Listener, bind_listener
from sftp_server.malloc import limit_arenas
from sftp_server.metrics import start_metrics
from sftp_server.transport import load_host_key

log = logging.getLogger(__name__)

WORKER_START_SECONDS = 60.0
# Past the drain time, how long a stopping worker may take to abort what was left open
# and exit before it is killed.
WORKER_EXIT_GRACE_SECONDS = 5.0
# A replacement worker that dies sooner than this after it started is restarted after a
# pause that doubles each time (up to the maximum), so a worker that cannot start does
# not spin.
STABLE_SECONDS = 10.0
MAX_RESTART_PAUSE_SECONDS = 30.0
READY = b"ready"


class Running(Protocol):
    """A started SFTP server."""

    @property
    def address(self) -> tuple[str, int]:
        """The host and port it listens on (the real port when port 0 was asked)."""
        ...

    @property
    def workers(self) -> int: ...

    def stop(self) -> None:
        """Ask the server to stop: stop accepting, drain transfers, abort the rest."""
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
    limit_arenas()
    host_key = load_host_key(settings.host_key_path)
    owned = app is None
    current = app or App(settings)
    current.check_ready(serving=True)
    sweep_partials(current)
    if app is not None or worker_count(settings) == 1:
        return InProcessServer(current, host_key=host_key, owns_app=owned)
    return WorkerPool(current, worker_count(settings))


def sweep_partials(app: App) -> None:
    """Remove partial uploads abandoned by a crash (older than the grace, since other
    workers or nodes may be mid-upload right now)."""
    removed = app.store.sweep_partials(older_than=app.clock() - UPLOAD_GRACE)
    if removed:
        log.info("removed %d partial uploads left by an earlier crash", len(removed))


def _limits(settings: Settings, table: LimitTable, row: int) -> Admission:
    return Admission(table, row=row, limits=Limits.from_settings(settings))


class InProcessServer:
    """The server as threads of the calling process."""

    def __init__(self, app: App, *, host_key: paramiko.PKey, owns_app: bool) -> None:
        self._app = app
        self._owns_app = owns_app
        self.table = LimitTable.create(multiprocessing.get_context("spawn"), 1, os.urandom(16))
        self.counters = NodeCounters(multiprocessing.get_context("spawn"), 1)
        bind(self.counters, 0)
        sock = bind_listener(app.settings.sftp_listen, reuse_port=False)
        self._listener = Listener(app, sock, host_key=host_key,
                                  limits=_limits(app.settings, self.table, 0))
        self._metrics = start_metrics(app, self)
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
        if self._metrics is not None:
            self._metrics.close()
        if self._owns_app:
            self._app.close()


@dataclass
class _Worker:
    """One worker process as the parent sees it."""

    index: int
    process: SpawnProcess
    control: Connection  # the parent's end of the worker's pipe
    started: float
    ready: bool = False
    restarts_in_a_row: int = 0


class WorkerPool:
    """The server as ``count`` worker processes sharing one port, and their supervisor."""

    def __init__(self, app: App, count: int) -> None:
        self._app = app
        self._settings = settings = app.settings
        self._context = multiprocessing.get_context("spawn")
        # Bound (never listening) with SO_REUSEPORT: fixes the port, even port 0, for
        # the workers, and keeps it while a worker is restarted.
        self._reservation = bind_listener(settings.sftp_listen, reuse_port=True)
        self._table = LimitTable.create(self._context, count, os.urandom(16))
        self.counters = NodeCounters(self._context, count)
        self._metrics = start_metrics(app, self)
        # stop() writes here; only the supervisor thread reads it, and it alone touches
        # the workers, so no two threads ever race on a worker's pipe.
        self._stop_read, self._stop_write = os.pipe()
        self._workers = [self._spawn(index) for index in range(count)]
        self._await_ready()
        self._supervisor = threading.Thread(target=self._supervise, name="sftp-supervisor",
                                            daemon=True)
        self._supervisor.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._reservation.getsockname()[:2]
        return str(host), int(port)

    @property
    def workers(self) -> int:
        return len(self._workers)

    @property
    def table(self) -> LimitTable:
        return self._table

    def stop(self) -> None:
        """Ask the supervisor to stop the workers; returns at once, from any thread."""
        # OSError: stopped already (closed), or the byte is there already (full).
        with contextlib.suppress(OSError):
            os.write(self._stop_write, b"x")

    def wait(self) -> None:
        self._supervisor.join()
        self._release()

    def _release(self) -> None:
        os.close(self._stop_read)
        os.close(self._stop_write)
        self._reservation.close()
        if self._metrics is not None:
            self._metrics.close()
        self._app.close()

    def _spawn(self, index: int, *, restarts_in_a_row: int = 0) -> _Worker:
        parent_end, worker_end = self._context.Pipe()
        process = self._context.Process(
            target=worker_main, name=f"blindpost-sftp-{index}",
            args=(self._settings, index, self.address[1], self._table, self.counters,
                  worker_end))
        process.start()
        # The worker holds its end now; keeping a copy here would hide its death.
        worker_end.close()
        return _Worker(index, process, parent_end, time.monotonic(),
                       restarts_in_a_row=restarts_in_a_row)

    def _await_ready(self) -> None:
        deadline = time.monotonic() + WORKER_START_SECONDS
        while not all(worker.ready for worker in self._workers):
            waiting = [w for w in self._workers if not w.ready]
            wait([w.control for w in waiting], timeout=max(0.0, deadline - time.monotonic()))
            for worker in waiting:
                self._note_ready(worker)
            failed = [w for w in waiting if not w.ready and not w.process.is_alive()]
            if failed or time.monotonic() >= deadline:
                self._shutdown()
                self._release()
                raise StartupError("SFTP worker processes failed to start; "
                                   "see the log above")

    def _note_ready(self, worker: _Worker) -> bool:
        """Read the worker's "ready" if it has arrived; return whether it did just now."""
        if worker.ready or not worker.control.poll():
            return False
        try:
            worker.ready = worker.control.recv_bytes() == READY
        except (EOFError, OSError):
            return False  # It died before it was ready; its sentinel reports that.
        return worker.ready

    def _supervise(self) -> None:
        """Replace workers that die until stop() is called; then stop them all."""
        pending: dict[int, float] = {}  # index of a dead worker -> when to restart it
        while True:
            live = [w for w in self._workers if w.index not in pending]
            watched: list[Connection | int] = [self._stop_read, *(w.process.sentinel for w in live),
                                     *(w.control for w in live if not w.ready)]
            timeout = max(0.0, min(pending.values()) - time.monotonic()) if pending else None
            if self._stop_read in wait(watched, timeout=timeout):
                break
            for worker in live:
                self._check(worker, pending)
            for index, when in list(pending.items()):
                if when <= time.monotonic():
                    del pending[index]
                    self._restart(self._workers[index])
        self._shutdown()

    def _check(self, worker: _Worker, pending: dict[int, float]) -> None:
        if self._note_ready(worker) and worker.restarts_in_a_row:
            log.warning("SFTP worker %d is back: ready %.2f s after its restart",
                        worker.index, time.monotonic() - worker.started)
        if worker.process.exitcode is not None:
            pending[worker.index] = self._schedule_restart(worker)

    def _schedule_restart(self, worker: _Worker) -> float:
        """When to restart a worker that exited: now, unless its replacement died young too."""
        worker.control.close()
        self._table.reset_row(worker.index)
        lived = time.monotonic() - worker.started
        if lived >= STABLE_SECONDS:
            worker.restarts_in_a_row = 0
        if worker.restarts_in_a_row == 0:
            return time.monotonic()
        pause = min(MAX_RESTART_PAUSE_SECONDS, 2.0 ** (worker.restarts_in_a_row - 1))
        log.warning("SFTP worker %d died again %.1f s after its restart; restarting it in "
                    "%.0f s", worker.index, lived, pause)
        return time.monotonic() + pause

    def _restart(self, old: _Worker) -> None:
        exitcode = old.process.exitcode
        cause = (f"killed by {signal.Signals(-exitcode).name}" if exitcode and exitcode < 0
                 else f"exit code {exitcode}")
        log.warning("SFTP worker %d (pid %s) ended (%s); restarting it",
                    old.index, old.process.pid, cause)
        new = self._spawn(old.index, restarts_in_a_row=old.restarts_in_a_row + 1)
        self._workers[old.index] = new
        Housekeeping(self._app, component="sftp").record(
            AuditTag.SERVICE_WORKER_RESTART, worker=old.index, old_pid=old.process.pid,
            new_pid=new.process.pid, cause=cause)

    def _shutdown(self) -> None:
        """Close every worker's pipe (they drain and exit); kill any that outlast the grace."""
        for worker in self._workers:
            worker.control.close()
        deadline = (time.monotonic() + self._settings.shutdown_drain_seconds
                    + WORKER_EXIT_GRACE_SECONDS)
        for worker in self._workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.exitcode is None:
                log.warning("SFTP worker %d did not stop in time; killing it", worker.index)
                worker.process.kill()
                worker.process.join()


def worker_main(settings: Settings, index: int, port: int, table: LimitTable,
                counters: NodeCounters, control: Connection) -> None:
    """Entry point of one worker process: serve until the parent closes ``control``."""
    # The parent decides when to stop: a signal to the whole process group reaches it
    # too, and it closes this worker's pipe.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_arenas()  # A spawned process: nothing of the parent's malloc settings carries.
    configure_logging(settings, process=f"sftp[{index}]")
    bind(counters, index)
    app = App(settings)
    sock = bind_listener(settings.sftp_listen, reuse_port=True, port=port)
    listener = Listener(app, sock, host_key=load_host_key(settings.host_key_path),
                        limits=_limits(settings, table, index))
    serving = threading.Thread(target=listener.serve_forever, name="sftp-listener")
    serving.start()
    control.send_bytes(READY)
    with contextlib.suppress(EOFError, OSError):
        control.recv_bytes()  # Returns or raises only when the parent stops or dies.
    listener.stop()
    serving.join()
    app.close()
